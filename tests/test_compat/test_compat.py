"""Tests of :mod:`projects.dmcp.compat`: every shim acts where the stack lacks
what it supplies and is a no-op otherwise.

The torchvision shim can only be observed in a fresh interpreter (a failed
``import torchvision`` leaves half its ops registered), so those checks run
in subprocesses; the others remove the thing in this process with
``monkeypatch`` (which puts it back afterwards) and call the shim.
"""

import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import torch

from projects.dmcp import compat
from tests.utils import REPO_ROOT

COMPAT_PY = REPO_ROOT / 'projects' / 'dmcp' / 'compat.py'
SETTERS = (
    '_set_overwrite_output_fake_quantize',
    '_set_overwrite_output_observer',
    '_set_input_output_observed',
)

# Loads compat.py on its own, so that only the shims run (not the package's
# registrations, which import mmrazor and hence torchvision).
_LOAD_COMPAT = f"""
import importlib.util
spec = importlib.util.spec_from_file_location(
    'dmcp_compat', {str(COMPAT_PY)!r})
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
"""


def _python(code: str) -> Dict[str, Any]:
    """Run ``code`` in a fresh interpreter; return the JSON it prints last."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run(
        [sys.executable, '-c', code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """A fresh record of applied shims for this test."""
    record: List[str] = []
    monkeypatch.setattr(compat, '_APPLIED', record)
    return record


# ---------------------------------------------------------------- torchvision
@pytest.fixture(scope='module')
def baseline() -> Dict[str, Any]:
    """What this stack lacks, seen from an interpreter without the shims."""
    return _python(
        """
import json
import torch
import torch.ao.quantization.fuser_method_mappings as fmm
from torch.ao.quantization.backend_config import BackendPatternConfig
out = dict(
    has_reverse2=hasattr(fmm, 'reverse2'),
    has_setters=all(hasattr(BackendPatternConfig, n) for n in SETTERS),
)
try:
    import torchvision
    out['torchvision_error'] = None
except Exception as e:
    out['torchvision_error'] = f'{type(e).__name__}: {e}'
print(json.dumps(out))
""".replace('SETTERS', repr(SETTERS))
    )


def test_apply_all_in_fresh_interpreter(baseline: Dict[str, Any]) -> None:
    shimmed = _python(
        _LOAD_COMPAT
        + """
import json
applied = compat.apply_all()
import torchvision
import torch.ao.quantization.fuser_method_mappings as fmm
print(json.dumps(dict(
    applied=applied,
    torchvision=torchvision.__version__,
    patch_again=compat.patch_torchvision_ops(),
    applied_again=compat.apply_all(),
    alias=fmm.reverse2 is fmm._reverse2,
)))
"""
    )
    applied = shimmed['applied']
    # torchvision: needed (and applied) exactly when a bare import fails.
    needs_tv = baseline['torchvision_error'] is not None
    if needs_tv:
        assert (
            'torchvision::nms does not exist' in baseline['torchvision_error']
        )
    assert ('torchvision_ops' in applied) == needs_tv
    assert shimmed['torchvision']  # imports with the shim
    assert shimmed['patch_again'] is False  # torchvision already imported
    # The other import shims likewise act only where the stack lacks things.
    assert ('fuser_method_names' in applied) == (not baseline['has_reverse2'])
    assert ('backend_pattern_config' in applied) == (
        not baseline['has_setters']
    )
    assert shimmed['alias'] is True
    assert shimmed['applied_again'] == applied  # idempotent


def test_torchvision_fails_without_shim_on_pinned_stack(
    baseline: Dict[str, Any],
) -> None:
    if torch.__version__.split('+')[0] != '2.13.0':
        pytest.skip('the nms failure is specific to the pinned stack')
    assert 'operator torchvision::nms does not exist' in (
        baseline['torchvision_error'] or ''
    )


def test_patch_torchvision_ops_noop_once_imported(applied: List[str]) -> None:
    import torchvision  # noqa: F401  (importable: the package applied shims)

    assert compat.patch_torchvision_ops() is False
    assert applied == []


def test_patch_torchvision_ops_noop_without_torchvision() -> None:
    out = _python(
        """
import importlib.util, json
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *args, **kwargs: (
    None if name == 'torchvision' else real(name, *args, **kwargs))
"""
        + _LOAD_COMPAT
        + """
print(json.dumps(dict(
    patched=compat.patch_torchvision_ops(),
    schema=compat._torchvision_op_exists('nms'),
    applied=compat.applied_shims(),
)))
"""
    )
    assert out == dict(patched=False, schema=False, applied=[])


# ------------------------------------------------------------ fuser aliases
def test_patch_fuser_method_names(
    monkeypatch: pytest.MonkeyPatch, applied: List[str]
) -> None:
    import torch.ao.quantization.fuser_method_mappings as fmm

    monkeypatch.delattr(fmm, 'reverse2')
    assert compat.patch_fuser_method_names() is True
    assert fmm.reverse2 is fmm._reverse2
    assert applied == ['fuser_method_names']
    assert compat.patch_fuser_method_names() is False  # already present


def test_patch_fuser_method_names_keeps_existing_names(
    monkeypatch: pytest.MonkeyPatch, applied: List[str]
) -> None:
    import torch.ao.quantization.fuser_method_mappings as fmm

    def native(*args: Any) -> None:
        """Stands for a stack that still has the old public name."""

    monkeypatch.setattr(fmm, 'reverse2', native, raising=False)
    # A stack without the new name has nothing to alias either.
    monkeypatch.delattr(fmm, 'reverse3')
    monkeypatch.delattr(fmm, '_reverse3')
    assert compat.patch_fuser_method_names() is False
    assert fmm.reverse2 is native
    assert not hasattr(fmm, 'reverse3')
    assert applied == []


# ---------------------------------------------------- BackendPatternConfig
def test_patch_backend_pattern_config(
    monkeypatch: pytest.MonkeyPatch, applied: List[str]
) -> None:
    from torch.ao.quantization.backend_config import BackendPatternConfig

    for name in SETTERS:
        monkeypatch.delattr(BackendPatternConfig, name, raising=False)
    assert compat.patch_backend_pattern_config() is True
    assert applied == ['backend_pattern_config']
    config = BackendPatternConfig(torch.nn.Linear)
    chained = (
        config._set_overwrite_output_fake_quantize(True)
        ._set_overwrite_output_observer(True)
        ._set_input_output_observed(False)
        .set_observation_type(config.observation_type)
    )
    assert chained is config
    assert compat.patch_backend_pattern_config() is False  # already present


def test_patch_backend_pattern_config_keeps_native_setters(
    monkeypatch: pytest.MonkeyPatch, applied: List[str]
) -> None:
    from torch.ao.quantization.backend_config import BackendPatternConfig

    def native(self: Any, value: Any) -> Any:
        return 'native'

    for name in SETTERS:
        monkeypatch.setattr(BackendPatternConfig, name, native, raising=False)
    assert compat.patch_backend_pattern_config() is False
    assert all(getattr(BackendPatternConfig, n) is native for n in SETTERS)
    assert applied == []


# ---------------------------------------------- mmengine checkpoint loading
def _mmengine_0_10_7_loader(filename: str, map_location: Any) -> Any:
    """mmengine 0.10.7's ``load_from_local``: a bare ``torch.load``."""
    return torch.load(filename, map_location=map_location)


@pytest.fixture
def unpatched_loader(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Put mmengine's original local loader back for this test."""
    from mmengine.runner import checkpoint

    schemes = OrderedDict(checkpoint.CheckpointLoader._schemes)
    schemes[''] = _mmengine_0_10_7_loader
    monkeypatch.setattr(checkpoint.CheckpointLoader, '_schemes', schemes)
    monkeypatch.setattr(checkpoint, 'load_from_local', _mmengine_0_10_7_loader)
    return checkpoint


def test_patch_mmengine_checkpoint_loading(
    unpatched_loader: Any, applied: List[str], tmp_path: Path
) -> None:
    import pickle

    from mmengine.logging import HistoryBuffer

    checkpoint = unpatched_loader
    path = str(tmp_path / 'ckpt.pth')
    torch.save(
        dict(message_hub=dict(loss=HistoryBuffer([1.0, 2.0], [1, 1]))), path
    )
    with pytest.raises(pickle.UnpicklingError, match='Weights only'):
        checkpoint.CheckpointLoader.load_checkpoint(path)

    assert compat.patch_mmengine_checkpoint_loading() is True
    assert applied == ['mmengine_checkpoint_loading']
    loaded = checkpoint.CheckpointLoader.load_checkpoint(path)
    assert loaded['message_hub']['loss'].mean() == 1.5
    assert checkpoint.load_from_local(path, None)['message_hub']
    with pytest.raises(FileNotFoundError):
        checkpoint.CheckpointLoader.load_checkpoint(str(tmp_path / 'no.pth'))
    assert compat.patch_mmengine_checkpoint_loading() is False  # done


def test_patch_mmengine_checkpoint_loading_noop_without_weights_only(
    unpatched_loader: Any,
    applied: List[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    assert compat.patch_mmengine_checkpoint_loading() is False
    schemes = unpatched_loader.CheckpointLoader._schemes
    assert schemes[''] is _mmengine_0_10_7_loader
    assert applied == []


# ------------------------------------------------ mmengine_url_loading
def _mmengine_old_load_url(
    url: str,
    model_dir: Any = None,
    map_location: Any = None,
    progress: bool = True,
    check_hash: bool = False,
    file_name: Any = None,
) -> Any:
    """A URL loader without ``weights_only`` (mmengine's own ``load_url``
    for old torch): downloads, then a bare ``torch.load``."""
    from torch.hub import download_url_to_file, get_dir

    folder = model_dir or os.path.join(get_dir(), 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    cached = os.path.join(folder, file_name or url.rsplit('/', 1)[-1])
    if not os.path.exists(cached):
        download_url_to_file(url, cached, progress=False)
    return torch.load(cached, map_location=map_location)


def _weights_only_by_default(url: str, weights_only: bool = True, **kw):
    """A URL loader that takes ``weights_only`` but defaults to True (what
    a future torch hub might do)."""
    from torch.hub import download_url_to_file, get_dir

    folder = os.path.join(get_dir(), 'checkpoints')
    os.makedirs(folder, exist_ok=True)
    cached = os.path.join(folder, 'future_' + url.rsplit('/', 1)[-1])
    if not os.path.exists(cached):
        download_url_to_file(url, cached, progress=False)
    return torch.load(
        cached, map_location=kw.get('map_location'), weights_only=weights_only
    )


@pytest.fixture
def served_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """URL of an mmengine-style checkpoint (a ``HistoryBuffer`` in it)
    served on 127.0.0.1; downloads go to a temporary ``TORCH_HOME``."""
    from mmengine.logging import HistoryBuffer

    from tests.http_utils import serve_directory

    folder = tmp_path / 'served'
    folder.mkdir()
    torch.save(
        dict(
            state_dict=dict(w=torch.ones(2)),
            message_hub=dict(loss=HistoryBuffer([1.0, 2.0], [1, 1])),
        ),
        folder / 'ckpt.pth',
    )
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    with serve_directory(folder) as served:
        yield f'{served.url}/ckpt.pth'


@pytest.mark.parametrize(
    'old_loader', [_mmengine_old_load_url, _weights_only_by_default]
)
def test_patch_mmengine_url_loading(
    old_loader: Any,
    served_checkpoint: str,
    applied: List[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pickle

    from mmengine.runner import checkpoint

    monkeypatch.setattr(checkpoint, 'load_url', old_loader)
    with pytest.raises(pickle.UnpicklingError, match='Weights only'):
        checkpoint.CheckpointLoader.load_checkpoint(served_checkpoint)

    assert compat.patch_mmengine_url_loading() is True
    assert applied == ['mmengine_url_loading']
    loaded = checkpoint.CheckpointLoader.load_checkpoint(
        served_checkpoint, map_location='cpu'
    )
    assert loaded['message_hub']['loss'].mean() == 1.5
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert compat.patch_mmengine_url_loading() is False  # done


def test_patch_mmengine_url_loading_noop_on_pinned_stack(
    served_checkpoint: str, applied: List[str]
) -> None:
    """torch hub's loader passes weights_only=False: nothing to patch, and
    mmengine loads a checkpoint with non-tensor metadata by URL."""
    from mmengine.runner import checkpoint
    from torch.hub import load_state_dict_from_url

    loader = checkpoint.load_url
    if loader is not load_state_dict_from_url:
        pytest.skip("mmengine's load_url is not torch hub's on this stack")
    assert compat.patch_mmengine_url_loading() is False
    assert checkpoint.load_url is loader
    assert applied == []
    loaded = checkpoint.CheckpointLoader.load_checkpoint(served_checkpoint)
    assert loaded['message_hub']['loss'].mean() == 1.5


def test_patch_mmengine_url_loading_noop_without_weights_only(
    applied: List[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmengine.runner import checkpoint

    monkeypatch.setattr(checkpoint, 'load_url', _mmengine_old_load_url)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    assert compat.patch_mmengine_url_loading() is False
    assert checkpoint.load_url is _mmengine_old_load_url
    assert applied == []


# --------------------------------------------------- setup_cpu_distributed
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
    assert compat.setup_cpu_distributed(cfg) is True
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
    assert compat.setup_cpu_distributed(cfg) is True
    assert cfg.env_cfg.dist_cfg == dict(backend='gloo')
    assert cfg.model_wrapper_cfg == dict(type='_TestPlainWrapper')
    assert init_calls == [('slurm', dict(backend='gloo'))]


def test_setup_cpu_distributed_noop(
    init_calls: List[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmengine.config import Config

    cfg = Config(dict(launcher='none'))
    assert compat.setup_cpu_distributed(cfg) is False
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(launcher='pytorch'))
    assert compat.setup_cpu_distributed(cfg) is False
    assert cfg.to_dict() == dict(launcher='pytorch')
    assert init_calls == []


def test_teardown_distributed(tmp_path: Path) -> None:
    """A single-rank gloo group is destroyed; without one it is a no-op."""
    import torch.distributed as torch_dist

    assert compat.teardown_distributed() is False
    torch_dist.init_process_group(
        'gloo',
        init_method=f'file://{tmp_path / "store"}',
        rank=0,
        world_size=1,
    )
    try:
        assert torch_dist.is_initialized()
        assert compat.teardown_distributed() is True
        assert not torch_dist.is_initialized()
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
