"""read_model_config on the three kinds of config the tools accept."""

import pytest
from mmengine.config import Config

from projects.dmcp.model_config import model_kind, read_model_config
from projects.dmcp.models.subnet_file import DEFAULT_SUBNET
from tests.helpers import DMCP_CONFIGS

CONFIGS = DMCP_CONFIGS


@pytest.mark.parametrize(
    'type_, kind',
    [
        ('DMCP', 'DMCP'),
        ('mmrazor.DMCP', 'DMCP'),
        ('mmrazor.DMCPSubnet', 'DMCPSubnet'),
        ('ImageClassifier', 'plain'),
        ('mmpretrain.DMCPish', 'plain'),
    ],
)
def test_model_kind(type_: str, kind: str) -> None:
    assert model_kind(dict(type=type_)) == kind


def test_model_kind_of_a_class() -> None:
    class DMCPSubnet:
        pass

    assert model_kind(dict(type=DMCPSubnet)) == 'DMCPSubnet'


def test_search_config() -> None:
    cfg = Config.fromfile(
        str(CONFIGS / 'dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py')
    )
    spec = read_model_config(cfg)
    assert spec.kind == 'DMCP'
    assert spec.input_shape == (1, 28, 28)
    assert spec.subnet is None
    assert spec.architecture['type'] == 'ImageClassifier'
    assert spec.architecture['backbone']['type'] == 'ResNet_CIFAR'
    assert spec.architecture['_scope_'] == 'mmpretrain'
    assert cfg.model.architecture.get('_scope_') is None  # not modified


def test_subnet_config_defaults_and_preprocessor() -> None:
    cfg = Config.fromfile(str(CONFIGS / 'dmcp_resnet18_subnet_32xb64_in1k.py'))
    cfg.model.pop('subnet', None)
    cfg.model.units = dict(foo=1)
    spec = read_model_config(cfg)
    assert spec.kind == 'DMCPSubnet'
    assert spec.subnet == DEFAULT_SUBNET
    assert spec.units == dict(foo=1)
    assert spec.architecture['data_preprocessor'] == cfg.data_preprocessor


def test_plain_config() -> None:
    cfg = Config(
        dict(
            model=dict(type='ImageClassifier', backbone=dict(type='ResNet')),
            default_scope='mmpretrain',
        )
    )
    spec = read_model_config(cfg)
    assert spec.kind == 'plain'
    assert spec.architecture == dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet'),
        _scope_='mmpretrain',
    )
    assert spec.input_shape is spec.units is spec.subnet is None
