"""tools/analysis/get_flops.py: FLOPs (conv + linear MACs) and parameters of
the model a config builds."""

import importlib.util
import json

import pytest
import torch
import yaml

from projects.dmcp.models import DMCPChannelMutator, dump_subnet
from projects.dmcp.registry import MODELS
from projects.dmcp.utils import tensor_forward
from tests.helpers import DMCP_CONFIGS, REPO_ROOT
from tests.helpers.search import run_tool

TOOL = REPO_ROOT / 'tools' / 'analysis' / 'get_flops.py'
CONFIGS = DMCP_CONFIGS
R50 = CONFIGS / 'dmcp_resnet50_supernet_8xb64_in1k.py'
R18 = CONFIGS / 'dmcp_resnet18_supernet_8xb64_in1k.py'
R18_SUBNET = CONFIGS / 'dmcp_resnet18_subnet_32xb64_in1k.py'
MBV2 = CONFIGS / 'dmcp_mobilenet-v2-1.5x_supernet_8xb64_in1k.py'
MBV2_1X = [
    '--cfg-options',
    'model.architecture.backbone.widen_factor=1.0',
    'model.architecture.head.in_channels=1280',
]


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('get_flops_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def r18_yaml(tmp_path_factory):
    """A ResNet-18 subnet yaml at 32x32 and the mutator's FLOPs of it."""
    torch.manual_seed(0)
    from mmengine.config import Config

    arch = Config.fromfile(str(R18)).model.architecture
    model = MODELS.build(dict(arch))
    mutator = DMCPChannelMutator()
    mutator.prepare_from_supernet(model, (3, 32, 32), tensor_forward)
    choices = mutator.sample_choices(
        'direct', torch.Generator().manual_seed(0)
    )
    flops = mutator.subnet_flops(choices)
    path = tmp_path_factory.mktemp('subnet') / 'DMCP_SUBNET_IMAGENET.yaml'
    dump_subnet(
        str(path),
        mutator.layer_channels(choices),
        dict(flops=flops, input_shape=[3, 32, 32]),
    )
    return path, flops


@pytest.mark.parametrize(
    'config, extra, flops, params',
    [
        (R50, [], 4.09e9, 25.56e6),  # the paper's and OpenMMLab's figures
        (MBV2, MBV2_1X, 300.8e6, 3.50e6),
    ],
    ids=['resnet50', 'mobilenet-v2-1.0x'],
)
def test_full_supernet(tool, capsys, config, extra, flops, params):
    result = tool.main([str(config), *extra])
    assert result['flops'] == pytest.approx(flops, rel=5e-3)
    assert result['params'] == pytest.approx(params, rel=5e-3)
    assert result['input_shape'] == [3, 224, 224]
    out = capsys.readouterr().out
    assert '(full network)' in out and 'Input shape: (3, 224, 224)' in out


def test_exact_figures_and_shape(tool):
    assert tool.main([str(R50)])['flops'] == 4_089_184_256
    mbv2_15 = tool.main([str(MBV2)])
    assert mbv2_15['flops'] == 672_832_704 and mbv2_15['params'] == 6_858_152
    small = tool.main([str(R18), '--shape', '32', '48'])
    assert small['input_shape'] == [3, 32, 48]
    assert tool.main([str(R18), '--shape', '32'])['input_shape'] == [3, 32, 32]


def test_subnet_counts_the_pruned_model(tool, r18_yaml):
    """A subnet config (model.subnet) and a supernet config with --subnet
    count the same pruned model, at the yaml's input shape, and agree with
    the mutator."""
    path, flops = r18_yaml
    via_subnet_cfg = tool.main(
        [str(R18_SUBNET), '--cfg-options', f'model.subnet={path}']
    )
    via_flag = tool.main([str(R18_SUBNET), '--subnet', str(path)])
    via_supernet = tool.main(
        [str(R18), '--subnet', str(path), '--shape', '32']
    )
    for result in (via_subnet_cfg, via_flag, via_supernet):
        assert result['flops'] == flops
        assert result['input_shape'] == [3, 32, 32]
    assert via_subnet_cfg['params'] == via_supernet['params'] < 11.69e6
    meta = yaml.safe_load(path.read_text())['meta']
    assert meta['flops'] == flops


def test_subnet_config_without_yaml(tool, capsys):
    """A user's mistake: one line on stderr, exit code 2, no traceback;
    ``--debug`` lets the exception through."""
    with pytest.raises(SystemExit) as info:
        tool.main([str(R18_SUBNET)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('get_flops.py: error: configs/pruning/dmcp/')
    assert 'model.subnet=<work_dir>' in err and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(FileNotFoundError, match=r'model\.subnet=<work_dir>'):
        tool.main([str(R18_SUBNET), '--debug'])


@pytest.mark.slow
def test_json_last_line(r18_yaml):
    path, flops = r18_yaml
    proc = run_tool(
        ['python', str(TOOL), str(R18_SUBNET), '--subnet', str(path), '--json']
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == dict(
        flops=flops, params=result['params'], input_shape=[3, 32, 32]
    )
    assert isinstance(result['params'], int) and result['params'] > 0


@pytest.mark.slow
def test_counts_mmrazors_published_r50_subnet(tool, capsys):
    """The issue's command: our ResNet-50 subnet config with mmrazor's
    DMCP_R50_2G.json; the same count as its reproduction config."""
    from tests.helpers.mmrazor import MMRAZOR_DATA

    subnet = MMRAZOR_DATA / 'DMCP_R50_2G.json'
    config = CONFIGS / 'dmcp_resnet50_subnet_32xb64_in1k.py'
    result = tool.main([str(config), '--subnet', str(subnet), '--json'])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {
        'flops': result['flops'],
        'params': result['params'],
        'input_shape': [3, 224, 224],
    }
    full = tool.main([str(R50), '--json'])
    assert 0.5 * full['flops'] < result['flops'] < 0.6 * full['flops']
    reproduction = CONFIGS / 'dmcp_resnet50_subnet_mmrazor-2g_in1k.py'
    again = tool.main([str(reproduction), '--json'])
    assert (again['flops'], again['params']) == (
        result['flops'],
        result['params'],
    )
