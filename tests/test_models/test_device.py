"""The search follows the model's device (users search on CUDA GPUs).

No GPU here, so the model goes to the ``meta`` device and the tests run
inside :class:`tests.helpers.CudaDeviceRules`, which refuses what CUDA refuses:
a CPU generator filling a tensor on another device, and an operation mixing
a CPU tensor with one on another device. A host sync (``.item()``,
``float()``, ``.tolist()``) fails on a meta tensor by itself, so a step that
runs through on meta has no host sync but the two it is designed to have:
turning the Direct Samples into layer widths (``choices_from_rows``) and the
one finiteness check at the end of the step (``raise_if_not_finite``).
"""

import pytest
import torch
import yaml
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmpretrain.structures import DataSample

from projects.dmcp.models import DMCP, DMCPChannelMutator
from projects.dmcp.models import algorithm as algorithm_module
from projects.dmcp.models.markov import sample_num_groups
from tests.helpers import CudaDeviceRules
from tests.helpers.models import hand_latency_table

META = torch.device('meta')


def make_algo(**kwargs) -> DMCP:
    arch = dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=512),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3),
    )
    kwargs.setdefault('target_flops', '10M')
    return DMCP(architecture=arch, input_shape=(3, 32, 32), seed=0, **kwargs)


def make_optim(algo: DMCP) -> OptimWrapperDict:
    return OptimWrapperDict(
        architecture=OptimWrapper(
            torch.optim.SGD(
                algo.architecture.parameters(), lr=0.1, momentum=0.9
            )
        ),
        mutator=OptimWrapper(
            torch.optim.SGD(algo.mutator.parameters(), lr=1.0, momentum=0.9)
        ),
    )


def make_batch(n: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(
        inputs=[
            torch.randint(0, 255, (3, 32, 32), generator=g, dtype=torch.uint8)
            for _ in range(n)
        ],
        data_samples=[DataSample().set_gt_label(i % 3) for i in range(n)],
    )


@pytest.fixture(scope='module')
def meta_algo() -> DMCP:
    return make_algo().to(META)


def test_rules_catch_a_cpu_generator_for_another_device():
    with CudaDeviceRules(), pytest.raises(RuntimeError, match='generator'):
        torch.rand(3, device=META, generator=torch.Generator())
    with CudaDeviceRules(), pytest.raises(RuntimeError, match='mixes'):
        torch.ones(3, device=META) * torch.ones(3)


def test_sample_num_groups_follows_alpha_device():
    alpha = torch.zeros(5, 9, device=META)
    with CudaDeviceRules():
        groups = sample_num_groups(alpha, torch.Generator().manual_seed(0))
    assert groups.device == META and groups.shape == (5,)


def test_direct_batch_stays_on_the_model_device(meta_algo):
    mutator = meta_algo.mutator
    with CudaDeviceRules():
        rows = mutator.sample_direct_batch(3, torch.Generator())
    assert rows.device == META
    assert rows.shape == (3, len(mutator.units))


def test_expected_flops_and_budget_loss_stay_on_device(meta_algo):
    with CudaDeviceRules():
        expected = meta_algo.mutator.expected_flops()
        loss = meta_algo.budget(expected)
    assert expected.device == META and loss.device == META


def test_expected_latency_and_direct_rows_stay_on_device(latency_table_file):
    algo = make_algo(**with_table(LATENCY, latency_table_file)).to(META)
    with CudaDeviceRules():
        expected = algo.cost.expected()
        loss = algo.budget(expected)
        rows = algo.mutator.sample_direct_batch(3, torch.Generator())
        values = algo.cost.of_rows(rows)
    assert expected.device == loss.device == values.device == META
    assert values.shape == (3,)


def test_markov_scaled_forward_on_device(meta_algo):
    x = torch.empty(2, 3, 32, 32, device=META)
    with CudaDeviceRules(), meta_algo.mutator.markov_scaling():
        out = meta_algo.architecture(x, mode='tensor')
    assert out.device == META and out.shape == (2, 3)


BERNOULLI = dict(
    type='DMCPChannelMutator',
    channel_unit_cfg=dict(num_groups=10, process='bernoulli'),
)
# the latency budget: its table (hand-made) filled in by the test
LATENCY = dict(budget='latency', target_flops=None)
ABLATIONS = [
    {},
    dict(mutator=BERNOULLI),
    dict(sandwich='original'),
    dict(arch_loss='flops_only'),
    dict(update_weights_after_warmup=False),
    dict(distill='inplace'),
    LATENCY,
    dict(LATENCY, arch_loss='flops_only'),
]


@pytest.fixture(scope='module')
def latency_table_file(tmp_path_factory) -> str:
    """A hand-made latency table of :func:`make_algo`'s network."""
    doc = hand_latency_table(make_algo().mutator, monotone=True)
    path = tmp_path_factory.mktemp('device_latency') / 'table.yaml'
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def with_table(ablation: dict, path: str) -> dict:
    """``ablation`` with the latency table and a reachable target."""
    if ablation.get('budget') != 'latency':
        return ablation
    probe = make_algo()
    probe.mutator.set_latency_table(yaml.safe_load(open(path)))
    t = probe.mutator.latency_table
    low, high = (t.lookup([k] * t.num_units) for k in (1, 10))
    return dict(ablation, latency_table=path, target_latency=(low + high) / 2)


@pytest.mark.parametrize('ablation', ABLATIONS, ids=lambda a: str(a))
@pytest.mark.parametrize('update_arch', [False, True])
def test_search_step_has_no_other_host_sync(
    update_arch: bool,
    ablation: dict,
    monkeypatch: pytest.MonkeyPatch,
    latency_table_file: str,
):
    """A whole stage 1 (+ stage 2) on the meta device, its two designed host
    syncs replaced by stand-ins that read no tensor data; the same for
    every ablation switch and for the latency budget."""
    algo = make_algo(**with_table(ablation, latency_table_file)).to(META)
    optim = make_optim(algo)
    synced = []

    def full_widths(self, rows):
        synced.append(tuple(rows.shape))
        return [self.sample_choices('max')] * rows.shape[0]

    monkeypatch.setattr(
        DMCPChannelMutator, 'choices_from_rows', full_widths, raising=False
    )
    monkeypatch.setattr(
        algorithm_module,
        'raise_if_not_finite',
        lambda checks: None,
        raising=False,
    )
    with CudaDeviceRules():
        log = algo.train_step(make_batch(), optim, update_arch=update_arch)
    skips_stage1 = update_arch and 'update_weights_after_warmup' in ablation
    shape = (algo.num_direct_samples, len(algo.mutator.units))
    assert synced == ([] if skips_stage1 else [shape])
    assert log and all(v.device == META for v in log.values())
    assert all(p.device == META for p in algo.parameters())


def test_direct_batch_draws_the_sequential_stream():
    """Drawing n subnets at once uses the generator exactly as n draws one
    by one do (so searches keep their subnets for a seed)."""
    mutator = make_algo().mutator
    rows = mutator.sample_direct_batch(3, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    one_by_one = [mutator.sample_choices('direct', g) for _ in range(3)]
    assert mutator.choices_from_rows(rows) == one_by_one


def test_sampler_is_portable_across_devices():
    """The sampler is a CPU generator whatever the model's device: its state
    saved from a model on one device resumes a model on another."""
    algo = make_algo()
    algo.sampler.manual_seed(123)
    torch.rand(5, generator=algo.sampler)
    state = {
        k: v for k, v in algo.state_dict().items() if k == 'sampler_state'
    }
    moved = make_algo().to(META)
    moved.load_state_dict(state, strict=False)
    assert moved.sampler.device.type == 'cpu'
    assert torch.equal(
        torch.rand(4, generator=moved.sampler),
        torch.rand(4, generator=algo.sampler),
    )
