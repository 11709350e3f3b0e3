"""tools/publish_checkpoint.py: a release checkpoint that loads with a bare
``torch.load(..., weights_only=True)``, named by its sha256; a checkpoint
carrying a pickled object is refused and nothing is written."""

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from projects.dmcp import compat
from tests.helpers import REPO_ROOT
from tests.helpers.mmrazor import save_like_mmrazor_runner

TOOL = REPO_ROOT / 'tools' / 'publish_checkpoint.py'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('publish_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tool, monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, 'argv', ['publish_checkpoint.py', *argv])
    tool.main()


def test_published_checkpoint_loads_weights_only(
    tool, tmp_path: Path, monkeypatch, capsys
) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
    trained = tmp_path / 'epoch_3.pth'
    save_like_mmrazor_runner(model, trained)  # message hub, numpy seed
    _run(tool, monkeypatch, str(trained), str(tmp_path / 'dmcp_x.pth'))
    out_name, sha_line = capsys.readouterr().out.strip().splitlines()[-2:]
    out = Path(out_name)
    data = out.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert out.name == f'dmcp_x-{digest[:8]}.pth'
    assert sha_line == f'sha256: {digest}'
    slim = torch.load(out, weights_only=True)  # no allowlist needed
    assert set(slim) == {'state_dict', 'meta'}
    assert slim['meta']['seed'] == 2016 and type(slim['meta']['seed']) is int
    assert torch.equal(slim['state_dict']['0.weight'], model[0].weight)


def test_pickled_object_is_refused(tool, tmp_path: Path, monkeypatch) -> None:
    evil = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, meta=argparse.Namespace()), evil)
    with pytest.raises(SystemExit) as info:
        _run(tool, monkeypatch, str(evil), str(tmp_path / 'out.pth'))
    assert info.value.code == 2
    assert str(info.value).startswith(
        f'publish_checkpoint.py: error: {evil}: refused'
    )
    with pytest.raises(compat.CheckpointLoadError, match=f'^{evil}: refused'):
        _run(tool, monkeypatch, str(evil), str(tmp_path / 'o.pth'), '--debug')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['evil.pth']
