"""mmrazor's published subnet files (tests/data/mmrazor/) read as our subnet
yaml: detection by content, units resolved by mmrazor's channel analyzer,
both formats of one subnet giving the same channels, mmrazor's clamping of
too-wide choices, and bad files refused in one line."""

import json
import logging
from pathlib import Path
from typing import Dict

import pytest
import yaml
from mmengine.config import Config
from mmengine.logging import MMLogger

import projects.dmcp  # noqa: F401  (registers DMCP's classes)
from projects.dmcp.models import load_subnet, plan_subnet, tensor_forward
from projects.dmcp.models.mmrazor_subnet import (
    INDEX_FORMAT,
    MUTATOR_FORMAT,
    mmrazor_subnet_kind,
    mmrazor_to_subnet_doc,
    mmrazor_units,
    read_mmrazor_file,
)
from projects.dmcp.registry import MODELS
from tests.helpers import DMCP_CONFIGS
from tests.helpers.mmrazor import MMRAZOR_DATA

CONFIGS = {
    'resnet50': 'dmcp_resnet50_subnet_mmrazor-2g_in1k.py',
    'mobilenet-v2': 'dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k.py',
}
FILES = {
    'resnet50': ('DMCP_R50_2G.json', 'DMCP_R50_2G.yaml'),
    'mobilenet-v2': ('DMCP_MBV2_100M.json', 'DMCP_MBV2_100M.yaml'),
}


_ARCHS: Dict[str, Dict] = {}


def _arch(net: str) -> Dict:
    """The architecture with mmrazor's units of it (analysed once)."""
    if net not in _ARCHS:
        cfg = Config.fromfile(str(DMCP_CONFIGS / CONFIGS[net]))
        arch = MODELS.build(dict(cfg.model.architecture, _scope_='mmpretrain'))
        _ARCHS[net] = dict(model=arch, units=mmrazor_units(arch))
    return _ARCHS[net]


@pytest.fixture(scope='module')
def archs() -> Dict[str, Dict]:
    """Lazily analysed architectures: ``archs['resnet50']`` takes ~10-30 s
    (tests that use it are slow), MobileNetV2 a few seconds."""

    class Lazy(dict):
        def __missing__(self, net: str) -> Dict:
            return _arch(net)

    return Lazy()


def _convert(path: Path, arch: Dict) -> Dict:
    kind, doc = read_mmrazor_file(path)
    return mmrazor_to_subnet_doc(
        kind, doc, str(path), arch['model'], arch['units']
    )


def test_formats_are_detected_by_content(tmp_path: Path) -> None:
    assert read_mmrazor_file(MMRAZOR_DATA / 'DMCP_R50_2G.json')[0] == (
        MUTATOR_FORMAT
    )
    assert read_mmrazor_file(MMRAZOR_DATA / 'DMCP_R50_2G.yaml')[0] == (
        INDEX_FORMAT
    )
    # the json under another name is still the mutator config
    renamed = tmp_path / 'subnet.yaml'
    renamed.write_text((MMRAZOR_DATA / 'DMCP_R50_2G.json').read_text())
    assert read_mmrazor_file(renamed)[0] == MUTATOR_FORMAT
    ours = dict(meta={}, channels={'backbone.conv1': 3})
    assert mmrazor_subnet_kind(ours) is None
    assert mmrazor_subnet_kind({'0': 3}) is None  # our format can't be this
    assert mmrazor_subnet_kind([1, 2]) is None
    assert read_mmrazor_file(tmp_path / 'missing.json') is None


@pytest.mark.parametrize(
    'net', [pytest.param('resnet50', marks=pytest.mark.slow), 'mobilenet-v2']
)
def test_units_are_the_jsons(archs: Dict, net: str) -> None:
    """Unit names of mmrazor's analysis are the json's keys, in order."""
    json_file, index_file = FILES[net]
    units = archs[net]['units']
    listed = json.loads((MMRAZOR_DATA / json_file).read_text())
    assert [u.name for u in units] == list(listed['channel_unit_cfg']['units'])
    assert len(units) == len(
        yaml.safe_load((MMRAZOR_DATA / index_file).read_text())
    )


@pytest.mark.slow
def test_r50_residual_unit_couples_its_layers(archs: Dict) -> None:
    r50 = {u.name: u for u in archs['resnet50']['units']}
    coupled = r50['backbone.layer1.0.conv3_(0, 256)_256'].layers
    assert [name for name, _ in coupled] == [
        'backbone.layer1.0.conv3',
        'backbone.layer1.0.downsample.0',
        'backbone.layer1.1.conv3',
        'backbone.layer1.2.conv3',
    ]


def test_mbv2_expansion_unit_holds_its_depthwise_layer(archs: Dict) -> None:
    mbv2 = {u.name: u for u in archs['mobilenet-v2']['units']}
    expand = mbv2['backbone.layer2.0.conv.0.conv_(0, 96)_96'].layers
    assert expand == [
        ('backbone.layer2.0.conv.0.conv', 1),
        ('backbone.layer2.0.conv.1.conv', 1),  # depthwise follower
    ]


@pytest.mark.parametrize(
    'net', [pytest.param('resnet50', marks=pytest.mark.slow), 'mobilenet-v2']
)
def test_both_formats_give_the_same_subnet(archs: Dict, net: str) -> None:
    json_file, index_file = FILES[net]
    by_name = _convert(MMRAZOR_DATA / json_file, archs[net])
    by_index = _convert(MMRAZOR_DATA / index_file, archs[net])
    assert by_name['channels'] == by_index['channels']
    assert by_name['meta']['input_shape'] == [3, 224, 224]


@pytest.mark.slow
def test_r50_channels_follow_the_json(archs: Dict) -> None:
    channels = _convert(MMRAZOR_DATA / 'DMCP_R50_2G.json', archs['resnet50'])[
        'channels'
    ]
    assert channels['backbone.conv1'] == 52
    assert channels['backbone.layer4.1.conv2'] == 461
    for name in (
        'backbone.layer1.0.conv3',
        'backbone.layer1.0.downsample.0',
        'backbone.layer1.2.conv3',
    ):
        assert channels[name] == 106  # coupled layers take the unit's value
    assert 'head.fc' not in channels


def test_too_wide_choice_keeps_the_unit_with_a_warning(
    archs: Dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DMCP_MBV2_100M.yaml asks 693 of a 576-channel unit (and 1440 of
    960, 1664 of 1280): mmrazor's mask keeps all channels, so do we."""
    logged = []
    logger = MMLogger.get_current_instance()
    monkeypatch.setattr(
        logger,
        'log',
        lambda level, msg, *a, **k: logged.append((level, msg)),
    )
    channels = _convert(
        MMRAZOR_DATA / 'DMCP_MBV2_100M.yaml', archs['mobilenet-v2']
    )['channels']
    assert channels['backbone.layer6.0.conv.0.conv'] == 576
    assert channels['backbone.layer6.0.conv.1.conv'] == 576
    assert channels['backbone.layer7.0.conv.0.conv'] == 960
    assert channels['backbone.conv2.conv'] == 1280
    warnings = [m for level, m in logged if level == logging.WARNING]
    assert len(warnings) == 3
    assert warnings[0].startswith(
        f'{MMRAZOR_DATA / "DMCP_MBV2_100M.yaml"}: 18: 693 channels asked'
    )


def test_subnet_file_of_another_architecture(archs: Dict) -> None:
    r50_json = MMRAZOR_DATA / 'DMCP_R50_2G.json'
    with pytest.raises(ValueError) as info:
        _convert(r50_json, archs['mobilenet-v2'])
    assert str(info.value).startswith(
        f'{r50_json}: written for another architecture: 37 of its 37 units'
    )


@pytest.mark.slow
def test_index_file_of_another_architecture(archs: Dict) -> None:
    mbv2_yaml = MMRAZOR_DATA / 'DMCP_MBV2_100M.yaml'
    with pytest.raises(ValueError) as info:
        _convert(mbv2_yaml, archs['resnet50'])
    assert str(info.value) == (
        f'{mbv2_yaml}: written for another architecture: it has units '
        '0..24 (25), mmrazor finds 37 units (0..36) in this one'
    )


@pytest.mark.parametrize(
    'value, message',
    [(0, '0 is not a positive'), ('many', "'many' is not a positive")],
)
def test_bad_choice(archs: Dict, tmp_path: Path, value, message) -> None:
    doc = yaml.safe_load((MMRAZOR_DATA / 'DMCP_MBV2_100M.yaml').read_text())
    doc[3] = value
    path = tmp_path / 'bad.yaml'
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=f'^{path}: 3: {message}'):
        _convert(path, archs['mobilenet-v2'])


def test_load_subnet_needs_the_architecture() -> None:
    path = MMRAZOR_DATA / 'DMCP_MBV2_100M.json'
    with pytest.raises(ValueError) as info:
        load_subnet(path)
    assert str(info.value).startswith(
        f'{path}: an {MUTATOR_FORMAT}; its units are resolved on the '
        'architecture'
    )
    assert 'tools/convert_mmrazor_subnet.py' in str(info.value)


@pytest.mark.slow
def test_plan_of_an_mmrazor_file_checks_against_our_units(archs: Dict) -> None:
    """Our tracer's units accept what mmrazor's analysis produced: every
    pruned layer given, coupled layers equal."""
    path = MMRAZOR_DATA / 'DMCP_MBV2_100M.json'
    plan = plan_subnet(
        archs['mobilenet-v2']['model'], path, forward=tensor_forward
    )
    assert plan.input_shape == (3, 224, 224)
    assert plan.channels['backbone.layer1.0.conv.1.conv'] == 10
    doc = load_subnet(path, archs['mobilenet-v2']['model'])
    assert doc['channels'] == plan.channels
    assert 0 < plan.flops < plan.full_flops
