"""Tests of DMCPChannelMutator (``mutator.py``): subnets, expected FLOPs
(Eq. 12), Direct/Expected Sampling (Section 3.3) and the Markov scaling of
Eq. 7 (Fig. 2b)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from projects.dmcp.models import (
    SAMPLING_MODES,
    DMCPChannelMutator,
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    MarkovChannelUnit,
    count_flops,
    reference_path,
)
from projects.dmcp.registry import MODELS
from tests.helpers.models import (
    ARCH_NAMES,
    bn_state,
    build_classifier,
    closed_form_alpha_grad,
    forward_tensor,
    prepared,
    set_alphas,
    set_binary_alphas,
)

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')


@pytest.fixture(scope='module')
def nets():
    """(model, mutator, pristine copy) per arch, traced at 64x64; built once
    per module, and reset (weights, BN stats, subnet, alphas, grads) on
    every use."""
    cache = {}

    def get(arch):
        if arch not in cache:
            model = build_classifier(arch)
            pristine = copy.deepcopy(model)
            mutator = DMCPChannelMutator()
            mutator.prepare_from_supernet(model, (3, 64, 64), forward_tensor)
            state = copy.deepcopy(pristine.state_dict())
            cache[arch] = (model, mutator, pristine, state)
        model, mutator, pristine, state = cache[arch]
        model.load_state_dict(state)
        pristine.load_state_dict(state)
        mutator.set_subnet('max')
        set_alphas(mutator, 0.0)
        for p in list(model.parameters()) + mutator.arch_parameters():
            p.grad = None
        return model, mutator, pristine

    return get


def random_alphas(mutator, gen, std=1.5):
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.normal_(0.0, std, generator=gen)


def record_widths(model, names):
    """Forward hooks recording each named layer's output channels."""
    widths, hooks = {}, []
    modules = dict(model.named_modules())
    for name in names:
        hooks.append(
            modules[name].register_forward_hook(
                lambda m, a, out, name=name: widths.__setitem__(
                    name, out.shape[1]
                )
            )
        )
    return widths, hooks


# ------------------------------------------------------------------ prepare
def test_registered_and_default_config():
    mutator = MODELS.build(dict(type='DMCPChannelMutator'))
    assert isinstance(mutator, DMCPChannelMutator)
    assert mutator.channel_unit_cfg == dict(
        type='DMCPChannelUnit', num_groups=10
    )
    assert SAMPLING_MODES == ('max', 'min', 'direct', 'expected')


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_prepare_converts_layers_in_place(nets, arch):
    model, mutator, pristine = nets(arch)
    assert list(model.state_dict()) == list(pristine.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            assert type(module) is DynamicConv2d, name
        elif isinstance(module, nn.BatchNorm2d):
            assert type(module) is DynamicBatchNorm2d, name
        elif isinstance(module, nn.Linear):
            assert type(module) is DynamicLinear, name
    assert len(mutator.units) == len(mutator.specs) > 0
    assert mutator.unit_names == [s.name for s in mutator.specs]
    assert all(isinstance(u, MarkovChannelUnit) for u in mutator.units)
    assert mutator.alphas().shape == (len(mutator.units), 9)
    assert mutator.group_sizes().sum(1).tolist() == [
        s.num_channels for s in mutator.specs
    ]
    params = mutator.arch_parameters()
    assert all(p is u.alpha for p, u in zip(params, mutator.units))
    # the mutator owns only the alphas; the model keeps its parameters
    assert {id(p) for p in mutator.parameters()} == {id(p) for p in params}
    assert mutator.current_choices() == mutator.sample_choices('max')


def test_prepare_rejects_a_model_without_prunable_channels():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten())
    with pytest.raises(ValueError, match='no prunable channels'):
        DMCPChannelMutator().prepare_from_supernet(model, (3, 4, 4))


def test_prepare_rejects_more_groups_than_channels():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)
    )
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=5))
    with pytest.raises(ValueError, match='more than the 4 channels'):
        mutator.prepare_from_supernet(model, (3, 4, 4))


# ------------------------------------------------------------------ choices
def test_sampling_modes_choices(nets):
    _, mutator, _ = nets('resnet18')
    units = list(mutator.units)
    assert mutator.sample_choices('max') == {
        u.name: u.num_channels for u in units
    }
    assert mutator.sample_choices('min') == {u.name: u.ends[0] for u in units}
    gen = torch.Generator().manual_seed(0)
    random_alphas(mutator, gen)
    a = mutator.sample_choices('direct', torch.Generator().manual_seed(4))
    b = mutator.sample_choices('direct', torch.Generator().manual_seed(4))
    assert a == b
    assert all(a[u.name] in u.ends for u in units)
    expected = mutator.sample_choices('expected')
    assert expected == {u.name: u.expected_choice() for u in units}
    for u in units:
        e = float(u.expected_channels())
        assert abs(expected[u.name] - e) <= 0.5
    with pytest.raises(ValueError, match='unknown sampling mode'):
        mutator.sample_choices('random')


def test_set_subnet_validates_dicts(nets):
    _, mutator, _ = nets('resnet18')
    choices = mutator.sample_choices('min')
    assert mutator.set_subnet(dict(choices)) == choices
    assert mutator.current_choices() == choices
    missing = dict(choices)
    missing.pop(mutator.unit_names[0])
    with pytest.raises(KeyError, match='missing'):
        mutator.set_subnet(missing)
    with pytest.raises(KeyError, match='unknown'):
        mutator.set_subnet(dict(choices, nope=3))
    name = mutator.unit_names[0]
    for bad in (0, mutator.units[0].num_channels + 1):
        with pytest.raises(ValueError, match='outside'):
            mutator.set_subnet(dict(choices, **{name: bad}))
    # a failed call leaves the subnet as it was
    assert mutator.current_choices() == choices


def test_layer_channels_of_coupled_layers(nets):
    model, mutator, _ = nets('mbv2_1.0')
    gen = torch.Generator().manual_seed(1)
    random_alphas(mutator, gen)
    choices = mutator.set_subnet('direct', gen)
    layers = mutator.layer_channels()
    for spec in mutator.specs:
        for name in spec.producers + spec.followers:
            assert layers[name] == choices[spec.name]
    assert 'head.fc' not in layers
    assert mutator.layer_channels(mutator.sample_choices('max')) == {
        n: m.out_channels for n, m in model.named_modules() if n in layers
    }


# --------------------------------------------------------- running subnets
@pytest.mark.parametrize('mode', SAMPLING_MODES)
@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_subnets_run_forward_and_backward(nets, arch, mode):
    model, mutator, _ = nets(arch)
    gen = torch.Generator().manual_seed(ARCH_NAMES.index(arch))
    random_alphas(mutator, gen, std=1.0)
    choices = mutator.set_subnet(mode, gen)
    if mode == 'min':
        assert choices == mutator.sample_choices('min')
    layers = mutator.layer_channels()
    widths, hooks = record_widths(model, layers)
    model.train()
    before = bn_state(model)
    x = torch.randn(2, 3, 32, 32)
    try:
        out = forward_tensor(model, x)
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (2, 1000)
    # every pruned layer really ran on its prefix
    assert widths == layers
    out.logsumexp(1).mean().backward()
    modules = dict(model.named_modules())
    after = bn_state(model)
    for spec in mutator.specs:
        width = choices[spec.name]
        for name in spec.producers:
            grad = modules[name].weight.grad
            assert grad is not None, name
            assert grad[:width].abs().sum() > 0, name
            assert torch.all(grad[width:] == 0), name  # unused filters
        for name in spec.consumers:
            grad = modules[name].weight.grad
            assert torch.all(grad[:, width:] == 0), name  # unused inputs
        # the BNs of the unit's layers moved only their first channels
        for name in spec.scale_points:
            if not isinstance(modules[name], nn.BatchNorm2d):
                continue
            key = f'{name}.running_mean'
            assert not torch.equal(after[key][:width], before[key][:width])
            assert torch.equal(after[key][width:], before[key][width:])
    assert all(p.grad is None for p in mutator.arch_parameters())
    mutator.set_subnet('max')


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_max_subnet_equals_unwrapped_model(nets, arch):
    model, mutator, pristine = nets(arch)
    # run a smaller subnet first: no state may leak into the max subnet
    mutator.set_subnet('min')
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        forward_tensor(model, x)
        mutator.set_subnet('max')
        got = forward_tensor(model, x)
        want = forward_tensor(pristine.eval(), x)
    assert torch.equal(got, want)
    # the same in train mode (batch statistics); both update their running
    # stats identically
    model.train()
    pristine.train()
    torch.testing.assert_close(
        forward_tensor(model, x),
        forward_tensor(pristine, x),
        rtol=0,
        atol=1e-6,
    )
    for (ka, va), (kb, vb) in zip(
        model.state_dict().items(), pristine.state_dict().items()
    ):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=1e-6)


# ------------------------------------------------------------ expected FLOPs
@pytest.mark.parametrize(
    'arch,size',
    [
        ('resnet18', 224),
        ('resnet50', 224),
        ('mbv2_1.0', 224),
        ('mbv2_1.5', 224),
    ],
)
def test_expected_flops_exact_for_binary_transitions(arch, size):
    """Every transition 0 or 1: E(N_FLOPs) (Eq. 12) is the FLOPs of one
    subnet, counted on the real tensors of the sliced model."""
    model, mutator = prepared(arch, size=size)
    shape = (3, size, size)
    gen = torch.Generator().manual_seed(11)
    for _ in range(2):
        set_binary_alphas(mutator, gen)
        choices = {}
        for unit in mutator.units:
            kept = 1
            for a in unit.alpha.tolist():  # leading +50 entries
                if a < 0:
                    break
                kept += 1
            choices[unit.name] = unit.ends[kept - 1]
        expected = mutator.expected_flops()
        assert expected.dtype == torch.float64
        mutator.set_subnet(choices)
        counted = count_flops(model, shape, forward_tensor)
        assert float(expected) == counted
        assert mutator.subnet_flops() == counted
        assert mutator.sample_choices('expected') == choices
        assert mutator.sample_choices('direct', gen) == choices
    set_alphas(mutator, 50.0)
    mutator.set_subnet('max')
    full = count_flops(model, shape, forward_tensor)
    assert float(mutator.expected_flops()) == full == mutator.flops_of('max')
    set_alphas(mutator, -50.0)
    mutator.set_subnet('min')
    assert float(mutator.expected_flops()) == mutator.flops_of('min')
    assert mutator.flops_of('min') == count_flops(model, shape, forward_tensor)


def test_expected_flops_is_differentiable(nets):
    _, mutator, _ = nets('resnet50')
    gen = torch.Generator().manual_seed(0)
    random_alphas(mutator, gen)
    mutator.expected_flops().backward()
    for unit in mutator.units:
        # more probability of keeping a group never lowers E(FLOPs)
        assert torch.all(unit.alpha.grad > 0), unit.name
    assert mutator.flops_of('min') < float(mutator.expected_flops())
    assert float(mutator.expected_flops()) < mutator.flops_of('max')


@pytest.mark.parametrize('arch', ARCH_NAMES)
def test_direct_sampling_mean_flops_matches_expected_flops(nets, arch):
    """Units sample independently and no layer (but a depthwise one, whose
    FLOPs are linear in its unit) reads and writes the same unit, so the
    mean FLOPs of Direct Samples converges to E(N_FLOPs) of Eq. 12."""
    model, mutator, _ = nets(arch)
    trace = mutator.trace
    roots = {
        trace.find(trace.layer(s.producers[0]).out_node) for s in mutator.specs
    }
    for rec in trace.layers:
        if not rec.depthwise:
            same = trace.find(rec.in_node) == trace.find(rec.out_node)
            assert not (same and trace.find(rec.in_node) in roots), rec.name
    gen = torch.Generator().manual_seed(100 + ARCH_NAMES.index(arch))
    random_alphas(mutator, gen, std=1.5)
    expected = float(mutator.expected_flops())
    # 2,000 Direct Samples drawn at once, FLOPs of each subnet
    batch = mutator.sample_direct_batch(2000, gen)
    samples = mutator.flops_table(batch)
    assert samples.shape == (2000,)
    mean = float(samples.mean())
    assert mean == pytest.approx(expected, rel=0.02)
    # the same through the one-subnet API on a few rows
    for row in batch[:20]:
        choices = mutator.choices_from_row(row)
        assert mutator.subnet_flops(choices) == int(mutator.flops_table(row))
    # and the samples really vary between min and max
    low, high = float(samples.min()), float(samples.max())
    assert low < 0.9 * expected < 1.1 * expected < high
    assert mutator.flops_of('min') <= low <= high <= mutator.flops_of('max')


def test_direct_sampling_one_by_one_mean_flops(nets):
    """The per-unit sampler of set_subnet('direct') agrees as well."""
    _, mutator, _ = nets('mbv2_1.0')
    gen = torch.Generator().manual_seed(7)
    random_alphas(mutator, gen, std=1.5)
    expected = float(mutator.expected_flops())
    samples = [
        mutator.subnet_flops(mutator.set_subnet('direct', gen))
        for _ in range(2000)
    ]
    assert sum(samples) / len(samples) == pytest.approx(expected, rel=0.02)
    mutator.set_subnet('max')


def test_sample_direct_batch_matches_the_markov_chain(nets):
    _, mutator, _ = nets('resnet18')
    gen = torch.Generator().manual_seed(9)
    random_alphas(mutator, gen, std=1.0)
    num = 20000
    batch = mutator.sample_direct_batch(num, gen)
    assert batch.shape == (num, len(mutator.units))
    assert batch.dtype == torch.long
    marg = mutator.marginals().detach().double()
    for i, unit in enumerate(mutator.units):
        column = batch[:, i]
        assert set(column.unique().tolist()) <= set(unit.ends)
        # P(group k retained) = P(channels >= ends[k - 1])
        freq = torch.stack(
            [(column >= end).double().mean() for end in unit.ends]
        )
        tol = 4.5 * torch.sqrt(marg[i] * (1 - marg[i]) / num) + 1e-9
        assert torch.all((freq - marg[i]).abs() <= tol), unit.name
    again = mutator.sample_direct_batch(5, torch.Generator().manual_seed(1))
    assert torch.equal(
        again, mutator.sample_direct_batch(5, torch.Generator().manual_seed(1))
    )
    row = mutator.choices_from_row(again[0])
    assert list(row) == mutator.unit_names
    assert mutator.check_choices(row) == row


# ----------------------------------------------------------- Markov scaling
@pytest.mark.parametrize('arch', ['resnet18', 'mbv2_1.0'])
def test_markov_scaling_freezes_bn_and_grads_only_alphas(nets, arch):
    model, mutator, _ = nets(arch)
    gen = torch.Generator().manual_seed(0)
    random_alphas(mutator, gen, std=1.0)
    mutator.set_subnet('min')
    model.train()
    before = bn_state(model)
    x = torch.randn(4, 3, 32, 32)
    with mutator.markov_scaling():
        assert mutator.current_choices() == mutator.sample_choices('max')
        loss = forward_tensor(model, x).logsumexp(1).mean()
        loss.backward(inputs=mutator.arch_parameters())
    after = bn_state(model)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    for name, p in model.named_parameters():
        assert p.grad is None, name
    nonzero = [bool(u.alpha.grad.abs().sum() > 0) for u in mutator.units]
    assert all(u.alpha.grad is not None for u in mutator.units)
    assert sum(nonzero) >= 0.9 * len(nonzero)
    # the previous subnet and normal BN bookkeeping are back
    assert mutator.current_choices() == mutator.sample_choices('min')
    assert all(m.update_stats for m in mutator._norms)


@pytest.mark.parametrize('arch', ['resnet18', 'mbv2_1.0'])
def test_markov_scaling_with_all_marginals_one_is_identity(nets, arch):
    model, mutator, _ = nets(arch)
    set_alphas(mutator, 50.0)
    assert torch.all(mutator.marginals() == 1)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        with mutator.frozen_norm_stats():
            plain = forward_tensor(model, x)
        with mutator.markov_scaling():
            scaled = forward_tensor(model, x)
    torch.testing.assert_close(scaled, plain, rtol=0, atol=1e-6)
    # hooks are gone after the context: random alphas change nothing now
    random_alphas(mutator, torch.Generator().manual_seed(3))
    model.eval()
    with torch.no_grad():
        a = forward_tensor(model, x)
        b = forward_tensor(copy.deepcopy(model), x)
    assert torch.equal(a, b)
    with torch.no_grad(), mutator.markov_scaling():
        c = forward_tensor(model, x)
    assert not torch.allclose(a, c)  # while inside, the scale acts
    # an error inside the context still removes the hooks and restores the
    # subnet and the BN bookkeeping
    choices = mutator.set_subnet('min')
    with pytest.raises(RuntimeError, match='boom'):
        with mutator.markov_scaling():
            raise RuntimeError('boom')
    assert mutator.current_choices() == choices
    assert all(m.update_stats for m in mutator._norms)
    mutator.set_subnet('max')
    with torch.no_grad():
        assert torch.equal(forward_tensor(model, x), a)


def test_markov_scaling_applies_eq7_after_each_norm(nets):
    """A unit whose later transitions are 0 leaves only its first group
    alive after each of its scale points (the BNs of its producers)."""
    model, mutator, _ = nets('resnet50')
    set_alphas(mutator, 50.0)
    spec = next(s for s in mutator.specs if len(s.producers) > 1)
    unit = mutator.units[mutator.unit_names.index(spec.name)]
    with torch.no_grad():
        unit.alpha.fill_(-50.0)
    modules = dict(model.named_modules())
    outputs = {}
    model.train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), mutator.markov_scaling():
        hooks = [
            modules[name].register_forward_hook(
                lambda m, a, out, name=name: outputs.__setitem__(name, out)
            )
            for name in spec.scale_points
        ]
        try:
            forward_tensor(model, x)
        finally:
            for h in hooks:
                h.remove()
    assert set(outputs) == set(spec.scale_points)
    keep = unit.ends[0]
    for name, out in outputs.items():
        assert isinstance(modules[name], nn.BatchNorm2d)
        assert out[:, :keep].abs().sum() > 0, name
        assert out[:, keep:].abs().max() < 1e-15, name


def test_markov_scaling_gradient_matches_eq16_18():
    """End to end on a small conv net: alpha.grad from the mutator equals
    Eq. 16-18 with O the BN output and dLoss/dO_hat read off autograd.
    In the reference path, where the scale is a multiply after the BN whose
    input and output the test reads (test_shortcuts.py checks that the
    folded scale gives the same gradients)."""
    with reference_path():
        _markov_scaling_gradient_matches_eq16_18()


def _markov_scaling_gradient_matches_eq16_18():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 10, 3, padding=1, bias=False),
        nn.BatchNorm2d(10),
        nn.ReLU(),
        nn.Conv2d(10, 12, 3, padding=1, bias=False),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 5),
    )
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=4))
    mutator.prepare_from_supernet(model, (3, 6, 6))
    model.double()  # float64 after tracing: the tracer feeds float32 zeros
    mutator.double()
    assert mutator.unit_names == ['0', '3']
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.normal_()
    unit = mutator.units[0]
    bn = model[1]
    seen = {}
    pre = bn.register_forward_hook(
        lambda m, a, out: seen.__setitem__('O', out.detach())
    )
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    model.train()

    def keep_scaled(module, args, out):
        out.retain_grad()
        seen['Oh'] = out

    with mutator.markov_scaling():
        post = bn.register_forward_hook(keep_scaled)  # after the scale hook
        loss = (model(x) * torch.linspace(-1, 1, 5).double()).sum()
        loss.backward(inputs=mutator.arch_parameters())
        post.remove()
    pre.remove()
    out, out_hat = seen['O'], seen['Oh']
    torch.testing.assert_close(
        out_hat.detach(),
        out * unit.channel_scale().detach().view(1, -1, 1, 1),
    )
    # Eq. 16: sum over the channels (and positions) of dL/dO_hat * dO_hat/da
    per_channel = (out_hat.grad * out).sum(dim=(0, 2, 3))
    want = closed_form_alpha_grad(
        unit.alpha.detach(), unit.group_sizes, per_channel, torch.ones(10)
    )
    torch.testing.assert_close(unit.alpha.grad, want, rtol=1e-9, atol=1e-12)


def test_frozen_norm_stats_on_a_training_subnet(nets):
    model, mutator, _ = nets('mbv2_1.0')
    gen = torch.Generator().manual_seed(2)
    random_alphas(mutator, gen)
    mutator.set_subnet('direct', gen)
    model.train()
    before = bn_state(model)
    x = torch.randn(2, 3, 32, 32)
    with mutator.frozen_norm_stats():
        forward_tensor(model, x).sum().backward()
    after = bn_state(model)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    # the flags are restored even when the body raises
    with pytest.raises(RuntimeError):
        with mutator.frozen_norm_stats():
            raise RuntimeError('boom')
    assert all(m.update_stats for m in mutator._norms)
    # outside the context a training forward moves the stats again
    forward_tensor(model, x)
    assert not torch.equal(
        before['backbone.conv1.bn.running_mean'],
        bn_state(model)['backbone.conv1.bn.running_mean'],
    )
    mutator.set_subnet('max')


def test_toy_model_with_explicit_forward():
    """The mutator also works on a plain nn.Module, with F.* calls."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(16)
            self.fc = nn.Linear(16, 4)

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = F.relu(self.bn2(self.conv2(y)) + y)
            return self.fc(y.mean((2, 3)))

    model = Net()
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=4))
    mutator.prepare_from_supernet(model, (3, 8, 8))
    assert mutator.unit_names == ['conv1']
    assert mutator.specs[0].producers == ['conv1', 'conv2']
    mutator.set_subnet({'conv1': 8})
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    assert mutator.subnet_flops() == count_flops(model, (3, 8, 8))
    assert mutator.subnet_flops() == (8 * 3 * 9 * 64 + 8 * 8 * 9 * 64 + 8 * 4)


def test_markov_scaling_with_depthwise_channel_multiplier():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 16, 3, padding=1, groups=8),
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 8, 1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 4, 1),
    )
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=4))
    mutator.prepare_from_supernet(model, (3, 4, 4))
    with mutator.markov_scaling():
        out = model(torch.randn(2, 3, 4, 4))
    assert out.shape == (2, 4, 4, 4)


def test_explicit_units_and_unit_config():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.Conv2d(8, 4, 1),
    )
    mutator = DMCPChannelMutator(
        channel_unit_cfg=dict(
            num_groups=4, alpha_init=3.0, alpha_init_std=0.0
        ),
        units=[['0', '2']],
    )
    mutator.prepare_from_supernet(model, (3, 4, 4))
    assert mutator.unit_names == ['0']
    assert mutator.specs[0].producers == ['0', '2']
    assert mutator.units[0].layers == ['0', '2']
    assert torch.all(mutator.alphas() == 3.0)
    for width in (2, 4, 6, 8):
        mutator.set_subnet({'0': width})
        assert mutator.subnet_flops() == count_flops(model, (3, 4, 4))
        assert model(torch.randn(1, 3, 4, 4)).shape == (1, 4, 4, 4)
