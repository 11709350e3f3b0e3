"""tools/analysis/latency_table.py: a measured table of the demo's supernet
that a mutator reads; its full-network figure is the calibrated sum of the
layers'."""

import importlib.util

import pytest
import torch
import yaml
from mmengine.config import Config

from projects.dmcp.model_config import read_model_config
from projects.dmcp.registry import build_model
from tests.helpers import DMCP_CONFIGS, REPO_ROOT

TOOL = REPO_ROOT / 'tools' / 'analysis' / 'latency_table.py'
SUPERNET = DMCP_CONFIGS / 'dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py'


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('latency_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_of_the_demo_supernet(tool, tmp_path):
    out = tmp_path / 'table.yaml'
    before = torch.get_num_threads()
    try:
        doc = tool.main(
            [str(SUPERNET), str(out), '--runs', '1', '--warmup', '0']
            + ['--calibration-subnets', '2']
            + ['--cfg-options', 'model.mutator.channel_unit_cfg.num_groups=4']
        )
    finally:
        torch.set_num_threads(before)
    assert yaml.safe_load(out.read_text()) == doc
    assert doc['meta']['num_groups'] == 4
    assert doc['meta']['device'].startswith('cpu')
    cfg = Config.fromfile(str(SUPERNET))
    cfg.model.mutator.channel_unit_cfg.num_groups = 4
    model_cfg = cfg.model
    model_cfg.architecture = read_model_config(cfg).architecture
    mutator = build_model(model_cfg).mutator
    mutator.set_latency_table(doc, str(out))  # fits the network
    assert set(doc['layers']) == {r.name for r in mutator.trace.layers}
    for entry in doc['layers'].values():
        assert all(v > 0 for row in entry['ms'] for v in row)
    # every transition 1: E[latency] is the full network's entries
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.fill_(50.0)
    full = sum(e['ms'][-1][-1] for e in doc['layers'].values())
    cal = doc['meta']['calibration']
    assert float(mutator.expected_latency()) == pytest.approx(
        cal['offset_ms'] + cal['scale'] * full
    )
    # the calibration: the uniform subnets, then the random ones, timed
    # whole; the fit is the least-squares line through them
    assert cal['scale'] > 0 and len(cal['points']) == 4 + 2
    assert [p[0] for p in cal['points'][:4]] == [
        [k] * 12 for k in (1, 2, 3, 4)
    ]
    assert cal['points'][3][1] == pytest.approx(full, rel=1e-4)
    assert all(p[2] > 0 for p in cal['points'])
    for entry, rec in zip(doc['layers'].values(), mutator.trace.layers):
        assert entry['channels'] == [rec.in_channels, rec.out_channels]


def test_plain_config_is_one_line(tool, tmp_path, capsys):
    subnet = DMCP_CONFIGS / 'dmcp_resnet18-cifar-w16_subnet_fashion-mnist.py'
    with pytest.raises(SystemExit):
        tool.main([str(subnet), str(tmp_path / 't.yaml')])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'supernet config' in err
