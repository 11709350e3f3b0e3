"""mmrazor's published DMCP subnets load into our classes: mmrazor 1.0.0's
own subnet model is built from each published file (the ResNet-50 2G json
and the MobileNetV2 100M yaml) with random weights, saved as mmrazor's
runner saves a checkpoint, served over http from 127.0.0.1, and loaded
through our reproduction config with ``load_from``: same logits, FLOPs and
parameters as mmrazor's model."""

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import projects.dmcp  # noqa: F401  (registers DMCP's classes)
from projects.dmcp.models import count_flops, count_params, tensor_forward
from tests.helpers import DMCP_CONFIGS
from tests.helpers.http import serve_directory
from tests.helpers.mmrazor import (
    MMRAZOR_DATA,
    build_mmrazor_subnet,
    randomize,
    save_like_mmrazor_runner,
)

CASES = {
    'resnet50-2G-json': (
        'dmcp_resnet50_subnet_mmrazor-2g_in1k.py',
        'DMCP_R50_2G.json',
    ),
    'mobilenet-v2-100M-yaml': (
        'dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k.py',
        'DMCP_MBV2_100M.yaml',
    ),
}


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


@pytest.mark.slow
@pytest.mark.parametrize('case', list(CASES))
def test_mmrazor_checkpoint_by_url_gives_mmrazor_logits(
    case: str, tmp_path: Path, torch_home: Path
) -> None:
    torch.set_num_threads(1)
    config, published = CASES[case]
    cfg = Config.fromfile(str(DMCP_CONFIGS / config))
    theirs = build_mmrazor_subnet(
        cfg.model.architecture, MMRAZOR_DATA / published
    )
    randomize(theirs, seed=13).eval()
    served = tmp_path / 'served'
    served.mkdir()
    save_like_mmrazor_runner(theirs, served / 'DMCP_published.pth')

    with serve_directory(served) as server:
        cfg.model.subnet = str(MMRAZOR_DATA / published)
        cfg.load_from = f'{server.url}/DMCP_published.pth'
        cfg.work_dir = str(tmp_path / 'work')
        runner = Runner.from_cfg(cfg)
        runner.load_or_resume()
        assert server.requests == ['/DMCP_published.pth']
    ours = runner.model.eval()
    cache = torch_home / 'hub' / 'checkpoints'
    assert (cache / 'DMCP_published.pth').is_file()

    inputs = torch.randn(
        2, 3, 224, 224, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = theirs(inputs, mode='tensor')
        got = ours(inputs, mode='tensor')
    assert got.shape == expected.shape == (2, 1000)
    assert (got - expected).abs().max().item() <= 1e-5
    assert count_params(ours) == count_params(theirs)
    shape = (3, 224, 224)
    assert count_flops(ours, shape, tensor_forward) == count_flops(
        theirs, shape, tensor_forward
    )
