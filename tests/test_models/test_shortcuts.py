"""The layers' shortcuts (``layers.py``) change no value of the search: in
float64 the gradients of the weights (stage 1) and of alpha (stage 2) equal
those of :func:`~projects.dmcp.models.layers.reference_path`, on ResNet and
MobileNetV2 supernets, and traced forwards keep the plain slicing."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from projects.dmcp.models import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    convert_layer,
    reference_path,
)
from projects.dmcp.models.layers import shortcuts_enabled, weight_prefix
from tests.helpers.models import forward_tensor, prepared

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')

ARCHS = ['resnet18', 'mbv2_1.0']


def float64_supernet(arch: str):
    """A prepared supernet (32x32) in float64 with random alphas."""
    model, mutator = prepared(arch, size=32)
    model.double()
    mutator.double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.normal_(0.0, 1.0, generator=g)
    model.train()
    return model, mutator


def batch(n: int = 2, size: int = 32):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
    y = torch.randint(0, 1000, (n,), generator=g)
    return x, y


def stage1_grads(model, mutator, plan, x, y):
    """Forward and backward of each subnet of ``plan`` as stage 1 runs
    them (only ``max`` updates the BN statistics); the accumulated weight
    gradients."""
    for p in model.parameters():
        p.grad = None
    for subnet in plan:
        mutator.set_subnet(subnet)
        if subnet == 'max':
            loss = F.cross_entropy(forward_tensor(model, x), y)
        else:
            with mutator.frozen_norm_stats():
                loss = F.cross_entropy(forward_tensor(model, x), y)
        loss.backward()
    mutator.set_subnet('max')
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def plan_of(mutator, first: str = 'max'):
    g = torch.Generator().manual_seed(3)
    direct = [mutator.sample_choices('direct', g) for _ in range(2)]
    rest = ['min'] + direct
    return [first] + rest if first == 'max' else [first, 'max'] + rest[1:]


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('first', ['max', 'min'])
def test_stage1_weight_grads_equal_reference(arch, first):
    """The sandwich rule's four subnets accumulate the same weight
    gradients (also when a sliced subnet comes first and finds no
    ``.grad``), and the network then takes the same SGD step."""
    model, mutator = float64_supernet(arch)
    state = copy.deepcopy(model.state_dict())
    x, y = batch()
    plan = plan_of(mutator, first)
    fast = stage1_grads(model, mutator, plan, x, y)
    model.load_state_dict(state)
    with reference_path():
        ref = stage1_grads(model, mutator, plan, x, y)
    assert fast.keys() == ref.keys()
    sliced = 0
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-12, atol=0)
        sliced += bool((ref[name] == 0).any())
    assert sliced > 10  # the smaller subnets did leave slices untouched
    # one SGD step from the same weights with either gradient: same weights
    steps = []
    for grads in (fast, ref):
        model.load_state_dict(state)
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).step()
        steps.append(copy.deepcopy(model.state_dict()))
    for key in steps[0]:
        torch.testing.assert_close(steps[0][key], steps[1][key])


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float64 rounding, relative to the largest entry (through
    ~50 batch norms, whose backward subtracts nearly equal sums, rounding
    of 1e-16 grows to about 1e-9; a wrong gradient is off by far more)."""
    scale = float(b.abs().max())
    torch.testing.assert_close(a, b, rtol=0, atol=1e-7 * scale)


def stage2(model, mutator, x, y):
    """The Markov-scaled forward and the backward to alpha only."""
    for a in mutator.arch_parameters():
        a.grad = None
    with mutator.markov_scaling():
        logits = forward_tensor(model, x)
        loss = F.cross_entropy(logits, y)
        loss.backward(inputs=mutator.arch_parameters())
    return logits.detach(), [a.grad.clone() for a in mutator.arch_parameters()]


@pytest.mark.parametrize('arch', ARCHS)
def test_stage2_alpha_grads_equal_reference(arch):
    """Folding the Markov scale into the BN affine gives the logits and the
    alpha gradients of the separate multiply; no weight gets a gradient."""
    model, mutator = float64_supernet(arch)
    x, y = batch()
    logits, fast = stage2(model, mutator, x, y)
    with reference_path():
        ref_logits, ref = stage2(model, mutator, x, y)
    # equal up to float64 rounding (a different order of the products)
    close(logits, ref_logits)
    for a, b in zip(fast, ref):
        close(a, b)
    assert sum(bool(g.abs().sum() > 0) for g in ref) >= 0.9 * len(ref)
    for name, p in model.named_parameters():
        assert p.grad is None, name
    # nothing of the scaling is left on the norms after the context
    assert all(m.markov_scale is None for m in mutator._norms)


@pytest.mark.parametrize('arch', ARCHS)
def test_stage2_folds_every_norm_scale_point(arch):
    """Inside the Markov scaling the scale points that are batch norms carry
    the scale and have no forward hook; in the reference path they have a
    hook and no scale."""
    model, mutator = float64_supernet(arch)
    points = [
        mutator._layers[name]
        for spec in mutator.specs
        for name in spec.scale_points
    ]
    norms = [m for m in points if isinstance(m, DynamicBatchNorm2d)]
    assert norms
    with mutator.markov_scaling():
        assert all(m.markov_scale is not None for m in norms)
        assert all(not m._forward_hooks for m in norms)
    with reference_path(), mutator.markov_scaling():
        assert all(m.markov_scale is None for m in norms)
        assert all(len(m._forward_hooks) == 1 for m in norms)
    assert all(not m._forward_hooks for m in norms)


def test_depthwise_and_linear_slices_equal_reference():
    """A depthwise convolution (output follows the input) and a linear layer
    on prefixes: same gradients, and untouched slices stay zero."""
    torch.manual_seed(0)
    dw = nn.Conv2d(8, 16, 3, groups=8, padding=1).double()
    fc = nn.Linear(12, 7).double()
    assert convert_layer(dw) and convert_layer(fc)
    fc.out_width = 5
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    z = torch.randn(3, 9, dtype=torch.float64)

    def run():
        for p in list(dw.parameters()) + list(fc.parameters()):
            p.grad = None
        (dw(x).square().sum() + fc(z).sum()).backward()
        return [p.grad.clone() for p in (dw.weight, fc.weight)]

    fast = run()
    with reference_path():
        ref = run()
    for a, b in zip(fast, ref):
        assert torch.equal(a, b)
    assert torch.all(fast[0][12:] == 0) and fast[0][:12].abs().sum() > 0
    assert torch.all(fast[1][5:] == 0) and torch.all(fast[1][:, 9:] == 0)


def test_shortcut_only_where_a_weight_step_records_gradients():
    """The slice is the plain view without grad mode, for a frozen weight,
    inside reference_path() and while torch.jit traces; a traced subnet
    gives the same output and autograd's own weight gradient."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3)
    convert_layer(conv)
    assert isinstance(conv, DynamicConv2d)
    w = conv.weight
    assert weight_prefix(w, 3, 4).grad_fn.name() == '_PrefixSliceBackward'
    with torch.no_grad():
        assert weight_prefix(w, 3, 4).grad_fn is None
    assert weight_prefix(w.detach(), 3, 4).grad_fn is None
    with reference_path():
        assert not shortcuts_enabled()
        assert weight_prefix(w, 3, 4).grad_fn.name() != '_PrefixSliceBackward'
    assert shortcuts_enabled()
    conv.out_width = 3
    x = torch.randn(2, 4, 5, 5)
    traced = torch.jit.trace(conv, x, check_trace=False)
    torch.testing.assert_close(traced(x), conv(x))
    (grad,) = torch.autograd.grad(traced(x).sum(), w)
    with reference_path():
        (want,) = torch.autograd.grad(conv(x).sum(), w)
    torch.testing.assert_close(grad, want)
