"""Tests of the Markov channel unit (``unit.py``)."""

import pytest
import torch

from projects.dmcp.models import MarkovChannelUnit
from projects.dmcp.models.markov import group_ends, marginal_probs
from projects.dmcp.registry import MODELS, build_model
from tests.helpers.models import chain_distribution

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')


def make_unit(channels=64, groups=10, **kwargs):
    return MarkovChannelUnit('layer', channels, groups, **kwargs)


def test_registered_as_dmcp_channel_unit():
    unit = MODELS.build(
        dict(type='DMCPChannelUnit', name='u', num_channels=32, num_groups=4)
    )
    assert type(unit) is MarkovChannelUnit
    assert unit.num_groups == 4 and unit.num_channels == 32
    unit = build_model(
        dict(type='DMCPChannelUnit', name='v', num_channels=8, num_groups=2)
    )
    assert type(unit) is MarkovChannelUnit


@pytest.mark.parametrize('channels,groups', [(64, 10), (24, 10), (7, 3)])
def test_groups_and_parameters(channels, groups):
    unit = make_unit(channels, groups)
    assert unit.alpha.shape == (groups - 1,)
    assert [n for n, _ in unit.named_parameters()] == ['alpha']
    assert unit.ends == group_ends(channels, groups)
    assert int(unit.group_sizes.sum()) == channels
    assert torch.equal(
        torch.cumsum(unit.group_sizes, 0), torch.tensor(unit.ends)
    )
    sizes = unit.group_sizes
    assert int(sizes.max() - sizes.min()) <= 1
    assert unit.min_channels == unit.ends[0]
    assert unit.channels_of(1) == unit.ends[0]
    assert unit.channels_of(groups) == channels
    assert unit.choice == channels
    # not saved: the buffer is derived from the config
    assert 'group_sizes' not in unit.state_dict()


def test_alpha_init_constant():
    unit = make_unit(2048, 10, alpha_init=2.0, alpha_init_std=0.0)
    assert torch.all(unit.alpha == 2.0)
    torch.manual_seed(0)
    noisy = make_unit(2048, 10, alpha_init=0.0, alpha_init_std=0.01)
    assert 0 < noisy.alpha.abs().max() < 0.1


@pytest.mark.parametrize('groups', [2, 5, 10])
def test_alpha_init_uniform_makes_every_width_equally_likely(groups):
    unit = make_unit(64, groups, alpha_init='uniform', alpha_init_std=0.0)
    # p(w_k) = (G - k + 1) / G
    want = torch.tensor(
        [(groups - k + 1) / groups for k in range(1, groups + 1)]
    )
    torch.testing.assert_close(unit.marginals().double(), want.double())
    # P(K = k) = 1 / G for every k, by enumerating the chain
    dist = chain_distribution(unit.alpha.double())
    assert dist == pytest.approx([1.0 / groups] * groups, abs=1e-6)


def test_alpha_init_default_is_uniform_with_noise():
    torch.manual_seed(0)
    unit = make_unit(64, 10)
    base = torch.log(torch.arange(9, 0, -1, dtype=torch.float32))
    assert 0 < (unit.alpha - base).abs().max() < 0.1


@pytest.mark.parametrize('init', ['normal', None, True])
def test_alpha_init_rejects_others(init):
    with pytest.raises(ValueError, match='alpha_init'):
        make_unit(64, 10, alpha_init=init)


def test_marginals_expected_channels_and_scale():
    unit = make_unit(10, 4)
    with torch.no_grad():
        unit.alpha.copy_(torch.tensor([1.0, -0.5, 0.3]))
    unit.alpha.grad = None
    marg = unit.marginals()
    torch.testing.assert_close(marg, marginal_probs(unit.alpha))
    sizes = unit.group_sizes.tolist()  # [3, 2, 3, 2]
    assert sizes == [3, 2, 3, 2]
    expected = sum(s * float(m) for s, m in zip(sizes, marg))
    assert float(unit.expected_channels()) == pytest.approx(expected)
    scale = unit.channel_scale()
    assert scale.shape == (10,)
    want = torch.repeat_interleave(marg, torch.tensor(sizes))
    torch.testing.assert_close(scale, want)
    # all of them differentiable w.r.t. alpha
    unit.expected_channels().backward()
    assert unit.alpha.grad is not None and torch.all(unit.alpha.grad > 0)


def test_sample_channels_is_a_group_boundary():
    unit = make_unit(64, 10)
    gen = torch.Generator().manual_seed(0)
    seen = {unit.sample_channels(gen) for _ in range(300)}
    assert seen <= set(unit.ends)
    assert len(seen) > 3
    g1, g2 = torch.Generator(), torch.Generator()
    g1.manual_seed(3)
    g2.manual_seed(3)
    assert [unit.sample_channels(g1) for _ in range(20)] == [
        unit.sample_channels(g2) for _ in range(20)
    ]


def test_sample_channels_deterministic_transitions():
    unit = make_unit(64, 10)
    with torch.no_grad():
        unit.alpha.copy_(torch.tensor([50.0] * 4 + [-50.0] + [50.0] * 4))
    assert {unit.sample_channels() for _ in range(50)} == {unit.ends[4]}
    assert unit.expected_choice() == unit.ends[4] == 32
    with torch.no_grad():
        unit.alpha.fill_(50.0)
    assert unit.sample_channels() == 64 == unit.expected_choice()
    with torch.no_grad():
        unit.alpha.fill_(-50.0)
    assert unit.sample_channels() == unit.min_channels == 6
    assert unit.expected_choice() == 6


def test_expected_choice_rounds_expected_channels():
    unit = make_unit(64, 10)
    with torch.no_grad():
        unit.alpha.copy_(torch.linspace(2.0, -1.0, 9))
    value = float(unit.expected_channels())
    assert unit.expected_choice() == round(value)
    assert 1 <= unit.expected_choice() <= 64


def test_single_group_unit_is_never_pruned():
    unit = make_unit(5, 1)
    assert unit.alpha.numel() == 0
    assert unit.sample_channels() == 5
    assert float(unit.expected_channels()) == 5
    assert unit.expected_choice() == 5
    assert torch.all(unit.channel_scale() == 1)


@pytest.mark.parametrize('groups', [11, 100])
def test_more_groups_than_channels_raises(groups):
    with pytest.raises(ValueError, match='more than the 10 channels'):
        make_unit(10, groups)


@pytest.mark.parametrize('groups', [0, -2, 2.5, '10'])
def test_bad_num_groups_raises(groups):
    with pytest.raises(ValueError, match='num_groups'):
        make_unit(10, groups)


def test_extra_repr():
    assert 'num_groups=10' in repr(make_unit(64, 10))
