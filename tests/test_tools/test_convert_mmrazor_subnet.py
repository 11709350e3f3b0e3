"""tools/convert_mmrazor_subnet.py: mmrazor's published subnet files ->
our subnet yaml; nothing written for a file that does not fit."""

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from projects.dmcp.models import load_subnet
from tests.helpers import DMCP_CONFIGS, REPO_ROOT
from tests.helpers.mmrazor import MMRAZOR_DATA

TOOL = REPO_ROOT / 'tools' / 'convert_mmrazor_subnet.py'
MBV2 = DMCP_CONFIGS / 'dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k.py'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('convert_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.set_num_threads(1)
    return module


@pytest.mark.slow
def test_converts_both_mbv2_formats_to_one_yaml(tool, tmp_path: Path):
    out_json = tmp_path / 'from_json.yaml'
    out_yaml = tmp_path / 'from_yaml.yaml'
    tool.main([str(MMRAZOR_DATA / 'DMCP_MBV2_100M.json'), str(out_json)])
    tool.main(
        [
            str(MMRAZOR_DATA / 'DMCP_MBV2_100M.yaml'),
            str(out_yaml),
            '--config',
            str(MBV2),
        ]
    )
    a, b = load_subnet(out_json), load_subnet(out_yaml)
    assert a['channels'] == b['channels']
    assert a['meta']['flops'] == b['meta']['flops'] > 0
    assert a['meta']['input_shape'] == [3, 224, 224]
    assert a['channels']['backbone.conv1.conv'] == 9
    assert a['meta']['supernet'] == str(MBV2.relative_to(REPO_ROOT))
    assert yaml.safe_load(out_json.read_text())['meta']['source'].startswith(
        'mmrazor mutator config'
    )


def test_not_an_mmrazor_file_writes_nothing(tool, tmp_path: Path, capsys):
    ours = tmp_path / 'ours.yaml'
    ours.write_text('meta: {}\nchannels: {backbone.conv1: 3}\n')
    out = tmp_path / 'out.yaml'
    with pytest.raises(SystemExit) as info:
        tool.main([str(ours), str(out)])
    assert str(info.value) == (
        f'convert_mmrazor_subnet.py: error: {ours}: not an mmrazor DMCP '
        'subnet file (a DMCPChannelMutator json or a unit-index yaml)'
    )
    assert not out.exists()


def test_index_file_of_unknown_length_asks_for_config(tool, tmp_path: Path):
    src = tmp_path / 'units.yaml'
    src.write_text('{0: 3, 1: 4}\n')
    out = tmp_path / 'out.yaml'
    with pytest.raises(SystemExit, match='2 units match neither') as info:
        tool.main([str(src), str(out)])
    assert str(info.value).endswith('pass --config')
    assert not out.exists()


@pytest.mark.slow
def test_file_of_another_architecture_writes_nothing(tool, tmp_path: Path):
    out = tmp_path / 'out.yaml'
    src = MMRAZOR_DATA / 'DMCP_R50_2G.yaml'
    with pytest.raises(SystemExit) as info:
        tool.main([str(src), str(out), '--config', str(MBV2)])
    assert str(info.value).startswith(
        f'convert_mmrazor_subnet.py: error: {src}: written for another '
        'architecture'
    )
    assert not out.exists()
