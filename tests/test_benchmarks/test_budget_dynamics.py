"""benchmarks/budget_dynamics.py: its written-out gradient against autograd
through the mutator's own functions, and a short batched run."""

import pytest
import torch
from mmengine.config import Config

from benchmarks.budget_dynamics import BatchedBudget, simulate
from projects.dmcp.models.markov import expected_channels, marginal_probs
from tests.test_models.test_device import make_algo


@pytest.fixture(scope='module')
def algo():
    return make_algo(target_flops='5M')


@pytest.mark.parametrize('mode', ['bounded', 'official', 'paper'])
def test_gradient_equals_autograd(algo, mode):
    algo.budget.mode = mode
    budget = BatchedBudget(algo)
    g = torch.Generator().manual_seed(0)
    alpha = budget.alpha0.double()[None].repeat(6, 1, 1)
    alpha += 2 * torch.randn(alpha.shape, generator=g, dtype=alpha.dtype)
    w = torch.rand(6, alpha.shape[1], generator=g, dtype=alpha.dtype)

    a = alpha.clone().requires_grad_(True)
    ec = expected_channels(marginal_probs(a), budget.sizes)
    e = algo.mutator.flops_table(ec)  # the mutator's own Eq. 12
    loss = budget.loss(e).sum() - (w * torch.log(ec)).sum()
    (want,) = torch.autograd.grad(loss, a)

    ec, e = budget.expected(alpha)
    d_ec = budget.loss_grad(e)[:, None] * budget.flops_grad(ec) - w / ec
    got = d_ec[..., None] * budget.channels_grad(alpha)
    # some runs are above, some below, some inside the band
    assert (e > budget.target).any() and (e < budget.target).any()
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    algo.budget.mode = 'bounded'


def test_short_run_reports_every_factor(algo):
    cfg = Config(
        dict(
            optim_wrapper=dict(
                mutator=dict(
                    optimizer=dict(type='SGD', lr=0.2, momentum=0.9),
                    clip_grad=None,
                )
            )
        )
    )
    lrs = [0.2 * (1 - i / 400) + 0.02 for i in range(400)]
    out = simulate(cfg, algo, (0.5, 2.0), 3, 1.0, 1.0, lrs)
    assert out['runs'] == 6
    assert set(out['per_factor']) == {0.5, 2.0}
    assert 0.0 <= out['in_band_fraction'] <= 1.0
    assert out['ms_per_step'] > 0
    # the budget pulled every run towards T: none is left at its start
    # (the uniform init is below and above the 5M target of this toy)
    assert out['min_after_reach'] < float('inf')
