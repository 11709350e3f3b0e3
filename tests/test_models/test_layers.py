"""Tests of the prefix-slicing layers (``layers.py``)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from projects.dmcp.models.layers import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    convert_layer,
    is_depthwise,
)

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')


def dynamic(module):
    assert convert_layer(module)
    return module


def test_convert_layer_swaps_class_in_place():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    params = {n: p for n, p in conv.named_parameters()}
    keys = list(conv.state_dict())
    calls = []
    conv.register_forward_hook(lambda *a: calls.append(1))
    assert convert_layer(conv) is True
    assert type(conv) is DynamicConv2d
    assert isinstance(conv, nn.Conv2d)
    assert {n: p for n, p in conv.named_parameters()} == params
    assert list(conv.state_dict()) == keys
    conv(torch.zeros(1, 4, 5, 5))
    assert calls == [1]  # hooks survive
    assert convert_layer(conv) is True  # idempotent
    assert type(conv) is DynamicConv2d

    bn, fc = nn.BatchNorm2d(3), nn.Linear(3, 2)
    assert convert_layer(bn) and type(bn) is DynamicBatchNorm2d
    assert convert_layer(fc) and type(fc) is DynamicLinear


def test_convert_layer_leaves_others_alone():
    grouped = nn.Conv2d(8, 8, 3, groups=2)  # neither plain nor depthwise
    assert not is_depthwise(grouped)
    assert convert_layer(grouped) is False
    assert type(grouped) is nn.Conv2d

    class MyConv(nn.Conv2d):
        pass

    sub = MyConv(3, 3, 1)
    assert convert_layer(sub) is False
    assert type(sub) is MyConv
    relu = nn.ReLU()
    assert convert_layer(relu) is False

    dw = nn.Conv2d(8, 16, 3, groups=8)  # depthwise, channel multiplier 2
    assert is_depthwise(dw)
    assert convert_layer(dw) and type(dw) is DynamicConv2d


def test_dynamic_conv_full_width_equals_plain():
    torch.manual_seed(0)
    plain = nn.Conv2d(5, 7, 3, stride=2, padding=1)
    dyn = dynamic(copy.deepcopy(plain))
    x = torch.randn(2, 5, 9, 9)
    assert torch.equal(dyn(x), plain(x))


@pytest.mark.parametrize('padding_mode', ['zeros', 'reflect'])
@pytest.mark.parametrize('bias', [True, False])
def test_dynamic_conv_prefix_equals_smaller_conv(padding_mode, bias):
    torch.manual_seed(0)
    dyn = dynamic(
        nn.Conv2d(6, 8, 3, padding=1, bias=bias, padding_mode=padding_mode)
    )
    dyn.out_width = 5
    x = torch.randn(2, 4, 7, 7)
    small = nn.Conv2d(4, 5, 3, padding=1, bias=bias, padding_mode=padding_mode)
    with torch.no_grad():
        small.weight.copy_(dyn.weight[:5, :4])
        if bias:
            small.bias.copy_(dyn.bias[:5])
    out = dyn(x)
    assert out.shape == (2, 5, 7, 7)
    torch.testing.assert_close(out, small(x), rtol=1e-6, atol=1e-6)

    # gradient only reaches the used prefix of the weight
    out.sum().backward()
    assert dyn.weight.grad[:5, :4].abs().sum() > 0
    assert torch.all(dyn.weight.grad[5:] == 0)
    assert torch.all(dyn.weight.grad[:, 4:] == 0)


def test_dynamic_conv_out_width_none_means_full():
    dyn = dynamic(nn.Conv2d(3, 8, 1))
    dyn.out_width = None
    assert dyn(torch.randn(1, 2, 4, 4)).shape == (1, 8, 4, 4)


@pytest.mark.parametrize('multiplier', [1, 2])
def test_dynamic_depthwise_conv_follows_input(multiplier):
    torch.manual_seed(0)
    dyn = dynamic(nn.Conv2d(6, 6 * multiplier, 3, padding=1, groups=6))
    dyn.out_width = 1  # ignored by a depthwise conv: it follows its input
    x = torch.randn(2, 4, 5, 5)
    out = dyn(x)
    assert out.shape == (2, 4 * multiplier, 5, 5)
    small = nn.Conv2d(4, 4 * multiplier, 3, padding=1, groups=4)
    with torch.no_grad():
        small.weight.copy_(dyn.weight[: 4 * multiplier])
        small.bias.copy_(dyn.bias[: 4 * multiplier])
    torch.testing.assert_close(out, small(x), rtol=1e-6, atol=1e-6)
    # full width: the plain forward
    full = torch.randn(2, 6, 5, 5)
    want = F.conv2d(full, dyn.weight, dyn.bias, 1, 1, 1, 6)
    torch.testing.assert_close(dyn(full), want)


def test_dynamic_linear_prefix():
    torch.manual_seed(0)
    dyn = dynamic(nn.Linear(10, 6))
    x = torch.randn(3, 7)
    dyn.out_width = 4
    out = dyn(x)
    assert out.shape == (3, 4)
    torch.testing.assert_close(
        out, x @ dyn.weight[:4, :7].T + dyn.bias[:4], rtol=1e-6, atol=1e-6
    )
    dyn.out_width = None
    full = torch.randn(3, 10)
    assert torch.equal(dyn(full), F.linear(full, dyn.weight, dyn.bias))


def _random_bn(num_features, momentum=0.1):
    bn = nn.BatchNorm2d(num_features, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 1.5)
    return bn


@pytest.mark.parametrize('momentum', [0.1, None])
def test_dynamic_bn_prefix_train_updates_prefix_stats(momentum):
    torch.manual_seed(0)
    bn = _random_bn(8, momentum)
    ref = nn.BatchNorm2d(5, momentum=momentum)
    ref.load_state_dict(
        {
            k: (v[:5] if v.dim() else v)
            for k, v in copy.deepcopy(bn.state_dict()).items()
        }
    )
    dyn = dynamic(bn)
    before = {k: v.clone() for k, v in dyn.state_dict().items()}
    x = torch.randn(4, 5, 3, 3)
    out = dyn(x)
    torch.testing.assert_close(out, ref(x))
    torch.testing.assert_close(dyn.running_mean[:5], ref.running_mean)
    torch.testing.assert_close(dyn.running_var[:5], ref.running_var)
    assert torch.equal(dyn.running_mean[5:], before['running_mean'][5:])
    assert torch.equal(dyn.running_var[5:], before['running_var'][5:])
    assert int(dyn.num_batches_tracked) == 1


def test_dynamic_bn_prefix_eval_uses_running_stats():
    bn = dynamic(_random_bn(8)).eval()
    x = torch.randn(2, 3, 4, 4)
    want = F.batch_norm(
        x,
        bn.running_mean[:3],
        bn.running_var[:3],
        bn.weight[:3],
        bn.bias[:3],
        False,
        0.0,
        bn.eps,
    )
    torch.testing.assert_close(bn(x), want)


@pytest.mark.parametrize('width', [8, 5])
def test_dynamic_bn_update_stats_false_freezes_stats(width):
    bn = dynamic(_random_bn(8)).train()
    bn.update_stats = False
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = 3.0 + 2.0 * torch.randn(4, width, 3, 3)
    out = bn(x)
    after = bn.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    # normalised with the batch statistics
    want = F.batch_norm(
        x, None, None, bn.weight[:width], bn.bias[:width], True, 0.0, bn.eps
    )
    torch.testing.assert_close(out, want)
    # and with update_stats back on, the stats move again
    bn.update_stats = True
    bn(x)
    assert not torch.equal(bn.running_mean, before['running_mean'])
    assert int(bn.num_batches_tracked) == 1


def test_dynamic_bn_without_running_stats():
    bn = dynamic(nn.BatchNorm2d(6, track_running_stats=False))
    x = torch.randn(3, 4, 2, 2)
    for mode in (True, False):
        bn.train(mode)
        want = F.batch_norm(
            x, None, None, bn.weight[:4], bn.bias[:4], True, 0.0, bn.eps
        )
        torch.testing.assert_close(bn(x), want)
