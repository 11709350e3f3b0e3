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
4. Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, and
   mmengine 0.10.7 loads local checkpoints without saying otherwise, so it
   cannot read its own checkpoints back (their message hub pickles
   ``HistoryBuffer`` and numpy arrays): ``load_from``, ``resume`` and
   ``tools/test.py`` fail with ``Weights only load failed``. The shim
   re-registers mmengine's local-file loader with ``weights_only=False``, as
   the upstream fix (open-mmlab/mmengine PR #1650) does. Checkpoints given
   by URL (``load_from=https://...``, ``init_cfg=dict(type='Pretrained',
   checkpoint=https://...)``) go through mmengine's ``load_url``; on this
   stack that is ``torch.hub.load_state_dict_from_url``, which already
   passes ``weights_only=False``, so its shim only acts where the URL loader
   does not (:func:`patch_mmengine_url_loading`).

Each shim checks for the thing it supplies and does nothing where the stack
already has it. :func:`apply_all` runs them all; it is idempotent and is called
by ``projects.dmcp.__init__`` and by ``tools/`` before anything imports mmrazor
or torchvision. None of the shims touches the numerics of the models we train:
they only let modules import.

Separately, :func:`setup_cpu_distributed` (called by ``tools/train.py`` and
``tools/test.py``, not by :func:`apply_all`) lets mmengine 0.10.7's launchers
(``pytorch``, ``slurm``, ``mpi``) run on a machine without CUDA, which they
otherwise cannot: see its docstring.
"""

import argparse
import importlib
import importlib.util
import inspect
import io
import os.path as osp
import pickle
import sys
from typing import Any, Callable, Dict, List

import torch

__all__ = [
    'apply_all',
    'applied_shims',
    'patch_torchvision_ops',
    'patch_fuser_method_names',
    'patch_backend_pattern_config',
    'patch_mmengine_checkpoint_loading',
    'patch_mmengine_url_loading',
    'setup_cpu_distributed',
    'teardown_distributed',
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

    def setter(self: Any, *args: Any, **kwargs: Any) -> Any:
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


def _torch_load_defaults_to_weights_only() -> bool:
    """Whether a bare ``torch.load`` refuses a non-tensor global."""
    buffer = io.BytesIO()
    torch.save(argparse.Namespace(), buffer)
    buffer.seek(0)
    try:
        torch.load(buffer)
    except pickle.UnpicklingError:
        return True
    return False


def _load_from_local(filename: str, map_location: Any = None) -> Any:
    """Load a checkpoint from a local file (mmengine's ``load_from_local``,
    with ``weights_only=False``).

    Args:
        filename: Local checkpoint path (``~`` is expanded).
        map_location: Same as :func:`torch.load`.

    Returns:
        dict or OrderedDict: The loaded checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


# mmengine logs ``Loads checkpoint by <name[10:]> backend``: keep ``local``.
_load_from_local.__name__ = 'load_from_local'


def patch_mmengine_checkpoint_loading() -> bool:
    """Let mmengine load its own local checkpoints on torch >= 2.6.

    Replaces the loader registered for local paths (prefix ``''``) in
    ``mmengine.runner.checkpoint.CheckpointLoader``, and the module's
    ``load_from_local`` that ``load_from_openmmlab`` calls, with one that
    passes ``weights_only=False``. Does nothing when mmengine is missing,
    when ``torch.load`` does not default to weights-only loading (torch < 2.6,
    or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``), or when the registered loader
    already passes ``weights_only``.

    Returns:
        bool: True if the loader was replaced by this call.
    """
    try:
        ckpt = importlib.import_module('mmengine.runner.checkpoint')
    except ImportError:
        return False
    loader = ckpt.CheckpointLoader._schemes.get('')
    try:
        source = inspect.getsource(loader)
    except (OSError, TypeError):
        source = ''
    if 'weights_only' in source or not _torch_load_defaults_to_weights_only():
        return False
    ckpt.CheckpointLoader.register_scheme('', _load_from_local, force=True)
    ckpt.load_from_local = _load_from_local
    _mark('mmengine_checkpoint_loading')
    return True


def _passes_weights_only_false(load_url: Callable) -> bool:
    """Whether a URL loader calls ``torch.load`` with ``weights_only=False``
    by default (``torch.hub.load_state_dict_from_url`` does; mmengine's own
    ``load_url`` for torch < 1.7 has no such argument)."""
    if getattr(load_url, '_dmcp_weights_only_false', False):
        return True
    try:
        param = inspect.signature(load_url).parameters.get('weights_only')
    except (TypeError, ValueError):
        return False
    return param is not None and param.default is False


def _url_loader(original: Callable) -> Callable:
    """``original`` (mmengine's ``load_url``) loading with
    ``weights_only=False``: passed on if it takes the argument, else the
    file is downloaded to the same cache and loaded here."""
    try:
        takes_weights_only = (
            'weights_only' in inspect.signature(original).parameters
        )
    except (TypeError, ValueError):
        takes_weights_only = False

    def load_url(
        url: str,
        model_dir: Any = None,
        map_location: Any = None,
        progress: bool = True,
        check_hash: bool = False,
        file_name: Any = None,
    ) -> Any:
        """Download (once, into ``model_dir``, by default torch hub's
        ``checkpoints`` folder) and load a checkpoint with
        ``weights_only=False``.

        Args:
            url: The checkpoint's URL.
            model_dir: Download folder. Defaults to None (torch hub's).
            map_location: Same as :func:`torch.load`.
            progress: Show a progress bar. Defaults to True.
            check_hash: Check the sha256 prefix in the file name. Defaults
                to False.
            file_name: Name of the downloaded file. Defaults to None (the
                URL's).

        Returns:
            The loaded checkpoint.
        """
        kwargs = dict(
            model_dir=model_dir,
            map_location=map_location,
            progress=progress,
            check_hash=check_hash,
            file_name=file_name,
        )
        if takes_weights_only:
            return original(url, weights_only=False, **kwargs)
        import os
        import re
        from urllib.parse import urlparse

        from torch.hub import download_url_to_file, get_dir

        folder = model_dir or osp.join(get_dir(), 'checkpoints')
        os.makedirs(folder, exist_ok=True)
        name = file_name or osp.basename(urlparse(url).path)
        cached = osp.join(folder, name)
        if not osp.exists(cached):
            sys.stderr.write(f'Downloading: "{url}" to {cached}\n')
            match = re.search(r'-([a-f0-9]*)\.', name) if check_hash else None
            download_url_to_file(
                url,
                cached,
                match.group(1) if match else None,
                progress=progress,
            )
        return torch.load(
            cached, map_location=map_location, weights_only=False
        )

    load_url._dmcp_weights_only_false = True
    return load_url


def patch_mmengine_url_loading() -> bool:
    """Let mmengine load checkpoints from URLs on a torch whose
    ``torch.load`` defaults to weights-only loading.

    mmengine's ``load_from_http`` (behind the ``http://``/``https://``
    schemes, ``torchvision://``, ``open-mmlab://`` and ``mmcls://``) calls
    ``mmengine.runner.checkpoint.load_url``. Where that loader does not
    pass ``weights_only=False`` it is wrapped so that it does: mmengine
    checkpoints hold non-tensor metadata (the message hub's
    ``HistoryBuffer``, numpy arrays, the config text). Does nothing when
    mmengine is missing, when ``torch.load`` does not default to
    weights-only loading, or when the loader already passes
    ``weights_only=False`` by default (``torch.hub.load_state_dict_from_url``
    does on torch 2.x, so on the pinned stack this is a no-op).

    Returns:
        bool: True if the loader was replaced by this call.
    """
    try:
        ckpt = importlib.import_module('mmengine.runner.checkpoint')
    except ImportError:
        return False
    original = getattr(ckpt, 'load_url', None)
    if original is None or _passes_weights_only_false(original):
        return False
    if not _torch_load_defaults_to_weights_only():
        return False
    ckpt.load_url = _url_loader(original)
    _mark('mmengine_url_loading')
    return True


def apply_all() -> List[str]:
    """Apply every shim that this stack needs. Safe to call many times.

    Returns:
        list[str]: The names of all shims applied in this process so far.
    """
    patch_torchvision_ops()
    patch_fuser_method_names()
    patch_backend_pattern_config()
    patch_mmengine_checkpoint_loading()
    patch_mmengine_url_loading()
    return applied_shims()


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
    import torch.distributed as torch_dist
    from mmengine.dist import init_dist, is_distributed
    from mmengine.registry import MODEL_WRAPPERS

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

    if not is_distributed():
        set_device = torch.cuda.set_device
        torch.cuda.set_device = lambda device: None
        try:
            init_dist(cfg.launcher, **dist_cfg)
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
    import torch.distributed as torch_dist

    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    return True
