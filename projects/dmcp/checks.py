"""Checks of a whole config that run before the runner is built.

Most mistakes in a DMCP config are caught where the part they concern is
built (a target out of reach, a bad ``gamma``, a broken subnet yaml) and name
their key there. What no single part sees is checked here, by the tools,
before any training: data roots that cannot be read, and mmrazor 1.0.0's own
DMCP classes given as class objects rather than by name (the registry can
intercept names, see ``projects/dmcp/registry.py``, but not objects).
"""

import os
import os.path as osp
from typing import Any, Iterator, Tuple

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
