"""Tests of :mod:`projects.dmcp.compat`: every shim acts where the stack lacks
what it supplies and is a no-op otherwise.

The torchvision shim can only be observed in a fresh interpreter (a failed
``import torchvision`` leaves half its ops registered), so those checks run
in subprocesses; the others remove the thing in this process with
``monkeypatch`` (which puts it back afterwards) and call the shim.
"""

import hashlib
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
from tests.helpers import REPO_ROOT

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


class _RunsCode:
    """Unpickling it creates the folder ``path``: a stand-in for a payload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


class _FetchesMethod:
    """Unpickling it calls ``getattr(HistoryBuffer, name)``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer

        return (getattr, (HistoryBuffer, self.name))


def _mmengine_checkpoint(path: Path) -> None:
    """What a Runner saves: weights, meta with numpy scalars, a message
    hub with ``HistoryBuffer``s (numpy arrays, statistics methods)."""
    import numpy as np
    from mmengine.logging import MessageHub
    from mmengine.runner import save_checkpoint

    hub = MessageHub('compat_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/lr', np.float32(0.25))
    hub.update_info('iter', 3)
    save_checkpoint(
        dict(
            meta=dict(seed=np.int64(3), epoch=1),
            state_dict=OrderedDict(w=torch.ones(2)),
            message_hub=hub.state_dict(),
        ),
        str(path),
    )


def test_patch_mmengine_checkpoint_loading(
    unpatched_loader: Any, applied: List[str], tmp_path: Path
) -> None:
    import pickle

    checkpoint = unpatched_loader
    path = tmp_path / 'ckpt.pth'
    _mmengine_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError, match='Weights only'):
        checkpoint.CheckpointLoader.load_checkpoint(str(path))

    assert compat.patch_mmengine_checkpoint_loading() is True
    assert applied == ['mmengine_checkpoint_loading']
    loaded = checkpoint.CheckpointLoader.load_checkpoint(str(path))
    hub = loaded['message_hub']
    assert hub['log_scalars']['train/loss'].mean() == 1.5
    assert hub['log_scalars']['train/lr'].statistics('max') == 0.25
    assert loaded['meta']['seed'] == 3
    assert checkpoint.load_from_local(str(path), None)['message_hub']
    with pytest.raises(FileNotFoundError):
        checkpoint.CheckpointLoader.load_checkpoint(str(tmp_path / 'no.pth'))
    assert compat.patch_mmengine_checkpoint_loading() is False  # done


def test_arbitrary_pickled_object_is_refused_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmengine.runner import CheckpointLoader

    monkeypatch.delenv(compat.UNSAFE_LOAD_ENV, raising=False)
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, extra=_RunsCode(str(marker))), path)
    with pytest.raises(compat.CheckpointLoadError) as info:
        CheckpointLoader.load_checkpoint(str(path))
    message = str(info.value)
    assert message.startswith(f'{path}: refused: the checkpoint needs ')
    assert 'os.makedirs' in message or 'posix.makedirs' in message
    assert compat.UNSAFE_LOAD_ENV in message and '\n' not in message
    assert not marker.exists()


def test_unsafe_load_is_an_explicit_opt_in_that_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmengine.logging import MMLogger

    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'trusted.pth'
    torch.save(dict(extra=_RunsCode(str(marker))), path)
    monkeypatch.setenv(compat.UNSAFE_LOAD_ENV, '1')
    logger = MMLogger.get_instance('compat_unsafe_test')
    records = []
    monkeypatch.setattr(
        logger, 'warning', lambda msg, *a, **k: records.append(msg)
    )
    monkeypatch.setattr(
        logger,
        'log',
        lambda level, msg, *a, **k: records.append(msg),
    )
    with monkeypatch.context() as m:
        m.setattr(MMLogger, 'get_current_instance', lambda: logger)
        compat.load_checkpoint_file(str(path))
    assert marker.is_dir()  # the pickle ran: that is what the opt-in means
    assert any('weights_only=False' in r and str(path) in r for r in records)


@pytest.mark.parametrize('name', ['__init__', 'statistics', '__class__'])
def test_getattr_is_limited_to_history_buffer_statistics(
    name: str, tmp_path: Path
) -> None:
    path = tmp_path / 'getattr.pth'
    torch.save(dict(fn=_FetchesMethod(name)), path)
    with pytest.raises(compat.CheckpointLoadError, match='refused.*getattr'):
        compat.load_checkpoint_file(str(path))
    torch.save(dict(fn=_FetchesMethod('mean')), path)
    from mmengine.logging import HistoryBuffer

    assert compat.load_checkpoint_file(str(path))['fn'] is HistoryBuffer.mean


def test_truncated_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / 'ckpt.pth'
    _mmengine_checkpoint(path)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises(compat.CheckpointLoadError) as info:
        compat.load_checkpoint_file(str(cut))
    message = str(info.value)
    assert message.startswith(f'{cut}: truncated or not a torch checkpoint')
    assert '\n' not in message


# ------------------------------------------------ mmengine_url_loading
@pytest.fixture
def served_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A folder served on 127.0.0.1 holding an mmengine checkpoint
    ``ckpt.pth``; downloads go to a temporary ``TORCH_HOME``."""
    from tests.helpers.http import serve_directory

    folder = tmp_path / 'served'
    folder.mkdir()
    _mmengine_checkpoint(folder / 'ckpt.pth')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    with serve_directory(folder) as served:
        served.folder = folder
        served.cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
        yield served


def test_patch_mmengine_url_loading(
    served_folder: Any, applied: List[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmengine.runner import checkpoint
    from torch.hub import load_state_dict_from_url

    monkeypatch.setattr(checkpoint, 'load_url', load_state_dict_from_url)
    assert compat.patch_mmengine_url_loading() is True
    assert applied == ['mmengine_url_loading']
    loaded = checkpoint.CheckpointLoader.load_checkpoint(
        f'{served_folder.url}/ckpt.pth', map_location='cpu'
    )
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == 1.5
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert (served_folder.cache / 'ckpt.pth').is_file()
    assert compat.patch_mmengine_url_loading() is False  # done


def test_url_with_pickled_object_is_refused(served_folder: Any) -> None:
    from mmengine.runner import CheckpointLoader

    marker = served_folder.folder / 'payload_ran'
    torch.save(
        dict(extra=_RunsCode(str(marker))), served_folder.folder / 'evil.pth'
    )
    url = f'{served_folder.url}/evil.pth'
    with pytest.raises(compat.CheckpointLoadError, match=f'^{url}: refused'):
        CheckpointLoader.load_checkpoint(url)
    assert not marker.exists()


def test_url_404_is_one_line_and_writes_nothing(served_folder: Any) -> None:
    from mmengine.runner import CheckpointLoader

    url = f'{served_folder.url}/missing.pth'
    with pytest.raises(compat.CheckpointLoadError) as info:
        CheckpointLoader.load_checkpoint(url)
    assert str(info.value).startswith(f'{url}: download failed (HTTP 404')
    cache = served_folder.cache
    assert not cache.exists() or list(cache.iterdir()) == []


def test_hash_in_file_name_is_checked(served_folder: Any) -> None:
    from mmengine.runner import CheckpointLoader

    data = (served_folder.folder / 'ckpt.pth').read_bytes()
    good = hashlib.sha256(data).hexdigest()[:8]
    bad = 'deadbeef' if good != 'deadbeef' else 'feedbeef'
    for prefix in (good, bad):
        (served_folder.folder / f'ckpt-{prefix}.pth').write_bytes(data)
    url = f'{served_folder.url}/ckpt-{good}.pth'
    assert CheckpointLoader.load_checkpoint(url)['state_dict']
    url = f'{served_folder.url}/ckpt-{bad}.pth'
    with pytest.raises(compat.CheckpointLoadError) as info:
        CheckpointLoader.load_checkpoint(url)
    assert str(info.value).startswith(f'{url}: sha256 {good}')
    assert 'refusing the download' in str(info.value)
    assert not (served_folder.cache / f'ckpt-{bad}.pth').exists()
    leftovers = [p.name for p in served_folder.cache.iterdir()]
    assert leftovers == [f'ckpt-{good}.pth']


def test_zoo_hash_is_checked(
    served_folder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL listed in the zoo must have the zoo's sha256, whatever its
    name; a cached copy that differs is refused too."""
    import yaml
    from mmengine.runner import CheckpointLoader

    from projects.dmcp import zoo

    url = f'{served_folder.url}/ckpt.pth'
    data = (served_folder.folder / 'ckpt.pth').read_bytes()
    metafile = tmp_path / 'metafile.yml'

    def zoo_with(sha: str) -> None:
        entry = dict(Name='x', Weights=url, Metadata={'Weights SHA256': sha})
        metafile.write_text(yaml.safe_dump(dict(Models=[entry])))

    monkeypatch.setattr(zoo, 'METAFILE', str(metafile))
    monkeypatch.setattr(
        zoo.zoo_sha256, '__defaults__', (str(metafile),), raising=True
    )
    zoo_with('0' * 64)
    with pytest.raises(compat.CheckpointLoadError, match='differs from'):
        CheckpointLoader.load_checkpoint(url)
    assert not (served_folder.cache / 'ckpt.pth').exists()
    zoo_with(hashlib.sha256(data).hexdigest())
    assert CheckpointLoader.load_checkpoint(url)['state_dict']
    zoo_with('1' * 64)  # the cached file no longer matches
    with pytest.raises(compat.CheckpointLoadError, match='cached as'):
        CheckpointLoader.load_checkpoint(url)
