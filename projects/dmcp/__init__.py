"""DMCP: Differentiable Markov Channel Pruning (Guo et al., CVPR 2020) as an
OpenMMLab plugin.

Importing this package applies the torch 2.x compatibility shims
(:mod:`projects.dmcp.compat`) before anything touches mmrazor or torchvision,
then registers DMCP's classes into mmrazor's registries, replacing mmrazor
1.0.0's own ``DMCP*`` classes. Configs load it with::

    custom_imports = dict(imports=['projects.dmcp'],
                          allow_failed_imports=False)
"""

from . import compat  # noqa: I001  (must run first)

compat.apply_all()

from . import engine, models  # noqa: E402,F401  (registers the classes)
from .fileio import install_atomic_local_backend  # noqa: E402
from .registry import HOOKS, LOOPS, MODEL_WRAPPERS, MODELS  # noqa: E402
from .version import __version__  # noqa: E402

install_atomic_local_backend()

__all__ = [
    'HOOKS',
    'LOOPS',
    'MODELS',
    'MODEL_WRAPPERS',
    '__version__',
    'compat',
]
