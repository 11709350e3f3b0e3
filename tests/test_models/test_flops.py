"""Tests of the FLOPs table (Eq. 9-12), the counter and the FLOPs strings
(``flops.py``)."""

import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from torch import nn

from projects.dmcp.models import (
    DMCPChannelMutator,
    FlopsTable,
    count_flops,
    count_params,
    format_flops,
    parse_flops,
)
from tests.helpers.models import (
    ARCH_NAMES,
    build_classifier,
    forward_tensor,
    prepared,
)

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')

# operators of mmengine's analysis that are convolutions or linear layers
CONV_LINEAR_OPS = ('conv', 'linear', 'addmm', 'matmul', 'bmm', 'einsum')


class TensorMode(nn.Module):
    """Calls an mmpretrain classifier with ``mode='tensor'``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return forward_tensor(self.model, x)


def mmengine_conv_linear_flops(model, size):
    analyzer = FlopAnalyzer(
        TensorMode(model).eval(), (torch.zeros(1, 3, size, size),)
    )
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    by_op = analyzer.by_operator()
    return sum(by_op.get(op, 0) for op in CONV_LINEAR_OPS)


@pytest.fixture(scope='module')
def full_models():
    return {
        'resnet50': build_classifier('resnet50'),
        'mbv2_1.0': build_classifier('mbv2_1.0'),
    }


@pytest.mark.parametrize(
    'arch,reference', [('resnet50', 4.09e9), ('mbv2_1.0', 300.8e6)]
)
def test_counter_matches_published_figures_and_mmengine(
    full_models, arch, reference
):
    model = full_models[arch]
    model.train()
    flops = count_flops(model, (3, 224, 224), forward_tensor)
    assert model.training  # count_flops restores the mode
    assert flops == pytest.approx(reference, rel=0.005)
    mmengine_flops = mmengine_conv_linear_flops(model, 224)
    assert flops == pytest.approx(mmengine_flops, rel=0.005)


def test_counter_on_a_pruned_subnet_matches_mmengine():
    model, mutator = prepared('resnet18', size=64)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.normal_(0.0, 1.0, generator=gen)
    mutator.set_subnet('direct', gen)
    flops = count_flops(model, (3, 64, 64), forward_tensor)
    assert flops < mutator.flops_of('max')
    assert flops == pytest.approx(
        mmengine_conv_linear_flops(model, 64), rel=0.005
    )


def test_counter_counts_conv_and_linear_macs_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 8*3*9 * 4*4
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # 8*1*9 * 4*4
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),  # 8*5
    )
    want = 8 * 3 * 9 * 16 + 8 * 9 * 16 + 8 * 5
    assert count_flops(model, (3, 8, 8)) == want
    assert count_params(model) == sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------- FlopsTable
@pytest.fixture(scope='module')
def prepared_models():
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = prepared(arch, size=64)
        return cache[arch]

    return get


def eq9_11_by_hand(model, mutator, channels):
    """E(N_FLOPs) of Eq. 9-12 from the module attributes, the input sizes
    seen by hooks and the units' producer/follower/consumer lists."""
    sizes = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(
                m.register_forward_pre_hook(
                    lambda mod, args, name=name: sizes.__setitem__(
                        name, tuple(args[0].shape)
                    )
                )
            )
    mutator.set_subnet('max')
    with torch.no_grad():
        forward_tensor(model.eval(), torch.zeros(1, *mutator.input_shape))
    for h in hooks:
        h.remove()
    e_out, e_in, follows = {}, {}, {}
    for spec, c in zip(mutator.specs, channels):
        for name in spec.producers:
            e_out[name] = c
        for name in spec.consumers:
            e_in[name] = c
        for name in spec.followers:
            follows[name] = c
    total = torch.zeros((), dtype=torch.float64)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            total = total + e_in.get(name, m.in_features) * e_out.get(
                name, m.out_features
            )
        elif isinstance(m, nn.Conv2d):
            h_in = sizes[name][2]
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            channel_op = ((h_in + 2 * p - k) // s + 1) ** 2 * k * k  # Eq. 11
            if name in follows:  # depthwise: groups = E(in) (Eq. 10)
                mult = m.out_channels // m.in_channels
                e_o = follows[name] * mult
                total = total + e_o * channel_op  # E(in)/E(in) == 1
            else:
                e_i = e_in.get(name, m.in_channels)
                e_o = e_out.get(name, m.out_channels)
                if m.groups > 1:  # a fixed depthwise conv
                    e_i = e_i / m.groups
                total = total + e_o * e_i * channel_op  # Eq. 9-10
    return total


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_flops_table_equals_eq9_12_by_hand(prepared_models, arch):
    model, mutator = prepared_models(arch)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.normal_(0.0, 2.0, generator=gen)
    expected = mutator.expected_channels().double()
    got = mutator.flops_table(expected)
    want = eq9_11_by_hand(model, mutator, expected)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    # full channels: the full network
    full = torch.tensor([float(u.num_channels) for u in mutator.units])
    assert int(mutator.flops_table(full)) == count_flops(
        model, (3, 64, 64), forward_tensor
    )


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_flops_table_exact_for_integer_choices(prepared_models, arch):
    model, mutator = prepared_models(arch)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.normal_(0.0, 1.0, generator=gen)
    for mode in ('direct', 'direct', 'min', 'expected'):
        choices = mutator.set_subnet(mode, gen)
        c = torch.tensor([choices[n] for n in mutator.unit_names])
        table = mutator.flops_table(c)
        counted = count_flops(model, (3, 64, 64), forward_tensor)
        assert float(table) == counted, mode
        assert mutator.subnet_flops(choices) == counted
        layer = mutator.flops_table.layer_flops(c)
        assert layer.shape == (len(mutator.trace.layers),)
        assert mutator.flops_table.layer_names == [
            r.name for r in mutator.trace.layers
        ]
    mutator.set_subnet('max')


def test_flops_table_is_differentiable_and_checks_shape(prepared_models):
    _, mutator = prepared_models('resnet18')
    table = FlopsTable(mutator.trace, mutator.specs)
    c = torch.tensor(
        [float(u.num_channels) for u in mutator.units], requires_grad=True
    )
    flops = table(c)
    flops.backward()
    assert c.grad is not None and torch.all(c.grad > 0)
    with pytest.raises(ValueError, match='unit channel counts'):
        table(torch.ones(len(mutator.units) + 1))
    # a batch of subnets: one FLOPs figure per row
    rows = torch.stack([c.detach(), c.detach() / 2, torch.ones_like(c)])
    batched = table(rows)
    assert batched.shape == (3,)
    for row, value in zip(rows, batched):
        assert float(table(row)) == float(value)
    assert table.layer_flops(rows).shape == (3, len(table.layer_names))


# ------------------------------------------------------------------ strings
@pytest.mark.parametrize(
    'text,value',
    [
        ('2.2G', 2_200_000_000),
        ('300M', 300_000_000),
        ('4.09G', 4_090_000_000),
        ('1.5e9', 1_500_000_000),
        ('150k', 150_000),
        ('0.5T', 500_000_000_000),
        (' 300 M ', 300_000_000),
        ('1.1GFLOPs', 1_100_000_000),
        ('12345', 12345),
        (300_000_000, 300_000_000),
        (2.2e9, 2_200_000_000),
    ],
)
def test_parse_flops(text, value):
    got = parse_flops(text)
    assert got == value
    assert isinstance(got, int)


@pytest.mark.parametrize(
    'text', ['', 'abc', '2.2X', '1.2.3G', 'G', '-1G', '2.2 G G', 'nan']
)
def test_parse_flops_rejects_bad_strings(text):
    with pytest.raises(ValueError, match='cannot read FLOPs') as info:
        parse_flops(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize('value', [None, [1], True])
def test_parse_flops_rejects_other_types(value):
    with pytest.raises((TypeError, ValueError)):
        parse_flops(value)


@pytest.mark.parametrize(
    'value,text',
    [
        (4_089_184_256, '4.09G'),
        (300_774_272, '300.8M'),
        (1500, '1.5K'),
        (12, '12'),
    ],
)
def test_format_flops(value, text):
    assert format_flops(value) == text
    assert parse_flops(text) == pytest.approx(value, rel=0.005)


def test_count_flops_of_a_float64_model():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)).double()
    assert count_flops(model, (3, 4, 4)) == 16 * (4 * 3 + 2 * 4)


def _multiplier_net():
    # conv -> bn -> depthwise with channel multiplier 2 -> bn -> conv -> bn
    # -> conv: the unit feeding the multiplier conv is kept whole, the conv
    # after it stays prunable
    return nn.Sequential(
        nn.Conv2d(3, 8, 1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 16, 3, padding=1, groups=8),
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 8, 1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 4, 1),
    )


def test_depthwise_channel_multiplier_keeps_its_unit_whole():
    model = _multiplier_net()
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=4))
    mutator.prepare_from_supernet(model, (3, 4, 4))
    assert mutator.unit_names == ['4']
    reason = mutator.trace.fixed_reason(mutator.trace.layer('0').out_node)
    assert 'multiplier 2' in reason


@pytest.mark.parametrize('width', [8, 5, 2])
def test_flops_table_after_depthwise_channel_multiplier(width):
    model = _multiplier_net()
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=4))
    mutator.prepare_from_supernet(model, (3, 4, 4))
    mutator.set_subnet({'4': width})
    assert mutator.subnet_flops() == count_flops(model, (3, 4, 4))
    assert mutator.subnet_flops() == 16 * (
        8 * 3 + 16 * 9 + width * 16 + 4 * width
    )
