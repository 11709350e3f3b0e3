"""Checks of a whole config that run before the runner is built.

Most mistakes in a DMCP config are caught where the part they concern is
built (a target out of reach, a bad ``gamma``, a broken subnet yaml) and name
their key there. What no single part sees is checked here, by the tools,
before any training: data roots that cannot be read, and mmrazor 1.0.0's own
DMCP classes given as class objects rather than by name (the registry can
intercept names, see ``projects/dmcp/registry.py``, but not objects), devices
that do not exist, and budget settings that cannot converge.
"""

import os
import os.path as osp
from typing import Any, Iterator, Mapping, Optional, Tuple

import torch

from .models.losses import check_budget_mode
from .utils import is_number

__all__ = ['ConfigError', 'check_config']

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


class ConfigError(ValueError):
    """A config that cannot work, with the key to fix in its message."""


def check_config(cfg: Any) -> None:
    """Fail with a one-line :class:`ConfigError` naming the key on configs
    that cannot work.

    Args:
        cfg (Config | dict): The merged config.
    """
    if hasattr(cfg, 'to_dict'):
        cfg = cfg.to_dict()
    check_data_roots(cfg)
    check_no_mmrazor_dmcp(cfg)
    check_devices(cfg)
    check_budget(cfg)


def check_devices(cfg: Any, environ: Optional[Mapping] = None) -> None:
    """Every device the config or the environment names must exist here:
    ``CUDA_VISIBLE_DEVICES`` (CUDA silently hides what it cannot find, and
    the run would fall back to the CPU), ``LOCAL_RANK`` of a launcher, and
    any config key ``device`` or ``device_ids``.

    Args:
        cfg (Config | dict): The config.
        environ (Mapping, optional): The environment. Defaults to None
            (``os.environ``).
    """
    environ = os.environ if environ is None else environ
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = environ.get('CUDA_VISIBLE_DEVICES', '').strip()
    if visible and visible != '-1':
        listed = [d for d in visible.split(',') if d.strip()]
        if count < len(listed):
            raise ConfigError(
                f'CUDA_VISIBLE_DEVICES={visible} names {len(listed)} '
                f'device(s), but torch sees {count} CUDA device(s) here; '
                'fix or unset it'
            )
    rank = environ.get('LOCAL_RANK')
    if count and rank and rank.isdigit() and int(rank) >= count:
        raise ConfigError(
            f'LOCAL_RANK={rank} has no GPU: this machine has {count} CUDA '
            'device(s); launch at most that many processes per node'
        )
    for key, value in _walk(cfg):
        name = key.split('.')[-1]
        if name == 'device' and isinstance(value, str):
            _check_device(key, value, count)
        elif name == 'device_ids' and isinstance(value, (list, tuple)):
            for d in value:
                _check_device(
                    key, f'cuda:{d}' if isinstance(d, int) else d, count
                )


def _check_device(key: str, value: str, count: int) -> None:
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f'{key}={value!r} is not a device: {e}') from e
    if device.type == 'cpu':
        return
    if device.type != 'cuda':
        raise ConfigError(
            f'{key}={value!r}: DMCP runs on cuda or cpu, not {device.type}'
        )
    if count == 0 or (device.index or 0) >= count:
        raise ConfigError(
            f'{key}={value!r} does not exist: torch sees {count} CUDA '
            'device(s) here'
        )


def check_budget(cfg: Any) -> None:
    """The budget of a search must be able to converge: a known
    ``model.budget_mode``, and gradient clipping of every optimizer wrapper
    with a positive ``max_norm``.

    Args:
        cfg (Config | dict): The config.
    """
    model = cfg.get('model') or {}
    mode = model.get('budget_mode') if isinstance(model, dict) else None
    if mode is not None:
        try:
            check_budget_mode(mode)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    wrappers = cfg.get('optim_wrapper') or {}
    for name, wrapper in list(wrappers.items()) + [('', wrappers)]:
        if not isinstance(wrapper, dict):
            continue
        clip = wrapper.get('clip_grad')
        if not isinstance(clip, dict) or 'max_norm' not in clip:
            continue
        value = clip['max_norm']
        key = 'optim_wrapper.' + (f'{name}.' if name else '')
        if not (is_number(value) and value > 0):
            raise ConfigError(
                f'{key}clip_grad.max_norm={value!r} must be a finite number '
                '> 0 (the length gradients are clipped to)'
            )


def check_data_roots(cfg: Any) -> None:
    """Every dataloader's ``dataset.data_root`` must be a readable folder.

    Args:
        cfg (Config | dict): The config.
    """
    for loader in LOADERS:
        dataset = (cfg.get(loader) or {}).get('dataset') or {}
        root = dataset.get('data_root') if isinstance(dataset, dict) else None
        if not root or '://' in str(root):
            continue
        key = f'{loader}.dataset.data_root'
        if not osp.isdir(root):
            raise ConfigError(
                f'{key}={root!r} is not a folder (cwd: '
                f'{os.getcwd()}); point it at the dataset'
            )
        if not os.access(root, os.R_OK | os.X_OK):
            raise ConfigError(f'{key}={root!r} cannot be read')


def check_no_mmrazor_dmcp(cfg: Any) -> None:
    """No ``type`` may be a class or function of mmrazor's own DMCP.

    Args:
        cfg (Config | dict): The config.
    """
    for key, value in _walk(cfg):
        if key.split('.')[-1] != 'type' or isinstance(value, str):
            continue
        module = getattr(value, '__module__', '') or ''
        if module.startswith('mmrazor.') and 'dmcp' in module.lower():
            raise ConfigError(
                f'{key}={module}.{getattr(value, "__name__", value)} is '
                "mmrazor 1.0.0's own DMCP, whose results its authors "
                "withdrew; name projects.dmcp's class by string instead "
                "(e.g. type='mmrazor.DMCP')"
            )


def _walk(node: Any, prefix: str = '') -> Iterator[Tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            key = f'{prefix}.{k}' if prefix else str(k)
            yield key, v
            yield from _walk(v, key)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f'{prefix}.{i}')
