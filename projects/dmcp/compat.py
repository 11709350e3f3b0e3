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
   ``HistoryBuffer`` and numpy arrays), while checkpoints given by URL go
   through ``torch.hub.load_state_dict_from_url``, which passes
   ``weights_only=False``: a downloaded file could run code. The shims
   re-register mmengine's local-file loader and replace its ``load_url``
   with loaders that use ``weights_only=True`` plus an allowlist of what
   mmengine's checkpoints hold (:func:`checkpoint_safe_globals`); downloads
   are checked against the zoo's sha256 (:func:`download_checkpoint`).
   ``DMCP_UNSAFE_LOAD=1`` loads with ``weights_only=False`` instead and logs
   a warning (:func:`load_checkpoint_file`).

Each shim checks for the thing it supplies and does nothing where the stack
already has it (mmengine has no safe checkpoint loader, so the loading shims
act wherever mmengine is installed). :func:`apply_all` runs them all; it is
idempotent and is called by ``projects.dmcp.__init__`` and by ``tools/``
before anything imports mmrazor or torchvision. None of the shims touches
the numerics of the models we train: they let modules import and
checkpoints load.

The distributed set-up and teardown for a machine without CUDA live in
:mod:`projects.dmcp.dist`.
"""

import hashlib
import importlib
import importlib.util
import logging
import os
import os.path as osp
import pickle
import re
import sys
import warnings
from typing import IO, Any, Callable, Dict, List, Optional, Union
from urllib.parse import urlparse

import torch

__all__ = [
    'apply_all',
    'applied_shims',
    'patch_torchvision_ops',
    'patch_fuser_method_names',
    'patch_backend_pattern_config',
    'patch_mmengine_checkpoint_loading',
    'patch_mmengine_url_loading',
    'load_checkpoint_file',
    'checkpoint_safe_globals',
    'download_checkpoint',
    'expected_sha256',
    'check_sha256',
    'unsafe_load_allowed',
    'CheckpointLoadError',
    'UNSAFE_LOAD_ENV',
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


# ------------------------------------------------------ safe checkpoint load
#: Set this environment variable to ``1`` to load checkpoints with
#: ``weights_only=False`` (full pickle: only for files you trust).
UNSAFE_LOAD_ENV = 'DMCP_UNSAFE_LOAD'
#: torch hub's convention: ``name-<sha256 prefix>.pth`` (8 to 64 hex digits).
_HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,64})\.')


class CheckpointLoadError(ValueError):
    """A checkpoint that is refused or cannot be read; the message is one
    line naming the file (or URL) and the cause."""


def unsafe_load_allowed() -> bool:
    """Whether the user opted in to full-pickle loading
    (``DMCP_UNSAFE_LOAD=1``).

    Returns:
        bool: True if the environment variable is ``1``/``true``/``yes``.
    """
    value = os.environ.get(UNSAFE_LOAD_ENV, '').strip().lower()
    return value in ('1', 'true', 'yes')


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as the weights-only unpickler may call it: only to fetch
    one of ``HistoryBuffer``'s statistics methods (mmengine pickles its
    ``_statistics_methods`` dict that way), nothing else."""
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed = {'min', 'max', 'current', 'mean'}
    allowed.update(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r})'
    )


def checkpoint_safe_globals() -> List[Any]:
    """The classes and functions besides tensors that mmengine's own
    checkpoints hold, allowed when loading with ``weights_only=True``.

    They are the message hub's ``HistoryBuffer`` (with its statistics
    methods, fetched by a ``getattr`` restricted to them) and what numpy
    pickles arrays, scalars and dtypes with. Object and structured dtypes
    are left out.

    Returns:
        list: Entries for :func:`torch.serialization.safe_globals`.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed: List[Any] = [HistoryBuffer, np.ndarray, np.dtype]
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for fn in ('_reconstruct', 'scalar'):
            if hasattr(mod, fn):
                allowed.append((getattr(mod, fn), f'{mod_name}.{fn}'))
    dtypes = getattr(np, 'dtypes', None)
    for name in dir(dtypes) if dtypes is not None else ():
        if name.endswith('DType') and name not in ('ObjectDType', 'VoidDType'):
            allowed.append(getattr(dtypes, name))
    for builtins_name in ('builtins.getattr', '__builtin__.getattr'):
        allowed.append((_history_buffer_getattr, builtins_name))
    return allowed


def _refused_global(error: Exception) -> str:
    """The global a weights-only load refused, from torch's message."""
    text = str(error)
    for pattern in (r'GLOBAL ([\w.]+)', r"but got <class '([\w.]+)'>"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    boilerplate = ('Weights only load failed', 'Please file', 'Check the')
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if not line.startswith(boilerplate):
            return line
    return type(error).__name__


def load_checkpoint_file(
    f: Union[str, 'os.PathLike', IO[bytes]],
    map_location: Any = None,
    name: Optional[str] = None,
) -> Any:
    """Load a checkpoint with ``weights_only=True`` and the allowlist of
    :func:`checkpoint_safe_globals`.

    With ``DMCP_UNSAFE_LOAD=1`` the file is loaded with
    ``weights_only=False`` instead (a warning is logged): a pickle can run
    any code, so do that only for files you trust.

    Args:
        f (str | PathLike | file): The checkpoint.
        map_location: Same as :func:`torch.load`. Defaults to None.
        name (str, optional): What to call the file in errors (a URL).
            Defaults to None (the path).

    Returns:
        The loaded object.

    Raises:
        FileNotFoundError: ``f`` is a path that does not exist.
        CheckpointLoadError: The file needs a class outside the allowlist,
            or is truncated or not a torch checkpoint.
    """
    where = name or (
        os.fspath(f) if isinstance(f, (str, os.PathLike)) else 'checkpoint'
    )
    if isinstance(f, (str, os.PathLike)) and not osp.isfile(f):
        raise FileNotFoundError(f'{where}: no such checkpoint file')
    if unsafe_load_allowed():
        _warn_unsafe(where)
        return torch.load(f, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointLoadError(
            f'{where}: refused: the checkpoint needs '
            f'{_refused_global(e)}, which loading with weights_only=True '
            f'does not allow (a pickle can run code); if you trust the file, '
            f'set {UNSAFE_LOAD_ENV}=1'
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first.split('. ')[0].rstrip('.')
        raise CheckpointLoadError(
            f'{where}: truncated or not a torch checkpoint ({first})'
        ) from None


def _warn_unsafe(where: str) -> None:
    message = (
        f'{UNSAFE_LOAD_ENV}=1: loading {where} with weights_only=False; a '
        'pickled checkpoint can run arbitrary code, load only files you '
        'trust'
    )
    try:
        from mmengine.logging import print_log

        print_log(message, logger='current', level=logging.WARNING)
    except ImportError:  # pragma: no cover  (mmengine is a dependency)
        warnings.warn(message, stacklevel=3)


def _load_from_local(filename: str, map_location: Any = None) -> Any:
    """Load a checkpoint from a local file (mmengine's ``load_from_local``,
    loading with :func:`load_checkpoint_file`).

    Args:
        filename: Local checkpoint path (``~`` is expanded).
        map_location: Same as :func:`torch.load`.

    Returns:
        dict or OrderedDict: The loaded checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    check_sha256(filename, _zoo_sha256(filename), filename)
    return load_checkpoint_file(filename, map_location)


# mmengine logs ``Loads checkpoint by <name[10:]> backend``: keep ``local``.
_load_from_local.__name__ = 'load_from_local'
_load_from_local._dmcp_safe = True


def patch_mmengine_checkpoint_loading() -> bool:
    """Make mmengine load local checkpoints safely.

    mmengine 0.10.7 loads local checkpoints with a bare ``torch.load``: on
    torch >= 2.6 that refuses its own checkpoints (their message hub pickles
    ``HistoryBuffer`` and numpy arrays), and where ``weights_only`` defaults
    to False it runs whatever a pickle holds. This replaces the loader
    registered for local paths (prefix ``''``) in
    ``mmengine.runner.checkpoint.CheckpointLoader``, and the module's
    ``load_from_local`` that ``load_from_openmmlab`` calls, with one that
    loads with ``weights_only=True`` and :func:`checkpoint_safe_globals`
    (:func:`load_checkpoint_file`). Does nothing when mmengine is missing or
    the loader is already this one.

    Returns:
        bool: True if the loader was replaced by this call.
    """
    try:
        ckpt = importlib.import_module('mmengine.runner.checkpoint')
    except ImportError:
        return False
    loader = ckpt.CheckpointLoader._schemes.get('')
    if getattr(loader, '_dmcp_safe', False):
        return False
    ckpt.CheckpointLoader.register_scheme('', _load_from_local, force=True)
    ckpt.load_from_local = _load_from_local
    _mark('mmengine_checkpoint_loading')
    return True


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(url: str) -> Optional[str]:
    """The sha256 a download must have: the model zoo's (``SHA256`` in
    ``configs/pruning/dmcp/metafile.yml`` for an entry whose ``Weights`` is
    ``url``), else the hex prefix in the file name (torch hub's
    ``name-<sha256 prefix>.pth``).

    Args:
        url (str): The checkpoint's URL.

    Returns:
        str | None: The full hash or a prefix of it; None if unknown.
    """
    known = _zoo_sha256(url)
    if known:
        return known
    match = _HASH_IN_NAME.search(osp.basename(urlparse(url).path))
    return match.group(1) if match else None


def _zoo_sha256(weights: str) -> Optional[str]:
    try:
        from .zoo import zoo_sha256
    except ImportError:  # compat.py loaded on its own, outside the package
        return None
    return zoo_sha256(weights)


def check_sha256(path: str, expected: Optional[str], where: str) -> None:
    """Refuse a file whose sha256 does not start with ``expected``.

    Args:
        path (str): The file.
        expected (str, optional): Full hash or prefix; None checks nothing.
        where (str): What to name in the error (the URL).

    Raises:
        CheckpointLoadError: The hash differs.
    """
    if not expected:
        return
    got = _sha256(path)
    if not got.startswith(expected.lower()):
        raise CheckpointLoadError(
            f'{where}: sha256 {got[:16]}... differs from the expected '
            f'{expected[:16]}...; refusing the download (corrupt, or not the '
            'published file)'
        )


def download_checkpoint(
    url: str,
    model_dir: Optional[str] = None,
    progress: bool = True,
    file_name: Optional[str] = None,
) -> str:
    """Download ``url`` once into ``model_dir`` and check its hash
    (:func:`expected_sha256`). A failed download or a wrong hash leaves
    nothing in the cache.

    Args:
        url (str): The checkpoint's URL.
        model_dir (str, optional): Download folder. Defaults to None (torch
            hub's ``checkpoints`` folder).
        progress (bool): Show a progress bar. Defaults to True.
        file_name (str, optional): Name of the downloaded file. Defaults to
            None (the URL's).

    Returns:
        str: The local file.

    Raises:
        CheckpointLoadError: Download failed (e.g. HTTP 404) or the hash
            differs.
    """
    import tempfile
    import urllib.error

    from torch.hub import download_url_to_file, get_dir

    folder = model_dir or osp.join(get_dir(), 'checkpoints')
    name = file_name or osp.basename(urlparse(url).path)
    cached = osp.join(folder, name)
    expected = expected_sha256(url)
    if osp.exists(cached):
        check_sha256(cached, expected, f'{url} (cached as {cached})')
        return cached
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.part-', suffix=name)
    os.close(fd)
    try:
        sys.stderr.write(f'Downloading: "{url}" to {cached}\n')
        try:
            download_url_to_file(url, tmp, None, progress=progress)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, 'reason', None) or e
            code = getattr(e, 'code', None)
            what = f'HTTP {code} {reason}' if code else str(reason)
            raise CheckpointLoadError(
                f'{url}: download failed ({what})'
            ) from None
        check_sha256(tmp, expected, url)
        os.replace(tmp, cached)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return cached


def _safe_load_url(
    url: str,
    model_dir: Any = None,
    map_location: Any = None,
    progress: bool = True,
    check_hash: bool = False,
    file_name: Any = None,
) -> Any:
    """mmengine's ``load_url``, downloading with
    :func:`download_checkpoint` (hash checked) and loading with
    :func:`load_checkpoint_file`.

    Args:
        url: The checkpoint's URL.
        model_dir: Download folder. Defaults to None (torch hub's).
        map_location: Same as :func:`torch.load`. Defaults to None.
        progress: Show a progress bar. Defaults to True.
        check_hash: Accepted for compatibility; the hash is always checked
            where one is known. Defaults to False.
        file_name: Name of the downloaded file. Defaults to None (the
            URL's).

    Returns:
        The loaded checkpoint.
    """
    cached = download_checkpoint(url, model_dir, progress, file_name)
    return load_checkpoint_file(cached, map_location, name=url)


_safe_load_url._dmcp_safe = True


def patch_mmengine_url_loading() -> bool:
    """Make mmengine load checkpoints from URLs safely.

    mmengine's ``load_from_http`` (behind the ``http://``/``https://``
    schemes, ``torchvision://``, ``open-mmlab://`` and ``mmcls://``) calls
    ``mmengine.runner.checkpoint.load_url``; on this stack that is
    ``torch.hub.load_state_dict_from_url``, which loads with
    ``weights_only=False``, so a downloaded file could run code. It is
    replaced by :func:`_safe_load_url`: the download is checked against the
    zoo's sha256 (or the hash in its name) and loaded like a local file
    (:func:`load_checkpoint_file`). Does nothing when mmengine is missing or
    the loader is already this one.

    Returns:
        bool: True if the loader was replaced by this call.
    """
    try:
        ckpt = importlib.import_module('mmengine.runner.checkpoint')
    except ImportError:
        return False
    if getattr(getattr(ckpt, 'load_url', None), '_dmcp_safe', False):
        return False
    ckpt.load_url = _safe_load_url
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
