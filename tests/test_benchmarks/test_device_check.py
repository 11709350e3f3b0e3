"""benchmarks/device_check.py: one line without CUDA, the whole flow on the
CPU with ``--cpu``."""

import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

SCRIPT = str(REPO_ROOT / 'benchmarks' / 'device_check.py')


def test_without_cuda_it_says_so_in_one_line():
    run = subprocess.run(
        [sys.executable, SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and 'no CUDA device' in lines[0]


@pytest.mark.slow
def test_cpu_flow_searches_exports_and_retrains(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            SCRIPT,
            '--cpu',
            '--configs',
            'resnet18',
            '--batch',
            '2',
            '--iters',
            '2',
            '--work-dir',
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = [r for r in run.stdout.splitlines() if r.startswith('| resnet18')]
    search = next(r for r in rows if '| search |' in r).split('|')
    assert float(search[3]) > 0  # seconds per iteration
    assert float(search[5]) > 0  # E[FLOPs] was logged
    assert 'target 1040.0' in search[6]
    assert (
        tmp_path / 'resnet18' / 'search' / 'DMCP_SUBNET_IMAGENET.yaml'
    ).is_file()
    assert any('| subnet |' in r for r in rows)
