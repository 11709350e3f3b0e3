"""Tests of the Markov process of Section 3.1 (``markov.py``), Eq. 5-8 and
16-18, against brute force."""

import math

import pytest
import torch

from projects.dmcp.models.markov import (
    channel_scale,
    expected_channels,
    expected_num_groups,
    group_ends,
    marginal_probs,
    sample_num_groups,
    transition_probs,
)
from tests.helpers.models import chain_distribution, closed_form_alpha_grad

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')


def brute_force_marginals(alpha):
    """P(group k retained) = P(K >= k) from the enumerated chain."""
    dist = chain_distribution(alpha)
    return [sum(dist[k:]) for k in range(len(dist))]


# --------------------------------------------------------------- Eq. 5 and 6
def test_transition_probs_eq5():
    alpha = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    p = transition_probs(alpha)
    assert p.shape == (4,)
    assert p[0] == 1
    torch.testing.assert_close(p[1:], torch.sigmoid(alpha))
    batched = transition_probs(torch.zeros(5, 2, 7))
    assert batched.shape == (5, 2, 8)
    assert torch.all(batched[..., 0] == 1)
    assert torch.all(batched[..., 1:] == 0.5)


@pytest.mark.parametrize('num_groups', [1, 2, 3, 5, 8])
def test_marginals_equal_brute_force_enumeration(num_groups):
    g = torch.Generator().manual_seed(num_groups)
    for _ in range(5):
        alpha = 2.0 * torch.randn(num_groups - 1, generator=g).double()
        got = marginal_probs(alpha)
        want = torch.tensor(brute_force_marginals(alpha), dtype=torch.float64)
        assert got.shape == (num_groups,)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert got[0] == 1
        assert torch.all(got[1:] <= got[:-1])  # non-increasing


def test_marginals_batched_match_rows():
    alpha = torch.randn(4, 6, dtype=torch.float64)
    batched = marginal_probs(alpha)
    assert batched.shape == (4, 7)
    for row in range(4):
        torch.testing.assert_close(batched[row], marginal_probs(alpha[row]))


# ----------------------------------------------------------------------- Eq. 8
def test_expected_channels_is_mean_of_retained_channels():
    """Eq. 8 with groups equals E[channels] under the enumerated chain."""
    alpha = torch.tensor([0.3, -1.0, 2.0, 0.0, 1.5], dtype=torch.float64)
    sizes = torch.tensor([3, 2, 3, 2, 3, 2])
    ends = torch.cumsum(sizes, 0).tolist()
    dist = chain_distribution(alpha)
    brute = sum(prob * ends[k] for k, prob in enumerate(dist))
    got = expected_channels(marginal_probs(alpha), sizes)
    assert got.item() == pytest.approx(brute, rel=1e-12)
    assert expected_num_groups(alpha).item() == pytest.approx(
        sum(prob * (k + 1) for k, prob in enumerate(dist)), rel=1e-12
    )


def test_expected_channels_batched():
    marg = marginal_probs(torch.randn(3, 4, dtype=torch.float64))
    sizes = torch.tensor([2, 3, 2, 3, 2])
    got = expected_channels(marg, sizes)
    assert got.shape == (3,)
    torch.testing.assert_close(got, (marg * sizes).sum(-1))


# ----------------------------------------------------------------------- Eq. 7
def test_channel_scale_repeats_marginals_per_group():
    marg = torch.tensor([1.0, 0.7, 0.2])
    sizes = torch.tensor([2, 1, 3])
    scale = channel_scale(marg, sizes)
    assert scale.tolist() == pytest.approx([1, 1, 0.7, 0.2, 0.2, 0.2])


# ---------------------------------------------------------------- Eq. 16 - 18
@pytest.mark.parametrize('num_groups', [2, 4, 7])
def test_alpha_grad_matches_eq16_18(num_groups):
    g = torch.Generator().manual_seed(10 + num_groups)
    sizes = torch.tensor(
        [2 + int(i % 2) for i in range(num_groups)], dtype=torch.long
    )
    channels = int(sizes.sum())
    alpha = torch.randn(num_groups - 1, generator=g, dtype=torch.float64)
    alpha.requires_grad_(True)
    out = torch.randn(channels, generator=g, dtype=torch.float64)  # O
    coef = torch.randn(channels, generator=g, dtype=torch.float64)  # c_k
    out_hat = out * channel_scale(marginal_probs(alpha), sizes)  # Eq. 7
    loss = (coef * out_hat).sum()
    (grad,) = torch.autograd.grad(loss, alpha)
    want = closed_form_alpha_grad(alpha.detach(), sizes, out, coef)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)


def test_alpha_grad_matches_eq16_18_on_feature_maps():
    """Same check with a (N, C, H, W) layer output scaled per channel."""
    sizes = torch.tensor([3, 2, 3, 2])
    alpha = torch.tensor([0.5, -0.3, 1.2], dtype=torch.float64)
    alpha.requires_grad_(True)
    g = torch.Generator().manual_seed(3)
    out = torch.randn(2, 10, 3, 3, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 10, 3, 3, generator=g, dtype=torch.float64)
    scale = channel_scale(marginal_probs(alpha), sizes).view(1, -1, 1, 1)
    loss = (weight * out * scale).sum()
    (grad,) = torch.autograd.grad(loss, alpha)
    # Reduce the per-element products to one c_k * O_k per channel.
    per_channel = (weight * out).sum(dim=(0, 2, 3))
    want = closed_form_alpha_grad(
        alpha.detach(), sizes, per_channel, torch.ones(10)
    )
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------ Direct Sampling
def test_direct_sampling_frequencies_match_marginals():
    alpha = torch.tensor([2.0, 0.5, -0.5, 1.0, 0.0, -1.5, 3.0])
    num = 20000
    g = torch.Generator().manual_seed(1234)
    k = sample_num_groups(alpha.expand(num, -1), generator=g)
    assert k.shape == (num,)
    assert k.dtype == torch.long
    assert int(k.min()) >= 1 and int(k.max()) <= 8
    marg = marginal_probs(alpha.double())
    # P(group j retained) = P(K >= j), estimated from the samples.
    freq = torch.stack([(k >= j).double().mean() for j in range(1, 9)])
    # 4.5 standard errors of a Bernoulli mean (at most 0.0035 for 20k).
    tol = 4.5 * torch.sqrt(marg * (1 - marg) / num) + 1e-12
    assert torch.all((freq - marg).abs() <= tol), (freq, marg)
    # and the distribution of K itself
    dist = torch.tensor(chain_distribution(alpha), dtype=torch.float64)
    hist = torch.bincount(k - 1, minlength=8).double() / num
    assert torch.all((hist - dist).abs() <= 4.5 * torch.sqrt(dist / num))


def test_direct_sampling_batched_units_and_generator():
    alpha = torch.randn(6, 9)
    k1 = sample_num_groups(alpha, torch.Generator().manual_seed(7))
    k2 = sample_num_groups(alpha, torch.Generator().manual_seed(7))
    assert k1.shape == (6,)
    assert torch.equal(k1, k2)


def test_direct_sampling_deterministic_transitions():
    # every transition 0 or 1: K = 1 + number of leading +50 entries
    alpha = torch.tensor(
        [[50.0, 50.0, -50.0, 50.0], [-50.0, 50.0, 50.0, 50.0]] + [[50.0] * 4]
    )
    for seed in range(5):
        k = sample_num_groups(alpha, torch.Generator().manual_seed(seed))
        assert k.tolist() == [3, 1, 5]
    # a single group: nothing to sample
    assert sample_num_groups(torch.zeros(0)).item() == 1


def test_sample_num_groups_has_no_grad():
    alpha = torch.zeros(4, requires_grad=True)
    k = sample_num_groups(alpha)
    assert not k.requires_grad


# ------------------------------------------------------------------ groups
def test_group_ends_exhaustive():
    for channels in range(1, 70):
        for groups in range(1, channels + 1):
            ends = group_ends(channels, groups)
            assert len(ends) == groups
            assert ends[-1] == channels
            sizes = [ends[0]] + [b - a for a, b in zip(ends, ends[1:])]
            assert sum(sizes) == channels
            assert min(sizes) >= 1
            assert max(sizes) - min(sizes) <= 1, (channels, groups, sizes)
            # group k ends at round-half-up(C * k / G)
            for k, end in enumerate(ends, start=1):
                assert end == math.floor(channels * k / groups + 0.5)


def test_group_ends_paper_sizes():
    assert group_ends(64, 10) == [6, 13, 19, 26, 32, 38, 45, 51, 58, 64]
    assert group_ends(2048, 1) == [2048]
    assert group_ends(10, 10) == list(range(1, 11))


@pytest.mark.parametrize('channels,groups', [(8, 0), (8, -1), (8, 9), (1, 2)])
def test_group_ends_rejects_bad_groups(channels, groups):
    with pytest.raises(ValueError, match='num_groups'):
        group_ends(channels, groups)
