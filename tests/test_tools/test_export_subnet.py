"""tools/export_subnet.py --format onnx: the pruned classifier as ONNX,
checked with onnxruntime against torch; its size follows the params."""

import importlib.util
import json

import onnx
import pytest
import torch
import yaml
from mmengine.config import Config

from projects.dmcp.deploy import onnx_bytes, onnx_session
from projects.dmcp.models import count_params
from projects.dmcp.registry import MODELS
from projects.dmcp.utils import tensor_forward
from tests.helpers import DMCP_CONFIGS, REPO_ROOT
from tests.helpers.models import randomize_norms

TOOL = REPO_ROOT / 'tools' / 'export_subnet.py'
SUBNET_CONFIG = (
    DMCP_CONFIGS / 'dmcp_resnet18-cifar-w16_subnet_fashion-mnist.py'
)
SUBNET_YAML = (
    DMCP_CONFIGS / 'DMCP_SUBNET_fashion-mnist_resnet18-cifar-w16_7M.yaml'
)


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('export_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The demo's pruned ResNet-18 with random weights and norm statistics
    saved as a checkpoint; returns the checkpoint and the model."""
    torch.manual_seed(0)
    cfg = Config.fromfile(str(SUBNET_CONFIG))
    model = MODELS.build(dict(cfg.model, subnet=str(SUBNET_YAML)))
    model.init_weights()
    randomize_norms(model)
    model.eval()
    ckpt = tmp_path_factory.mktemp('export') / 'epoch_3.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    return ckpt, model


def test_onnx_export_matches_torch(tool, trained, tmp_path):
    ckpt, model = trained
    out = tmp_path / 'subnet.onnx'
    info = tool.main(
        [
            str(SUBNET_CONFIG),
            str(ckpt),
            str(out),
            '--format',
            'onnx',
            '--cfg-options',
            f'model.subnet={SUBNET_YAML}',
        ]
    )
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    channels = yaml.safe_load(SUBNET_YAML.read_text())['channels']
    assert json.loads(meta['channels']) == channels
    assert json.loads(meta['params']) == count_params(model)
    written = yaml.safe_load((tmp_path / 'subnet.yaml').read_text())
    assert written['channels'] == channels

    # 8 new images, batched: onnxruntime on the CPU against torch
    inputs = torch.randn(
        8, 1, 28, 28, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = tensor_forward(model, inputs)
    (got,) = onnx_session(out.read_bytes()).run(
        ['logits'], {'input': inputs.numpy()}
    )
    assert got.shape == (8, 10)
    assert (torch.from_numpy(got) - expected).abs().max() <= 1e-4
    assert info['max_diff'] <= 1e-4

    # the size follows the params: float32 weights and little else, and
    # the full network's export is larger in the ratio of the params
    size = out.stat().st_size
    params = count_params(model)
    assert size == info['size']
    assert 4 * params < size < 4 * params * 1.1 + 20_000
    full = MODELS.build(
        dict(Config.fromfile(str(SUBNET_CONFIG)).model.architecture)
    )
    full_size = len(onnx_bytes(full, (1, 28, 28)))
    ratio = size / full_size
    params_ratio = params / count_params(full)
    assert ratio == pytest.approx(params_ratio, rel=0.1)
    assert ratio < 0.5


def test_onnx_export_without_yaml_is_one_line(tool, trained, tmp_path, capsys):
    ckpt, _ = trained
    missing = tmp_path / 'nowhere.yaml'
    with pytest.raises(SystemExit) as exc:
        tool.main(
            [
                str(SUBNET_CONFIG),
                str(ckpt),
                str(tmp_path / 'subnet.onnx'),
                '--format',
                'onnx',
                '--cfg-options',
                f'model.subnet={missing}',
            ]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'export_subnet.py: error:' in err
    assert f'model.subnet={missing}' in err
    assert not (tmp_path / 'subnet.onnx').exists()


def test_pickle_module_refused_with_onnx(tool, trained, tmp_path, capsys):
    ckpt, _ = trained
    with pytest.raises(SystemExit):
        tool.main(
            [str(SUBNET_CONFIG), str(ckpt), str(tmp_path / 'x.onnx')]
            + ['--format', 'onnx', '--pickle-module']
        )
    assert '--pickle-module' in capsys.readouterr().err
