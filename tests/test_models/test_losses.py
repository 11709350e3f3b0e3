"""Tests of the budget regularisation of Eq. 13 (``losses.py``)."""

import math

import pytest
import torch

from projects.dmcp.models import DMCPBudgetLoss, budget_loss
from projects.dmcp.registry import MODELS
from tests.helpers.models import prepared, set_alphas

pytestmark = pytest.mark.usefixtures('torch_single_thread', 'seeded')


T = 1e9


def flops(value):
    return torch.tensor(float(value), dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize('mode', ['official', 'paper'])
@pytest.mark.parametrize('ratio', [0.99, 0.995, 1.0])
def test_zero_inside_margin(ratio, mode):
    e = flops(ratio * T)
    loss = budget_loss(e, T, gamma=0.99, mode=mode)
    assert loss.item() == 0.0
    assert loss.requires_grad  # still attached to the graph
    loss.backward()
    assert e.grad.item() == 0.0


@pytest.mark.parametrize('ratio', [1.5, 1.0001, 0.98, 0.2])
def test_paper_mode_is_log_distance_outside_margin(ratio):
    e = flops(ratio * T)
    loss = budget_loss(e, T, gamma=0.99, mode='paper')
    assert loss.item() == pytest.approx(math.log(abs(ratio * T - T)))
    loss.backward()
    # d log|E - T| / dE = 1 / (E - T)
    assert e.grad.item() == pytest.approx(1.0 / (ratio * T - T))


@pytest.mark.parametrize('ratio', [1.5, 1.0001, 0.98, 0.2])
def test_official_mode_measures_above_target_from_gamma_t(ratio):
    """Below the band as the paper; above it log(E - gamma*T) (official
    code), so the gradient is at most 1 / ((1 - gamma) * T) on both sides."""
    gamma = 0.99
    e = flops(ratio * T)
    loss = budget_loss(e, T, gamma=gamma, mode='official')
    pole = gamma * T if ratio > 1 else T
    assert loss.item() == pytest.approx(math.log(abs(ratio * T - pole)))
    loss.backward()
    assert e.grad.item() == pytest.approx(1.0 / (ratio * T - pole))
    assert abs(e.grad.item()) <= 1.0 / ((1 - gamma) * T)


@pytest.mark.parametrize('ratio', [0.996, 1.0001, 1.5, 3.0])
def test_bounded_mode_is_a_line_above_the_middle_of_the_band(ratio):
    """Above c = (1 + gamma) / 2 * T: log((1 - gamma) T) + (E - c) /
    ((1 - gamma) T), whose gradient is the bound 1 / ((1 - gamma) T)
    however far E is."""
    gamma = 0.99
    margin = (1 - gamma) * T
    middle = (1 + gamma) / 2 * T
    e = flops(ratio * T)
    loss = budget_loss(e, T, gamma=gamma)
    want = math.log(margin) + (ratio * T - middle) / margin
    assert loss.item() == pytest.approx(want)
    loss.backward()
    assert e.grad.item() == pytest.approx(1.0 / margin)


@pytest.mark.parametrize('ratio', [0.99, 0.993, 0.995])
def test_bounded_mode_is_zero_in_the_lower_half_of_the_band(ratio):
    e = flops(ratio * T)
    loss = budget_loss(e, T, gamma=0.99)
    assert loss.item() == 0.0
    loss.backward()
    assert e.grad.item() == 0.0


@pytest.mark.parametrize('ratio', [0.98, 0.2])
def test_bounded_mode_below_the_band_is_the_paper_form(ratio):
    e = flops(ratio * T)
    assert budget_loss(e, T).item() == pytest.approx(
        budget_loss(e, T, mode='paper').item()
    )


def test_unknown_mode_names_the_key():
    with pytest.raises(ValueError, match='model.budget_mode'):
        budget_loss(flops(T), T, mode='log')
    with pytest.raises(ValueError, match='model.budget_mode'):
        DMCPBudgetLoss(target_flops=T, mode='l2')


def test_gradient_pushes_expected_flops_toward_the_band():
    above = flops(1.3 * T)
    budget_loss(above, T, 0.9).backward()
    assert above.grad.item() > 0  # a descent step lowers E
    below = flops(0.5 * T)
    budget_loss(below, T, 0.9).backward()
    assert below.grad.item() < 0  # a descent step raises E
    # one small descent step moves E toward T from either side
    for e in (above, below):
        before = abs(e.item() - T)
        after = abs(e.item() - 1e15 * e.grad.item() - T)
        assert after < before


def test_gamma_one_at_target_is_zero_not_minus_inf():
    loss = budget_loss(flops(T), T, gamma=1.0)
    assert loss.item() == 0.0
    assert math.isfinite(budget_loss(flops(T + 1), T, gamma=1.0).item())


def test_loss_keeps_dtype():
    e = torch.tensor(2e9, dtype=torch.float32, requires_grad=True)
    assert budget_loss(e, T).dtype == torch.float32


def test_module_weights_the_loss_and_is_registered():
    module = MODELS.build(
        dict(
            type='DMCPBudgetLoss',
            target_flops=T,
            gamma=0.95,
            loss_weight=0.3,
        )
    )
    assert isinstance(module, DMCPBudgetLoss)
    e = flops(2 * T)
    margin = 0.05 * T
    assert module(e).item() == pytest.approx(
        0.3 * (math.log(margin) + (2 - 0.975) * T / margin)
    )
    assert module(flops(0.97 * T)).item() == 0.0


@pytest.mark.parametrize('gamma', [0, 0.0, -0.5, 1.01, 2, float('nan'), '0.9'])
def test_module_rejects_gamma_outside_unit_interval(gamma):
    with pytest.raises(ValueError, match='gamma'):
        DMCPBudgetLoss(target_flops=T, gamma=gamma)


@pytest.mark.parametrize('gamma', [1e-6, 0.5, 1, 1.0])
def test_module_accepts_gamma_in_unit_interval(gamma):
    assert DMCPBudgetLoss(target_flops=T, gamma=gamma).gamma == gamma


@pytest.mark.parametrize('weight', [-0.1, float('inf'), float('nan')])
def test_module_rejects_bad_loss_weight(weight):
    with pytest.raises(ValueError, match='lambda_reg'):
        DMCPBudgetLoss(target_flops=T, loss_weight=weight)


def test_budget_loss_alone_reaches_the_band_resnet18():
    """With frozen weights, Adam on the alphas with the budget loss alone
    moves E[FLOPs] from (almost) the full ResNet-18 into [gamma*T, T]."""
    model, mutator = prepared('resnet18', size=224)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    full = mutator.flops_of('max')
    target, gamma = 0.5 * full, 0.99
    set_alphas(mutator, 5.0)  # every transition probability ~0.993
    start = float(mutator.expected_flops())
    assert start > 0.9 * full
    optimizer = torch.optim.Adam(mutator.arch_parameters(), lr=0.05)
    history = []
    for _ in range(300):
        e = mutator.expected_flops()
        loss = budget_loss(e, target, gamma)
        history.append(float(e))
        if loss.item() == 0.0:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = float(mutator.expected_flops())
    assert gamma * target <= final <= target, (final / target, len(history))
    # it got there by lowering E (the sign of the gradient is right)
    assert history[-1] < history[0]
    # the network's weights were not touched
    for n, p in model.named_parameters():
        assert torch.equal(p, weights[n]), n
        assert p.grad is None
