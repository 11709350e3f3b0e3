"""Tests of :mod:`projects.dmcp.dist`: the distributed set-up and teardown
on a machine without CUDA."""

from pathlib import Path
from typing import Any, List

import pytest
import torch

from projects.dmcp import dist


@pytest.fixture
def init_calls(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """Record ``init_dist`` calls instead of starting a process group."""
    import mmengine.dist

    calls: List[Any] = []

    def fake_init_dist(launcher: str, **kwargs: Any) -> None:
        torch.cuda.set_device(0)  # raises on CPU torch unless neutralised
        calls.append((launcher, kwargs))

    monkeypatch.setattr(mmengine.dist, 'init_dist', fake_init_dist)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    return calls


def test_setup_cpu_distributed(init_calls: List[Any]) -> None:
    from mmengine.config import Config

    set_device = torch.cuda.set_device
    cfg = Config(
        dict(
            launcher='pytorch',
            default_scope='mmpretrain',
            env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=60)),
        )
    )
    assert dist.setup_cpu_distributed(cfg) is True
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo', timeout=60)
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=False,
        device_ids=[],
    )
    assert init_calls == [('pytorch', dict(backend='gloo', timeout=60))]
    assert torch.cuda.set_device is set_device  # restored


def test_setup_cpu_distributed_keeps_working_settings(
    init_calls: List[Any],
) -> None:
    from mmengine.config import Config
    from mmengine.registry import MODEL_WRAPPERS

    @MODEL_WRAPPERS.register_module(name='_TestPlainWrapper', force=True)
    class PlainWrapper(torch.nn.Module):
        """A wrapper that is not a DistributedDataParallel."""

    cfg = Config(
        dict(
            launcher='slurm',
            env_cfg=dict(dist_cfg=dict(backend='gloo')),
            model_wrapper_cfg=dict(type='_TestPlainWrapper'),
        )
    )
    assert dist.setup_cpu_distributed(cfg) is True
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo')
    assert cfg.model_wrapper_cfg == dict(type='_TestPlainWrapper')
    assert init_calls == [('slurm', dict(backend='gloo'))]


def test_setup_cpu_distributed_noop(
    init_calls: List[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmengine.config import Config

    cfg = Config(dict(launcher='none'))
    assert dist.setup_cpu_distributed(cfg) is False
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(launcher='pytorch'))
    assert dist.setup_cpu_distributed(cfg) is False
    assert cfg.to_dict() == dict(launcher='pytorch')
    assert init_calls == []


def test_teardown_distributed(tmp_path: Path) -> None:
    """A single-rank gloo group is destroyed; without one it is a no-op."""
    import torch.distributed as torch_dist

    assert dist.teardown_distributed() is False
    torch_dist.init_process_group(
        'gloo',
        init_method=f'file://{tmp_path / "store"}',
        rank=0,
        world_size=1,
    )
    try:
        assert torch_dist.is_initialized()
        assert dist.teardown_distributed() is True
        assert not torch_dist.is_initialized()
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
