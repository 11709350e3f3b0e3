"""The tracer on layouts beyond channels-first convolutions: channel-last
linear layers, channel reductions, parameter views, patches folded into the
batch, mmcv's padded convolutions and units narrower than ``num_groups``."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
from torch import nn

from projects.dmcp.models import (
    DMCPChannelMutator,
    build_subnet,
    count_flops,
    dump_subnet,
)
from projects.dmcp.models.tracer import find_units, trace_channels

SHAPE = (3, 8, 8)


class ChannelLastMLP(nn.Module):
    """ConvNeXt-style block: depthwise conv, then an MLP on channel-last
    features whose output is scaled by a layer-scale parameter."""

    def __init__(self, grn: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 8)
        self.gamma = nn.Parameter(torch.ones(8))
        self.grn = grn
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = F.gelu(self.fc1(x.permute(0, 2, 3, 1)))
        if self.grn:  # the channel statistic of ConvNeXt V2's GRN
            gx = torch.norm(y, p=2, dim=(1, 2), keepdim=True)
            y = y * (gx / (gx.mean(dim=-1, keepdim=True) + 1e-6))
        y = self.fc2(y).permute(0, 3, 1, 2)
        x = x + y * self.gamma.view(1, -1, 1, 1)
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize('grn', [False, True])
def test_channel_last_linear_hidden_width_is_a_unit(grn):
    model = ChannelLastMLP(grn)
    trace = trace_channels(model, SHAPE)
    units = {u.name: u for u in find_units(trace)}
    assert list(units) == ['fc1']
    assert units['fc1'].consumers == ['fc2']
    # the layer scale's view keeps the residual stream whole
    why = trace.fixed_reason(trace.layer('stem').out_node)
    assert why == 'mul with parameter of the model'

    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=4))
    mutator.prepare_from_supernet(model, SHAPE)
    with mutator.markov_scaling():  # scales the last dim of fc1's output
        out = model(torch.randn(2, *SHAPE))
    out.sum().backward()
    assert mutator.units[0].alpha.grad is not None
    choices = {'fc1': 16}
    mutator.set_subnet(choices)
    assert count_flops(model, SHAPE) == mutator.subnet_flops(choices)


def test_folded_patches_are_counted_per_sample():
    """MobileViT folds patches into the batch dim: the FLOPs table counts
    every patch, as running the model does."""

    class Folded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            x = self.conv(x).reshape(n * 4, 8, 4, 4)  # 4 patches per image
            return self.fc(x.flatten(2).transpose(1, 2)).sum()

    model = Folded()
    trace = trace_channels(model, SHAPE)
    assert trace.layer('conv').out_spatial == 64
    assert trace.layer('fc').out_spatial == 64


def test_adaptive_padding_conv_prunes_and_keeps_its_padding(tmp_path):
    model = nn.Sequential(
        Conv2dAdaptivePadding(3, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        Conv2dAdaptivePadding(8, 4, 3, stride=2),
    )
    x = torch.randn(1, *SHAPE)
    with torch.no_grad():
        before = model.eval()(x)
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=4))
    fresh = copy.deepcopy(model)
    mutator.prepare_from_supernet(model, SHAPE)
    assert mutator.unit_names == ['0']
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), before, atol=1e-6)
    choices = {'0': 6}
    path = tmp_path / 'subnet.yaml'
    dump_subnet(str(path), mutator.layer_channels(choices))
    pruned = build_subnet(fresh, str(path), SHAPE)
    assert isinstance(pruned[0], Conv2dAdaptivePadding)
    assert pruned[0].out_channels == 6
    assert pruned(x).shape == before.shape == (1, 4, 2, 2)
    assert count_flops(pruned, SHAPE) == mutator.subnet_flops(choices)


def test_units_narrower_than_num_groups_are_kept_whole(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1),  # 4 channels < 5 groups: kept whole
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 10, 1),
        nn.BatchNorm2d(10),
        nn.Conv2d(10, 2, 1),
    )
    fresh = copy.deepcopy(model)
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=5))
    mutator.prepare_from_supernet(model, SHAPE)
    assert mutator.unit_names == ['2']
    assert [s.name for s in mutator.whole_specs] == ['0']
    channels = mutator.layer_channels({'2': 6})
    assert channels == {'0': 4, '2': 6}
    path = tmp_path / 'subnet.yaml'
    dump_subnet(str(path), channels)
    pruned = build_subnet(fresh, str(path), SHAPE)
    assert count_flops(pruned, SHAPE) == mutator.subnet_flops({'2': 6})
