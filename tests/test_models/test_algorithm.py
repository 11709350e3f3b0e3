"""DMCP.train_step on a small classifier: stage 1 and stage 2 mechanics."""

import pytest
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict

import projects.dmcp  # noqa: F401
from tests.test_models.test_device import make_algo as build_algo
from tests.test_models.test_device import make_batch


def make_algo(**kwargs):
    algo = build_algo(**kwargs)
    optim = OptimWrapperDict(
        architecture=OptimWrapper(
            torch.optim.SGD(
                algo.architecture.parameters(),
                lr=0.1,
                momentum=0.9,
                weight_decay=1e-4,
            )
        ),
        mutator=OptimWrapper(
            torch.optim.SGD(
                algo.mutator.parameters(), lr=1.0, weight_decay=0.0
            )
        ),
    )
    return algo, optim


def weights(algo):
    return [p.detach().clone() for p in algo.architecture.parameters()]


def test_warmup_step_updates_weights_only():
    algo, optim = make_algo()
    alpha0 = algo.mutator.alphas().detach().clone()
    w0 = weights(algo)
    log = algo.train_step(make_batch(), optim, update_arch=False)
    assert torch.equal(algo.mutator.alphas(), alpha0)
    assert any(not torch.equal(a, b) for a, b in zip(w0, weights(algo)))
    assert set(log) == {
        'max.loss',
        'min.loss',
        'direct0.loss',
        'direct1.loss',
        'loss',
    }
    assert set(algo.last_subnet_flops) == {'max', 'min', 'direct0', 'direct1'}
    assert algo.last_subnet_flops['max'] == algo.full_flops
    assert algo.last_subnet_flops['min'] == algo.min_flops


def test_arch_step_moves_alpha_not_weights_and_keeps_bn_stats():
    algo, optim = make_algo()
    algo.train()
    w0 = weights(algo)
    stats0 = [b.detach().clone() for b in algo.architecture.buffers()]
    alpha0 = algo.mutator.alphas().detach().clone()
    data = algo.data_preprocessor(make_batch(), True)
    checks = []
    log = algo._arch_step(data, optim['mutator'], checks)
    assert [what for what, _ in checks] == [
        'the task loss of the architecture step',
        'the budget loss (loss_reg)',
        'alpha after the update',
    ]
    assert not torch.equal(algo.mutator.alphas(), alpha0)
    for p, before in zip(algo.architecture.parameters(), w0):
        assert p.grad is None  # no weight gradient computed at all
        assert torch.equal(p, before)
    for b, before in zip(algo.architecture.buffers(), stats0):
        assert torch.equal(b, before)  # BN statistics untouched
    assert float(log['arch.loss_reg']) > 0  # E[FLOPs] is not in the band
    assert algo.last_expected is not None


def test_stage1_min_subnet_keeps_running_stats():
    """Only the max subnet moves the BN running statistics."""
    algo, optim = make_algo(num_direct_samples=0)
    bn = algo.architecture.backbone.bn1
    seen = []
    orig = bn.forward

    def spy(x):
        seen.append((x.shape[1], bn.update_stats))
        return orig(x)

    bn.forward = spy
    algo.train_step(make_batch(), optim, update_arch=False)
    full = bn.num_features
    assert seen[0] == (full, True)
    assert all(not upd for c, upd in seen[1:]) and seen[1][0] < full


def test_alpha_gets_no_weight_decay_from_its_optimizer():
    algo, optim = make_algo()
    for group in optim['mutator'].optimizer.param_groups:
        assert group['weight_decay'] == 0


def test_sampler_state_travels_in_state_dict():
    algo, _ = make_algo()
    state = algo.state_dict()
    assert 'sampler_state' in state
    first = algo.mutator.sample_choices('direct', algo.sampler)
    other, _ = make_algo()
    other.sampler.manual_seed(123)
    other.load_state_dict(state)
    assert other.mutator.sample_choices('direct', other.sampler) == first


@pytest.mark.parametrize(
    'target, match',
    [
        ('10G', 'outside what the supernet can reach'),
        (1000, 'outside what the supernet can reach'),
        ('lots', 'cannot read FLOPs'),
    ],
)
def test_bad_target_is_refused(target, match):
    with pytest.raises(ValueError, match=match):
        make_algo(target_flops=target)


def test_nan_task_loss_stops_with_the_quantity():
    algo, optim = make_algo()
    with torch.no_grad():
        algo.architecture.head.fc.weight.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match='task loss of the max'):
        algo.train_step(make_batch(), optim)
