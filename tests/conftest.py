"""Fixtures shared by the whole test suite."""

from pathlib import Path

import pytest

from tests.helpers import make_tiny_imagefolder


@pytest.fixture(scope='session')
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image folder (3 classes, 4 train and 2 val 32x32 PNGs each).

    Args:
        tmp_path_factory: pytest's session-scoped temporary directory factory.

    Returns:
        Path: The ``data_root`` holding ``train/`` and ``val/``.
    """
    return make_tiny_imagefolder(tmp_path_factory.mktemp('tiny_imagefolder'))


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    """Drop the mmengine default scopes a test created (a Runner sets one),
    so that registry look-ups in later tests do not depend on test order."""
    from mmengine.registry import DefaultScope

    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        del DefaultScope._instance_dict[name]
