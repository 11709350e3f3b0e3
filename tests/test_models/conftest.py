"""Fixtures shared by the tests of ``projects.dmcp.models``."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # plain `pytest` without `python -m`
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402

import projects.dmcp  # noqa: E402,F401  (compat shims + registration first)


@pytest.fixture(scope='module')
def torch_single_thread():
    """One intra-op thread for the module: the models are small, and on a
    2-core machine shared with other jobs, OpenMP thread oversubscription
    slows these tests down by an order of magnitude."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def seeded():
    """A fixed global seed for each test (inputs drawn with torch.randn)."""
    torch.manual_seed(0)
