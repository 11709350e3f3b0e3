"""Reliability: a search killed with SIGKILL resumes to the same result as an
uninterrupted one; broken numbers stop the run without writing a subnet;
checkpoints and yamls are written atomically."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmengine.runner import Runner

import projects.dmcp  # noqa: F401
from projects.dmcp.fileio import atomic_write
from projects.dmcp.utils import unwrap
from tests.helpers import load_weights_only
from tests.helpers.search import (
    REPO_ROOT,
    RESNET18_SUPERNET,
    make_tiny_imagenet,
    run_tool,
    tiny_config,
    tiny_search_options,
)

EPOCHS = 6


def _state(path):
    state = load_weights_only(path)
    return {k: v for k, v in state['state_dict'].items()}


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    data = make_tiny_imagenet(tmp_path / 'data')
    opts = tiny_search_options(data, max_epochs=EPOCHS, warmup_epochs=2)
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    train = ['python', 'tools/train.py', str(RESNET18_SUPERNET)]
    run_tool(train + ['--work-dir', str(straight), '--cfg-options', *opts])

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(
        [sys.executable]
        + train[1:]
        + ['--work-dir', str(killed), '--cfg-options', *opts],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / 'epoch_2.pth').exists():
        assert proc.poll() is None, 'the run ended before it could be killed'
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / f'epoch_{EPOCHS}.pth').exists(), 'killed too late'
    assert not (killed / 'DMCP_SUBNET_IMAGENET.yaml').exists()
    # whatever the kill interrupted, no half-written file is left in place
    for ckpt in killed.glob('epoch_*.pth'):
        _state(ckpt)

    run_tool(
        train + ['--work-dir', str(killed), '--resume', '--cfg-options', *opts]
    )
    a = _state(straight / f'epoch_{EPOCHS}.pth')
    b = _state(killed / f'epoch_{EPOCHS}.pth')
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (straight / 'DMCP_SUBNET_IMAGENET.yaml').read_text() == (
        killed / 'DMCP_SUBNET_IMAGENET.yaml'
    ).read_text()


class BreakAlpha(Hook):
    """Puts a NaN into alpha before the given iteration."""

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at_iter:
            with torch.no_grad():
                unwrap(runner.model).mutator.units[3].alpha[0] = float('nan')


@pytest.mark.slow
def test_nan_alpha_stops_the_run_without_a_subnet(tmp_path):
    cfg = tiny_config(
        make_tiny_imagenet(tmp_path / 'data'), max_epochs=3, warmup_epochs=1
    )
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.register_hook(BreakAlpha(at_iter=4), priority='HIGHEST')
    with pytest.raises(
        FloatingPointError,
        match=r'iteration 5 \(epoch 2\): alpha is not finite',
    ):
        runner.train()
    assert not (tmp_path / 'work' / 'DMCP_SUBNET_IMAGENET.yaml').exists()
    assert not (tmp_path / 'work' / 'direct_sampling').exists()


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / 'f.bin'
    atomic_write(path, b'old')

    with pytest.raises(TypeError):
        atomic_write(path, object())  # fails while writing
    assert path.read_bytes() == b'old'
    assert [p.name for p in tmp_path.iterdir()] == ['f.bin']  # no temp left


def test_mmengine_local_backend_writes_atomically(tmp_path):
    backend = LocalBackend()
    path = tmp_path / 'ckpt.pth'
    backend.put(b'first', path)
    backend.put(b'second', path)
    backend.put_text('text', tmp_path / 'last_checkpoint')
    assert path.read_bytes() == b'second'
    assert (tmp_path / 'last_checkpoint').read_text() == 'text'
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        'ckpt.pth',
        'last_checkpoint',
    ]
    assert LocalBackend.put.__module__ == 'projects.dmcp.fileio'
