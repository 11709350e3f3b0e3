"""The ablation switches of DMCP each do what they say: Bernoulli instead of
Markov (supplement D), the original sandwich rule (Table 4), no warmup
(Table 3), Table 5's schemes, in-place distillation and label smoothing
(the official code's settings)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper, OptimWrapperDict

import projects.dmcp  # noqa: F401
from projects.dmcp.engine.loop import DMCPTrainLoop
from projects.dmcp.models import DMCP, DMCPChannelUnit
from projects.dmcp.models.bernoulli import sample_num_groups_bernoulli
from projects.dmcp.models.distill import kl_to_teacher
from projects.dmcp.models.markov import sample_num_groups
from tests.test_models.test_algorithm import make_batch


def build(**kwargs) -> DMCP:
    torch.manual_seed(0)  # alpha's initial noise
    head = dict(type='LinearClsHead', num_classes=3, in_channels=512)
    head.update(kwargs.pop('head', {}))
    arch = dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=head,
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3),
    )
    kwargs.setdefault('target_flops', '5M')
    return DMCP(architecture=arch, input_shape=(3, 32, 32), seed=0, **kwargs)


def plain_sgd(algo: DMCP, lr_weights: float = 0.1) -> OptimWrapperDict:
    """SGD without momentum: one step moves alpha by exactly -grad."""
    return OptimWrapperDict(
        architecture=OptimWrapper(
            torch.optim.SGD(algo.architecture.parameters(), lr=lr_weights)
        ),
        mutator=OptimWrapper(
            torch.optim.SGD(algo.mutator.parameters(), lr=1.0)
        ),
    )


def weights(algo: DMCP) -> list:
    return [p.detach().clone() for p in algo.architecture.parameters()]


# ------------------------------------------------------------- Bernoulli
def test_bernoulli_marginals_are_not_nested():
    kw = dict(name='u', num_channels=8, num_groups=4, alpha_init_std=0.0)
    markov = DMCPChannelUnit(**kw)
    bern = DMCPChannelUnit(process='bernoulli', **kw)
    with torch.no_grad():
        for unit in (markov, bern):
            unit.alpha.copy_(torch.tensor([-3.0, 0.0, 3.0]))
    p = torch.sigmoid(torch.tensor([-3.0, 0.0, 3.0]))
    assert torch.allclose(bern.marginals(), torch.cat([torch.ones(1), p]))
    assert bern.marginals()[3] > bern.marginals()[1]  # not nested
    assert (markov.marginals().diff() <= 0).all()  # nested
    # same Eq. 8 from its own marginals: what the budget loss reads
    assert torch.allclose(
        bern.expected_channels(), (2 * torch.cat([torch.ones(1), p])).sum()
    )


def test_bernoulli_draws_groups_independently():
    alpha = torch.tensor([[-30.0, 30.0, 30.0]])  # group 2 off, 3 and 4 on
    g = torch.Generator().manual_seed(0)
    assert sample_num_groups_bernoulli(alpha, g).item() == 3
    assert sample_num_groups(alpha, g).item() == 1  # the chain stops at 2
    alpha = torch.zeros(20000, 9)
    counts = sample_num_groups_bernoulli(alpha, g).double()
    assert abs(counts.mean().item() - 5.5) < 0.05  # 1 + 9 * 0.5


def test_bernoulli_search_step_and_bad_process():
    algo = build(
        mutator=dict(
            type='DMCPChannelMutator',
            channel_unit_cfg=dict(num_groups=10, process='bernoulli'),
        )
    )
    assert algo.mutator.process == 'bernoulli'
    alpha0 = algo.mutator.alphas().detach().clone()
    algo.train_step(make_batch(), plain_sgd(algo))
    assert not torch.equal(algo.mutator.alphas(), alpha0)
    with pytest.raises(ValueError, match='channel_unit_cfg.process'):
        build(
            mutator=dict(
                type='DMCPChannelMutator',
                channel_unit_cfg=dict(process='gauss'),
            )
        )


# ------------------------------------------------------ sandwich rules
def sampled_rows(algo: DMCP, steps: int) -> torch.Tensor:
    rows = []
    original = algo.mutator.choices_from_rows

    def spy(r):
        rows.append(r.clone())
        return original(r)

    algo.mutator.choices_from_rows = spy
    optim = plain_sgd(algo)
    for _ in range(steps):
        algo.train_step(make_batch(), optim, update_arch=False)
    return torch.cat(rows)


def groups_of(algo: DMCP, rows: torch.Tensor) -> torch.Tensor:
    """Number of kept groups of every unit of every row."""
    ends = algo.mutator.group_ends  # (U, G)
    return (rows.T[:, :, None] >= ends[:, None, :]).sum(-1).T


def test_original_sandwich_draws_one_ratio_for_all_layers():
    algo = build(sandwich='original', num_direct_samples=3)
    groups = groups_of(algo, sampled_rows(algo, 3))
    assert groups.shape == (9, len(algo.mutator.units))
    assert (groups == groups[:, :1]).all()  # one ratio per subnet
    assert len(set(groups[:, 0].tolist())) > 1  # drawn, not fixed
    variant = build(num_direct_samples=3)
    groups = groups_of(variant, sampled_rows(variant, 1))
    assert not (groups == groups[:, :1]).all()  # per-layer widths


# ------------------------------------------------------------ no warmup
@pytest.mark.parametrize('warmup_epochs, expected', [(0, True), (1, False)])
def test_no_warmup_runs_the_architecture_step_from_iteration_1(
    warmup_epochs, expected
):
    calls = []
    model = SimpleNamespace(
        train_step=lambda data, optim_wrapper, update_arch: calls.append(
            update_arch
        )
    )
    runner = SimpleNamespace(
        model=model,
        optim_wrapper=None,
        call_hook=lambda *a, **k: None,
        visualizer=SimpleNamespace(),
    )
    loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2)
    loop = DMCPTrainLoop(runner, loader, 2, warmup_epochs=warmup_epochs)
    loop.run_iter(0, [0, 1])
    assert calls == [expected]


# -------------------------------------------------------- Table 5 schemes
def test_flops_only_gives_alpha_no_task_gradient():
    algo = build(arch_loss='flops_only')
    alphas = algo.mutator.arch_parameters()
    alpha0 = algo.mutator.alphas().detach().clone()
    loss = algo.budget(algo.mutator.expected_flops())
    grad = torch.stack(torch.autograd.grad(loss, alphas))
    assert grad.abs().sum() > 0
    log = algo.train_step(make_batch(), plain_sgd(algo))
    assert 'arch.loss_cls' not in log
    assert torch.allclose(algo.mutator.alphas(), alpha0 - grad, atol=1e-6)
    full = build()  # same alpha; the task loss moves it elsewhere
    full.train_step(make_batch(), plain_sgd(full))
    assert not torch.allclose(full.mutator.alphas(), alpha0 - grad)


def test_no_weight_update_in_the_iterative_phase():
    algo = build(update_weights_after_warmup=False)
    optim = plain_sgd(algo)
    w0, alpha0 = weights(algo), algo.mutator.alphas().detach().clone()
    log = algo.train_step(make_batch(), optim, update_arch=True)
    assert all(torch.equal(a, b) for a, b in zip(w0, weights(algo)))
    assert not torch.equal(algo.mutator.alphas(), alpha0)
    assert set(log) == {'arch.loss_cls', 'arch.loss_reg'}
    algo.train_step(make_batch(), optim, update_arch=False)  # warmup
    assert any(not torch.equal(a, b) for a, b in zip(w0, weights(algo)))


# ------------------------------------------------------- distillation
def test_kl_to_teacher_is_the_official_kl():
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 4, requires_grad=True)
    q, log_p = t.softmax(1), s.log_softmax(1)
    manual = (q * (q.log() - log_p)).sum(1).mean()
    loss = kl_to_teacher(s, t)
    assert torch.allclose(loss, manual)
    loss.backward()
    assert t.grad is None and s.grad is not None
    assert torch.allclose(kl_to_teacher(t, t), torch.zeros(()), atol=1e-6)


def test_inplace_distillation_loss_is_the_kl_to_the_max_output():
    algo = build(distill='inplace', num_direct_samples=0)
    algo.train()
    # lr 0: the weights stay, so the logits can be recomputed after
    log = algo.train_step(
        make_batch(), plain_sgd(algo, 0.0), update_arch=False
    )
    data = algo.data_preprocessor(make_batch(), True)
    with torch.no_grad():
        algo.mutator.set_subnet('max')
        teacher = algo.architecture(data['inputs'], mode='tensor')
        labels = torch.tensor(
            [d.gt_label.item() for d in data['data_samples']]
        )
        algo.mutator.set_subnet('min')
        with algo.mutator.frozen_norm_stats():
            student = algo.architecture(data['inputs'], mode='tensor')
        algo.mutator.set_subnet('max')
    assert torch.allclose(
        log['max.loss'], F.cross_entropy(teacher, labels), atol=1e-5
    )
    assert torch.allclose(
        log['min.loss'], kl_to_teacher(student, teacher), atol=1e-5
    )
    assert not torch.allclose(
        log['min.loss'], F.cross_entropy(student, labels), atol=1e-3
    )


def test_label_smoothing_is_the_heads_loss():
    algo = build(
        head=dict(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)),
        num_direct_samples=0,
    )
    algo.train()
    log = algo.train_step(
        make_batch(), plain_sgd(algo, 0.0), update_arch=False
    )
    data = algo.data_preprocessor(make_batch(), True)
    with torch.no_grad():
        logits = algo.architecture(data['inputs'], mode='tensor')
    labels = torch.tensor([d.gt_label.item() for d in data['data_samples']])
    smooth = F.one_hot(labels, 3) * 0.9 + 0.1 / 3
    expected = -(smooth * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(log['max.loss'], expected, atol=1e-5)


# ---------------------------------------------------------- bad values
@pytest.mark.parametrize(
    'key, value',
    [
        ('sandwich', 'sliced'),
        ('arch_loss', 'task_only'),
        ('distill', True),
        ('update_weights_after_warmup', 'no'),
    ],
)
def test_bad_switch_value_names_the_key(key, value):
    with pytest.raises(ValueError, match=f'model.{key}'):
        build(**{key: value})


def test_flops_only_without_budget_is_refused():
    with pytest.raises(ValueError, match='model.lambda_reg'):
        build(arch_loss='flops_only', lambda_reg=0.0)
