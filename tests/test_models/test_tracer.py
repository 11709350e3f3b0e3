"""Tests of the channel tracer and unit finder (``tracer.py``)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from projects.dmcp.models.tracer import find_units, trace_channels
from tests.helpers.models import ARCH_NAMES, build_classifier, forward_tensor

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')


class LayerScale(nn.Module):
    """A learnable per-channel multiplier (as in ConvNeXt / mmpretrain)."""

    def __init__(self, channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.gamma


class Toy(nn.Module):
    """conv-bn-relu, a residual add, a concat, a layer-scale multiply."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 6, 1)  # concatenated with conv4
        self.conv4 = nn.Conv2d(8, 4, 1)
        self.conv5 = nn.Conv2d(10, 12, 1)  # scaled by a layer-scale param
        self.scale = LayerScale(12)
        self.conv6 = nn.Conv2d(12, 16, 1)
        self.bn6 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)  # depthwise
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        b = F.relu(self.bn2(self.conv2(a)) + a)  # residual: conv1 ~ conv2
        c = torch.cat([self.conv3(b), self.conv4(b)], dim=1)
        d = self.scale(self.conv5(c))
        e = self.dw(F.relu(self.bn6(self.conv6(d))))
        return self.fc(e.mean(dim=(2, 3)))


@pytest.fixture
def toy_units():
    model = Toy()
    trace = trace_channels(model, (3, 8, 8))
    return model, trace, {u.name: u for u in find_units(trace)}


def test_toy_trace_records_layers(toy_units):
    model, trace, _ = toy_units
    names = [r.name for r in trace.layers]
    assert names == [
        'conv1',
        'conv2',
        'conv3',
        'conv4',
        'conv5',
        'conv6',
        'dw',
        'fc',
    ]
    conv1 = trace.layer('conv1')
    assert (conv1.kind, conv1.in_channels, conv1.out_channels) == (
        'conv',
        3,
        8,
    )
    assert conv1.kernel_area == 9 and conv1.out_spatial == 64
    assert conv1.norm == 'bn1' and conv1.macs == 8 * 3 * 9 * 64
    assert trace.layer('dw').depthwise
    assert trace.layer('dw').in_node == trace.layer('dw').out_node
    assert trace.layer('fc').kind == 'linear'
    assert set(trace.norms) == {'bn1', 'bn2', 'bn6'}
    with pytest.raises(KeyError):
        trace.layer('nope')
    assert model.training  # the mode is restored


def test_toy_residual_add_couples_layers(toy_units):
    _, trace, units = toy_units
    assert trace.find(trace.layer('conv1').out_node) == trace.find(
        trace.layer('conv2').out_node
    )
    unit = units['conv1']
    assert unit.producers == ['conv1', 'conv2']
    assert unit.num_channels == 8
    assert unit.consumers == ['conv2', 'conv3', 'conv4']
    assert unit.scale_points == ['bn1', 'bn2']
    assert 'conv2' not in units


def test_toy_concat_inputs_are_fixed(toy_units):
    _, trace, units = toy_units
    for name in ('conv3', 'conv4'):
        reason = trace.fixed_reason(trace.layer(name).out_node)
        assert reason is not None and 'cat' in reason
        assert name not in units
    # conv5 reads the concatenation: its input is fixed as well
    assert trace.fixed_reason(trace.layer('conv5').in_node) is not None


def test_toy_layer_scale_parameter_fixes_unit(toy_units):
    _, trace, units = toy_units
    reason = trace.fixed_reason(trace.layer('conv5').out_node)
    assert reason is not None and 'parameter of scale' in reason
    assert 'conv5' not in units


def test_root_parameter_multiply_fixes_unit():
    class RootScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 1)
            self.conv2 = nn.Conv2d(4, 4, 1)
            self.gamma = nn.Parameter(torch.ones(1, 4, 1, 1))
            self.conv3 = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.conv3(self.conv2(self.conv1(x)) * self.gamma)

    trace = trace_channels(RootScale(), (3, 4, 4))
    assert [u.name for u in find_units(trace)] == ['conv1']
    reason = trace.fixed_reason(trace.layer('conv2').out_node)
    assert reason is not None and 'parameter' in reason


def test_toy_depthwise_follows_and_output_fixed(toy_units):
    _, trace, units = toy_units
    unit = units['conv6']
    assert unit.producers == ['conv6']
    assert unit.followers == ['dw']
    assert unit.consumers == ['fc']  # the depthwise conv is no consumer
    assert unit.scale_points == ['bn6', 'dw']  # dw has no norm: itself
    # the network input and the model output are never pruned
    assert trace.fixed_reason(trace.layer('conv1').in_node) == (
        'network input'
    )
    assert trace.fixed_reason(trace.layer('fc').out_node) == 'model output'
    assert 'fc' not in units
    assert sorted(units) == ['conv1', 'conv6']


def test_toy_explicit_units():
    model = Toy()
    trace = trace_channels(model, (3, 8, 8))
    with pytest.raises(ValueError, match='nope'):
        find_units(trace, groups=[['conv1', 'nope']])


def test_trace_uses_custom_forward_and_restores_mode():
    model = Toy().eval()
    seen = []

    def forward(m, x):
        seen.append(tuple(x.shape))
        return m(x)

    trace = trace_channels(model, (3, 6, 6), forward)
    assert seen == [(1, 3, 6, 6)]
    assert trace.input_shape == (3, 6, 6)
    assert not model.training


def test_unsliceable_layers_are_fixed():
    class Grouped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 1)
            self.conv2 = nn.Conv2d(8, 8, 3, groups=2, padding=1)
            self.conv3 = nn.Conv2d(8, 4, 1)
            self.gn = nn.GroupNorm(2, 4)
            self.conv4 = nn.Conv2d(4, 6, 1)

        def forward(self, x):
            x = self.conv2(self.conv1(x))
            x = self.gn(self.conv3(x))
            return self.conv4(x).flatten(1)

    model = Grouped()
    trace = trace_channels(model, (3, 5, 5))
    units = {u.name for u in find_units(trace)}
    # grouped conv: neither its input (conv1) nor output can be sliced;
    # GroupNorm takes parameters of its own; conv4 feeds the output.
    assert units == set()
    assert 'cannot be sliced' in trace.fixed_reason(
        trace.layer('conv1').out_node
    )
    assert trace.fixed_reason(trace.layer('conv3').out_node) is not None


# ------------------------------------------------------------- real networks
@pytest.fixture(scope='module')
def traced():
    cache = {}

    def get(arch):
        if arch not in cache:
            model = build_classifier(arch)
            trace = trace_channels(model, (3, 32, 32), forward_tensor)
            cache[arch] = (model, trace, find_units(trace))
        return cache[arch]

    return get


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_input_and_classifier_output_never_pruned(traced, arch):
    model, trace, units = traced(arch)
    stem = trace.layers[0]
    assert stem.in_channels == 3
    assert trace.fixed_reason(stem.in_node) == 'network input'
    head = trace.layer('head.fc')
    assert trace.fixed_reason(head.out_node) == 'model output'
    for unit in units:
        assert 'head.fc' not in unit.producers
        assert stem.name not in unit.consumers
    # every conv/linear of the model was traced exactly once
    layers = [
        n
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    assert [r.name for r in trace.layers] == layers
    # each prunable layer output belongs to exactly one unit
    owners = [n for u in units for n in u.producers + u.followers]
    assert len(owners) == len(set(owners))
    assert set(owners) == {r.name for r in trace.layers} - {'head.fc'}


def test_resnet50_stage_outputs_share_one_unit(traced):
    model, trace, units = traced('resnet50')
    by_producer = {p: u for u in units for p in u.producers}
    widths = {1: 256, 2: 512, 3: 1024, 4: 2048}
    depths = {1: 3, 2: 4, 3: 6, 4: 3}
    for stage, blocks in depths.items():
        layer = f'backbone.layer{stage}'
        expected = {f'{layer}.{b}.conv3' for b in range(blocks)}
        expected.add(f'{layer}.0.downsample.0')
        unit = by_producer[f'{layer}.0.conv3']
        assert set(unit.producers) == expected
        assert unit.num_channels == widths[stage]
        assert unit.followers == []
        # the unit feeds the next blocks' conv1 and the next stage
        for b in range(1, blocks):
            assert f'{layer}.{b}.conv1' in unit.consumers
        # the scale sits after each producer's batch norm (Eq. 7)
        assert f'{layer}.0.downsample.1' in unit.scale_points
        assert f'{layer}.0.bn3' in unit.scale_points
        # the inner convs of each block are units of their own
        for b in range(blocks):
            for conv in ('conv1', 'conv2'):
                inner = by_producer[f'{layer}.{b}.{conv}']
                assert inner.producers == [f'{layer}.{b}.{conv}']
    assert by_producer['backbone.layer4.0.conv3'].consumers[-1] == 'head.fc'
    # stem + 16 blocks * 2 inner convs + 4 stage units
    assert len(units) == 1 + 16 * 2 + 4


def test_resnet18_units(traced):
    _, _, units = traced('resnet18')
    by_producer = {p: u for u in units for p in u.producers}
    # in a BasicBlock the stem feeds layer1 through identity shortcuts
    stem = by_producer['backbone.conv1']
    assert set(stem.producers) == {
        'backbone.conv1',
        'backbone.layer1.0.conv2',
        'backbone.layer1.1.conv2',
    }
    for stage in (2, 3, 4):
        layer = f'backbone.layer{stage}'
        assert set(by_producer[f'{layer}.0.conv2'].producers) == {
            f'{layer}.0.conv2',
            f'{layer}.0.downsample.0',
            f'{layer}.1.conv2',
        }
    assert len(units) == 4 + 8


@pytest.mark.parametrize('arch', ['mbv2_1.0', 'mbv2_1.5'])
def test_mobilenetv2_units(traced, arch):
    model, trace, units = traced(arch)
    by_producer = {p: u for u in units for p in u.producers}
    by_follower = {f: u for u in units for f in u.followers}
    backbone = model.backbone
    previous_projection = 'backbone.conv1.conv'  # the stem feeds layer1
    for layer_name in backbone.layers[:-1]:  # the last one is conv2
        blocks = getattr(backbone, layer_name)
        shared = []
        for b, block in enumerate(blocks):
            prefix = f'backbone.{layer_name}.{b}.conv'
            convs = [f'{prefix}.{i}.conv' for i in range(len(block.conv))]
            *expand, depthwise, projection = (
                convs if len(convs) == 3 else [None] + convs
            )
            expand = expand[0]
            # the depthwise conv follows the unit of its input: the expand
            # conv, or (expand ratio 1) the previous projection / stem
            source = expand or previous_projection
            assert by_follower[depthwise] is by_producer[source]
            assert depthwise not in by_producer
            if expand:
                assert by_producer[expand].producers == [expand]
                assert by_producer[expand].consumers == [projection]
            if block.use_res_connect:
                shared.append(projection)
            else:
                if len(shared) > 1:
                    assert set(by_producer[shared[0]].producers) == set(shared)
                shared = [projection]
            previous_projection = projection
        # projections joined by residual additions share one unit
        unit = by_producer[shared[0]]
        assert set(unit.producers) == set(shared)
        assert unit.followers == []
    last = by_producer['backbone.conv2.conv']
    assert last.consumers == ['head.fc']
    assert last.num_channels == (1280 if arch == 'mbv2_1.0' else 1920)
    # the residual layers of MobileNetV2: layer2..layer6 have > 1 block
    multi = [u for u in units if len(u.producers) > 1]
    assert len(multi) == 5


def test_trace_a_float64_model():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)
    ).double()
    trace = trace_channels(model, (3, 4, 4))
    assert [u.name for u in find_units(trace)] == ['0']
