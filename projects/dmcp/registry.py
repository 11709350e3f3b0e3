"""The registries DMCP registers into: mmrazor's, populated first.

mmrazor 1.0.0 registers classes of its own under ``DMCP``,
``DMCPChannelMutator``, ``DMCPChannelUnit`` and ``DMCPDDP``. Importing this
module (after ``projects.dmcp`` applied the compatibility shims) imports
mmrazor's models and engine (so that mmrazor's registrations have happened),
and only then lets our modules register with ``force=True``. Since Python
imports each module once, a later ``import mmrazor.models`` cannot register
mmrazor's classes again: whatever the import order, the names build *our*
classes.
"""

import mmrazor.engine  # noqa: F401  (registers mmrazor's hooks/loops)
import mmrazor.models  # noqa: F401  (registers mmrazor's models)
from mmrazor.registry import (
    HOOKS,
    LOOPS,
    MODEL_WRAPPERS,
    MODELS,
    TASK_UTILS,
)

from .utils import with_scope

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
    return MODELS.build(with_scope(cfg, 'mmrazor'))


# mmrazor 1.0.0's DMCP parts that projects.dmcp has no class of its own for.
# A config naming them would silently build mmrazor's withdrawn DMCP code, so
# their registry entries are replaced by guards that fail with what to use.
WITHDRAWN = {
    'DMCPSubnetHook': (
        HOOKS,
        'DMCPFlopsEstimatorHook (it logs the FLOPs '
        'and writes DMCP_SUBNET_IMAGENET.yaml)',
    ),
    'DMCPBatchNorm2d': (
        MODELS,
        'nothing: DMCPChannelMutator applies the '
        'Markov scaling after every batch norm itself',
    ),
    'DMCPBatchNorm2dCounter': (
        TASK_UTILS,
        'nothing: the expected FLOPs '
        'come from DMCPChannelMutator.expected_flops',
    ),
}


class MmrazorDMCPNameError(KeyError):
    """A config named a part of mmrazor 1.0.0's own DMCP."""

    def __str__(self) -> str:
        return str(self.args[0])


def _guard(name: str, instead: str):

    def withdrawn(*args, **kwargs):
        raise MmrazorDMCPNameError(
            f"type='{name}' names a part of mmrazor 1.0.0's own DMCP, whose "
            f'results its authors withdrew; projects.dmcp does not build it. '
            f'Use {instead}.'
        )

    withdrawn.__name__ = name
    return withdrawn


for _name, (_registry, _instead) in WITHDRAWN.items():
    _registry.register_module(
        name=_name, module=_guard(_name, _instead), force=True
    )
