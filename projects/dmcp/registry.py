"""The registries DMCP registers into: mmrazor's, populated first.

mmrazor 1.0.0 registers classes of its own under ``DMCP``,
``DMCPChannelMutator``, ``DMCPChannelUnit`` and ``DMCPDDP``. Importing this
module applies the compatibility shims, imports mmrazor's models and engine (so
that mmrazor's registrations have happened), and only then lets our modules
register with ``force=True``. Since Python imports each module once, a later
``import mmrazor.models`` cannot register mmrazor's classes again: whatever the
import order, the names build *our* classes.
"""

from . import compat

compat.apply_all()

import mmrazor.engine  # noqa: E402,F401  (registers mmrazor's hooks/loops)
import mmrazor.models  # noqa: E402,F401  (registers mmrazor's models)
from mmrazor.registry import (  # noqa: E402
    HOOKS,
    LOOPS,
    MODEL_WRAPPERS,
    MODELS,
    TASK_UTILS,
)

__all__ = [
    'HOOKS',
    'LOOPS',
    'MODELS',
    'MODEL_WRAPPERS',
    'TASK_UTILS',
    'build_model',
]


def build_model(cfg: dict):
    """Build a DMCP model part from its config in mmrazor's registry.

    Bare type names resolve in mmrazor's scope whatever the config's
    ``default_scope`` (OpenMMLab configs inherited from mmpretrain keep
    ``default_scope='mmpretrain'``).

    Args:
        cfg (dict): Config with a ``type``.

    Returns:
        The built object.
    """
    cfg = dict(cfg)
    cfg.setdefault('_scope_', 'mmrazor')
    return MODELS.build(cfg)
