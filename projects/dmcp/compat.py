"""Compatibility shims that let mmrazor 1.0.0 and PyPI's torchvision import on
torch 2.x.

mmrazor 1.0.0 was written for torch 1.13 and torchvision wheels normally come
with compiled ops that match their torch build. On the pinned stack
(``torch==2.13.0`` CPU, ``torchvision==0.28.0`` from PyPI) three things break:

1. torchvision's compiled ops cannot be loaded next to a CPU-only torch, so
   ``torchvision._meta_registrations`` fails with ``operator torchvision::nms
   does not exist``. Defining the ``torchvision::nms`` and
   ``torchvision::qnms`` schemas first lets torchvision import (image
   classification needs neither op).
2. torch renamed ``reverse2``, ``reverse3`` and ``reverse_sequential_wrapper2``
   in ``torch.ao.quantization.fuser_method_mappings`` (they gained a leading
   underscore; the wrapper is now ``_sequential_wrapper2``) and mmrazor imports
   the old names.
3. ``BackendPatternConfig`` lost the private setters
   ``_set_overwrite_output_fake_quantize``, ``_set_overwrite_output_observer``
   and ``_set_input_output_observed`` that mmrazor's quantization configs call
   at import time, and ``torch.ao.quantization.backend_config.utils`` must be
   imported explicitly.

Each shim checks for the thing it supplies and does nothing where the stack
already has it. :func:`apply_all` runs them all; it is idempotent and is called
by ``projects.dmcp.__init__`` and by ``tools/`` before anything imports mmrazor
or torchvision. None of the shims touches the numerics of the models we train:
they only let modules import.
"""

import importlib
import importlib.util
import sys
from typing import Callable, Dict, List

import torch

__all__ = [
    'apply_all',
    'applied_shims',
    'patch_torchvision_ops',
    'patch_fuser_method_names',
    'patch_backend_pattern_config',
]

# Names of the shims that acted in this process (in the order they acted).
_APPLIED: List[str] = []
# Keeps the torch.library fragment alive: dropping it would remove the schemas.
_TORCHVISION_FRAGMENT: Dict[str, torch.library.Library] = {}

_TORCHVISION_SCHEMAS = {
    'nms': 'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor',
    'qnms': 'qnms(Tensor qdets, Tensor qscores, float iou_threshold) '
    '-> Tensor',
}


def applied_shims() -> List[str]:
    """Return the names of the shims that acted in this process.

    Returns:
        list[str]: A copy of the names, in the order the shims acted.
    """
    return list(_APPLIED)


def _mark(name: str) -> None:
    if name not in _APPLIED:
        _APPLIED.append(name)


def _torchvision_op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_has_kernel_for_dispatch_key(
            f'torchvision::{name}', 'Meta'
        )
    except RuntimeError:
        return False
    return True


def _torchvision_ops_loadable() -> bool:
    """Whether torchvision's compiled ops library loads beside this torch."""
    try:
        spec = importlib.util.find_spec('torchvision')
    except (ImportError, ValueError):
        return True  # no torchvision: nothing to patch
    if spec is None or not spec.submodule_search_locations:
        return True
    import glob
    import os

    for folder in spec.submodule_search_locations:
        for lib in glob.glob(os.path.join(folder, '_C*.so')):
            try:
                torch.ops.load_library(lib)
            except (OSError, RuntimeError):
                return False
            return True
    return False


def patch_torchvision_ops() -> bool:
    """Define the ``torchvision::nms``/``qnms`` schemas when torchvision's
    compiled ops cannot be loaded, so that ``import torchvision`` succeeds.

    Returns:
        bool: True if the schemas were defined by this call.
    """
    if 'torchvision' in sys.modules:
        return False  # already imported (successfully): nothing to do
    if importlib.util.find_spec('torchvision') is None:
        return False  # not installed: nothing to patch
    if all(_torchvision_op_exists(n) for n in _TORCHVISION_SCHEMAS):
        return False
    if _torchvision_ops_loadable() and all(
        _torchvision_op_exists(n) for n in _TORCHVISION_SCHEMAS
    ):
        return False
    lib = torch.library.Library('torchvision', 'FRAGMENT')
    for name, schema in _TORCHVISION_SCHEMAS.items():
        if not _torchvision_op_exists(name):
            lib.define(schema)
    _TORCHVISION_FRAGMENT['torchvision'] = lib
    _mark('torchvision_ops')
    return True


def patch_fuser_method_names() -> bool:
    """Restore the public names mmrazor imports from
    ``torch.ao.quantization.fuser_method_mappings``.

    Returns:
        bool: True if any alias was added by this call.
    """
    try:
        fmm = importlib.import_module(
            'torch.ao.quantization.fuser_method_mappings'
        )
    except ImportError:
        return False
    aliases = {
        'reverse2': '_reverse2',
        'reverse3': '_reverse3',
        'reverse_sequential_wrapper2': '_sequential_wrapper2',
    }
    added = False
    for old, new in aliases.items():
        if not hasattr(fmm, old) and hasattr(fmm, new):
            setattr(fmm, old, getattr(fmm, new))
            added = True
    if added:
        _mark('fuser_method_names')
    return added


def _chainable_noop(name: str) -> Callable:

    def setter(self, *args, **kwargs):
        return self

    setter.__name__ = name
    setter.__doc__ = (
        f'Added by projects.dmcp.compat: ``{name}`` was removed '
        'from torch; mmrazor only chains it while building '
        'quantization configs, which DMCP does not use.'
    )
    return setter


def patch_backend_pattern_config() -> bool:
    """Give ``BackendPatternConfig`` the private setters mmrazor 1.0.0 calls,
    and import ``torch.ao.quantization.backend_config.utils``.

    Returns:
        bool: True if any setter was added by this call.
    """
    try:
        bc = importlib.import_module('torch.ao.quantization.backend_config')
        importlib.import_module('torch.ao.quantization.backend_config.utils')
    except ImportError:
        return False
    cls = bc.BackendPatternConfig
    added = False
    for name in (
        '_set_overwrite_output_fake_quantize',
        '_set_overwrite_output_observer',
        '_set_input_output_observed',
    ):
        if not hasattr(cls, name):
            setattr(cls, name, _chainable_noop(name))
            added = True
    if added:
        _mark('backend_pattern_config')
    return added


def apply_all() -> List[str]:
    """Apply every shim that this stack needs. Safe to call many times.

    Returns:
        list[str]: The names of all shims applied in this process so far.
    """
    patch_torchvision_ops()
    patch_fuser_method_names()
    patch_backend_pattern_config()
    return applied_shims()
