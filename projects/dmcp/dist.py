"""Distributed set-up and teardown for a machine without CUDA.

:func:`setup_cpu_distributed` (called by ``tools/train.py`` and
``tools/test.py`` before the runner is built) lets mmengine 0.10.7's launchers
(``pytorch``, ``slurm``, ``mpi``) run on a machine without CUDA, which they
otherwise cannot; :func:`teardown_distributed` destroys the process group
after the run (see their docstrings).
"""

from typing import Any

import torch
import torch.distributed as torch_dist
from mmengine import dist as mm_dist
from mmengine.registry import MODEL_WRAPPERS

__all__ = ['setup_cpu_distributed', 'teardown_distributed']


def setup_cpu_distributed(cfg: Any) -> bool:
    """Prepare a distributed run for a machine without CUDA and start it.

    mmengine 0.10.7 assumes CUDA once ``launcher != 'none'``: the configs
    default to ``dist_cfg=dict(backend='nccl')``, ``init_dist`` calls
    ``torch.cuda.set_device`` (an ``AttributeError`` on a CPU-only torch) and
    the runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, which
    DDP rejects for a CPU module. When CUDA is unavailable this function

    1. sets ``cfg.env_cfg.dist_cfg.backend`` to ``'gloo'`` unless it already
       names a backend that works on CPU (``gloo``, or ``mpi`` when torch has
       it); other ``dist_cfg`` keys such as ``timeout`` are kept;
    2. sets ``device_ids=[]`` (DDP's "CPU module" value) in
       ``cfg.model_wrapper_cfg``, first writing the runner's default
       ``MMDistributedDataParallel`` config there if it is unset, provided the
       wrapper is a ``DistributedDataParallel`` (``[]`` and not ``None``,
       because mmrazor's ``DMCPDDP`` turns ``None`` into ``[LOCAL_RANK]``);
    3. initialises the process group with mmengine's ``init_dist`` while
       ``torch.cuda.set_device`` is a no-op, so that the runner finds it
       initialised and does not call ``init_dist`` again.

    Args:
        cfg: The mmengine ``Config`` about to be given to the runner; its
            ``launcher`` key says how processes were launched.

    Returns:
        bool: True if the config was changed and the process group started,
        False if there was nothing to do (no launcher, or CUDA available).
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return False
    cpu_backends = ['gloo'] + (
        ['mpi'] if torch_dist.is_mpi_available() else []
    )
    env_cfg = cfg.get('env_cfg') or {}
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    if dist_cfg.get('backend') not in cpu_backends:
        dist_cfg['backend'] = 'gloo'
    cfg.env_cfg = dict(env_cfg, dist_cfg=dist_cfg)

    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False),
    )
    scope = wrapper.get('_scope_', cfg.get('default_scope'))
    with MODEL_WRAPPERS.switch_scope_and_registry(scope) as registry:
        wrapper_cls = registry.get(
            wrapper.get('type', 'MMDistributedDataParallel')
        )
    if isinstance(wrapper_cls, type) and issubclass(
        wrapper_cls, torch.nn.parallel.DistributedDataParallel
    ):
        wrapper['device_ids'] = []
        cfg.model_wrapper_cfg = wrapper

    if not mm_dist.is_distributed():
        set_device = torch.cuda.set_device
        torch.cuda.set_device = lambda device: None
        try:
            mm_dist.init_dist(cfg.launcher, **dist_cfg)
        finally:
            torch.cuda.set_device = set_device
    return True


def teardown_distributed() -> bool:
    """Wait for every rank, then destroy the default process group.

    torch 2.x no longer tears the gloo process group down cleanly at
    interpreter exit: a rank that leaves first while the group is alive can
    abort with ``terminate called without an active exception`` (SIGABRT),
    and ``torchrun`` then reports the whole job as failed although training
    finished. mmengine 0.10.7 never destroys the group, so the tools call this
    after ``runner.train()`` / ``runner.test()``.

    Returns:
        bool: True if a process group was destroyed, False if none was
        initialised.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    return True
