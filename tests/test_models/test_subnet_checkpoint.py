"""Checkpoints into a subnet model: mmrazor's ``architecture.`` layout is
mapped, and whatever does not fit is refused in one line naming the key or
shape."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from projects.dmcp.models.subnet_checkpoint import (
    SubnetCheckpointCheck,
    map_subnet_state_dict,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def _state(prefix: str = '', width: int = 4) -> OrderedDict:
    torch.manual_seed(width)
    model = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width))
    return OrderedDict((prefix + k, v) for k, v in model.state_dict().items())


def test_own_keys_load_unchanged() -> None:
    state = _state()
    mapped = map_subnet_state_dict(state, _model().state_dict(), 'a.yaml')
    assert list(mapped) == list(state)


def test_mmrazor_algorithm_layout_is_mapped() -> None:
    state = _state('architecture.')
    state['mutator.arch_params.0'] = torch.zeros(3)
    state['distiller.x'] = torch.zeros(1)
    model = _model()
    SubnetCheckpointCheck.attach(model, 'a.yaml')
    model.load_state_dict(state)
    assert torch.equal(model[0].weight, state['architecture.0.weight'])


def test_missing_key() -> None:
    state = _state()
    del state['1.running_var']
    with pytest.raises(ValueError) as info:
        map_subnet_state_dict(state, _model().state_dict(), 'a.yaml')
    assert str(info.value) == (
        'checkpoint key 1.running_var: missing; the subnet built from '
        'a.yaml needs it (a checkpoint of another model?)'
    )


def test_unexpected_key() -> None:
    state = _state()
    state['head.fc.weight'] = torch.zeros(2)
    with pytest.raises(ValueError, match=r'^checkpoint key head\.fc\.weight'):
        map_subnet_state_dict(state, _model().state_dict(), 'a.yaml')


def test_other_shape() -> None:
    with pytest.raises(ValueError) as info:
        map_subnet_state_dict(_state(width=5), _model().state_dict(), 'a.yaml')
    assert str(info.value) == (
        'checkpoint key 0.weight: shape (5, 3, 3, 3) in the checkpoint, '
        '(4, 3, 3, 3) in the subnet built from a.yaml (a checkpoint of '
        'another subnet?)'
    )


def test_supernet_checkpoint_is_named() -> None:
    state = _state('architecture.', width=8)
    state['mutator.alpha.0'] = torch.zeros(3)
    state['sampler_state'] = torch.zeros(5, dtype=torch.uint8)
    model = _model()
    SubnetCheckpointCheck.attach(model, 'a.yaml')
    with pytest.raises(ValueError, match='a search \\(supernet\\) checkpoint'):
        model.load_state_dict(state)
