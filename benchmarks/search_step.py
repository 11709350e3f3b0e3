"""Search-step benchmark: our DMCP against mmrazor 1.0.0's own DMCP.

Both algorithms wrap the same mmpretrain classifier (ResNet-18, or
MobileNetV2 at widen factor 1.0, 1000-class linear head, cross entropy), get
the same fixed random batch (``--batch-size`` images of ``--input-size``
squared, uint8, through mmpretrain's ``ClsDataPreprocessor``) and run in one
process with ``torch.set_num_threads(2)``. Every iteration runs our stage 1,
mmrazor's stage 1 and the stage-1 limit (which goes first rotates from one
iteration to the next), the plain training step, then our stage 2,
mmrazor's stage 2 and the stage-2 limit (again rotating). The first
``--warmup`` iterations are
not timed; each time is the median over ``--iters`` timed iterations
(``time.perf_counter`` around the one call named below). Each ratio (ours
over mmrazor, ours or mmrazor over a limit) is the median of the ratios of
the two arms *in the same iteration*, with the quartiles beside it (in the
JSON, ``ratio_quartiles``; the ratio of the two medians is kept as
``ratio_of_medians``): the two ran on the same subnets one right after the
other, while the subnets' size changes from iteration to iteration.

What is timed
-------------
**Our stage 1**: ``DMCP.train_step(batch, optim, update_arch=False)``: data
preprocessing, then the sandwich rule: the ``max`` subnet, the ``min`` subnet
and two Direct Samples, each one forward and one backward on the batch, then
one SGD step (``DMCP._weight_step``).

**mmrazor's stage 1**: ``mmrazor DMCP.train_step(batch, optim)`` with
``strategy=['max', 'min', 'scheduled_random', 'arch_random']`` (its configs'),
``arch_start_train`` out of reach so its architecture update does not run
inside it, and a ``ConfigurableDistiller`` without recorders or losses with
``distillation_times`` out of reach (no distillation: its hard-label losses
only). That is data preprocessing and four subnets, each one forward, one
backward and one SGD step (mmrazor steps the weight optimizer after every
subnet: ``optim_wrapper['architecture'].update_params`` per subnet).

**Same subnets**: before each iteration our four widths are drawn ahead
(``max``, ``min`` and two Direct Samples from our sampler, whose state is
restored so that our step draws the same two), and mmrazor's
``set_subnet`` is replaced, for its stage 1 only, by one that sets those
widths on the matching mmrazor units (``mutator.set_choices`` then
``mutator.modify_supernet_forward``, which is what its own ``sample_subnet``
does after choosing). So both train the same ``max`` and ``min`` subnets and
the same two random ones every iteration, except that in mmrazor's random
ones every unit is one channel wider (narrower, on alternate iterations, and
wherever the width would leave ``[1, C]``). The shift keeps the FLOPs equal
to within a fraction of a percent (both sums are reported) but leaves the two
no convolution shape in common: oneDNN JIT-compiles a kernel ("primitive")
per convolution shape and caches it, a new shape costs 0.5-1 ms per
convolution forward + backward on this machine, and with identical widths
whichever implementation ran second would reuse the kernels the first just
built (its stage 1 then looks 20-30% faster). In a search every step draws
new widths and pays for new kernels, so neither may. ``--shared-shapes``
gives mmrazor our exact widths; ``--own-sampling`` lets it draw its own
(its ``min`` keeps ``C - 18 * int(0.05 C)`` channels, ours the first of
``--num-groups`` groups; its random mode draws a uniform 19-way width per
unit).

**Our stage 2**: ``DMCP._arch_step(data, optim['mutator'])`` with ``data =
DMCP.data_preprocessor(batch, True)`` computed outside the timer: the
Markov-scaled full network forward, ``loss_cls + lambda_reg * loss_reg``
(expected FLOPs from the FLOPs table), a backward to ``alpha`` only and one
SGD step of ``alpha``.

**mmrazor's stage 2**: exactly the block its ``train_step`` runs when
``arch_train`` holds, with its preprocessed inputs computed outside the
timer::

    with optim['mutator'].optim_context(algo):
        optim['mutator'].zero_grad()
        algo._update_arch_params(inputs, data_samples, optim, mode='loss')

that is, in eval mode: the arch-param-scaled ``max`` network forward, a
backward (to every parameter, weights included) and a step of the mutator
optimizer; then the ``expected`` subnet's FLOPs by its ``ResourceEstimator``
(a 224x224 forward of the backbone, whatever the training input size), the
FLOPs loss, its backward and another step.

**Plain step**: a separate plain mmpretrain classifier of the same
architecture, ``ImageClassifier.train_step(batch, OptimWrapper(SGD))``:
preprocessing, forward, backward, one SGD step.

**The limits** (timed in the same iterations, in the same rotating order):

* **stage-1 limit**: the same four subnets built as plain, physically pruned
  mmpretrain classifiers (the retraining's surgery,
  ``projects.dmcp.models.prune.layer_shapes`` and ``resize_layers``; the
  ``max`` one is the full plain classifier), each one forward and one
  backward on the batch, after the same data preprocessing, then **one**
  SGD step of the full classifier's weights (the size of our step). The
  pruned subnets are rebuilt before every iteration (not timed), their
  Direct Samples two channels off per unit (one channel further than
  mmrazor's, for the same oneDNN reason), and their MACs, counted by running
  them, are checked against our FLOPs table once. ``overhead_stage1`` is our
  stage 1 over this time: what slicing the supernet costs beyond the subnets
  themselves.
* **stage-2 limit**: the plain full classifier with every weight frozen
  (``requires_grad=False``), in train mode, forward and cross entropy and a
  backward, with the stem convolution's output made a leaf that requires
  grad: every layer after it computes its input gradient and none a weight
  gradient, the work our stage 2 needs to reach alpha (its gradient enters
  at the first unit's scale, right after the stem). ``overhead_stage2`` is
  our stage 2 over this time.

mmrazor's stages over the same limits are reported too.

**Efficiency** (ours, and mmrazor's for comparison) is ``plain step time *
(sum of the four subnets' FLOPs / full FLOPs) / stage-1 time``: 1.0 means a
subnet costs what its FLOPs share of the plain step would (not a fair limit:
on a CPU a 2%-FLOPs subnet never runs in 2% of the time). The subnet FLOPs
are the ones our stage 1 reported in ``DMCP.last_subnet_flops`` over the
timed iterations (averaged), counted by our FLOPs table at the training input
size; mmrazor's efficiency uses its own four subnets' FLOPs, by the same
table (checked once at build time against the MACs its forward really runs).

**Peak memory**: measured separately, each arm (ours, mmrazor's, the
limits, the plain classifier) in a fresh subprocess of this script that
builds only that arm and runs ``--memory-iters`` iterations of stage 1 +
stage 2 (the limits: the four pruned subnets' stage 1 then the frozen
network's stage 2, one iteration's pruned subnets alive at a time; plain:
plain steps), ``--memory-jobs`` at a time with ``--memory-threads`` threads
each (default two at a time, one thread each: the two cores, not shared),
while the main process builds its first models, all finished before any
timing. Peak RSS is the process's ``VmHWM`` from
``/proc/self/status`` (the kernel's high-water mark of this address space;
``ru_maxrss`` of a child can inherit its parent's peak across fork/exec). The
increment over the RSS right after the imports is reported too. In its
subprocess mmrazor draws its own random subnets (it has no sampler of ours
there); the peak comes from the ``max`` subnet and stage 2, which are the same
for both.

Optimizers: SGD, lr 0.001, momentum 0.9, weight decay 1e-4 for the weights;
lr 0.001, momentum 0.9, no weight decay for the architecture parameters
(with 0.01 mmrazor's eval-mode architecture loss diverges to NaN within ten
iterations on the fixed random batch).

Settings: ``--input-size 160`` is the headline setting (ImageNet-like
resolution, where a layer's cost follows its width; 9.8 minutes on this
machine's 2 cores on 2026-12-03); the default 64 is the quick one (a minute
or two), where a CPU layer costs about the same at any width. Both at
batch 32, 10 timed iterations after 2 warm-up ones.

Usage::

    python benchmarks/search_step.py --input-size 160 --json  # headline
    python benchmarks/search_step.py                      # 64x64, quick
    python benchmarks/search_step.py --input-size 112 --backbones resnet18
    python benchmarks/search_step.py --iters 3 --warmup 1  # smoke run

``--json`` prints one JSON object on the last line: per backbone (under
``backbones``) ``overhead_stage1``, ``overhead_stage2``, ``stage1_ratio``,
``stage2_ratio``, the times, FLOPs shares and peak RSS of every arm; at the
top level the worst case over the backbones of ``overhead_stage1``,
``overhead_stage2``, ``stage1_ratio_vs_mmrazor``,
``stage2_ratio_vs_mmrazor``, ``efficiency`` and
``peak_rss_ratio_vs_mmrazor``.
"""

import argparse
import contextlib
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import projects.dmcp  # noqa: F401  (the shims, before torchvision)

BACKBONES = {
    'resnet18': dict(
        backbone=dict(
            type='ResNet',
            depth=18,
            num_stages=4,
            out_indices=(3,),
            style='pytorch',
        ),
        in_channels=512,
    ),
    'mobilenetv2': dict(
        backbone=dict(type='MobileNetV2', widen_factor=1.0),
        in_channels=1280,
    ),
}
NUM_CLASSES = 1000
LR = 0.001
#: Every reported ratio: (name, numerator's arm, denominator's arm).
RATIOS = (
    ('stage1_ratio', 'ours_s1', 'razor_s1'),
    ('stage2_ratio', 'ours_s2', 'razor_s2'),
    ('overhead_stage1', 'ours_s1', 'limit_s1'),
    ('overhead_stage2', 'ours_s2', 'limit_s2'),
    ('mmrazor_overhead_stage1', 'razor_s1', 'limit_s1'),
    ('mmrazor_overhead_stage2', 'razor_s2', 'limit_s2'),
)
#: What the peak-memory subprocesses run, one each (see the docstring).
MEMORY_ARMS = ('ours', 'mmrazor', 'limit', 'plain')


def _status_kb(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def classifier_cfg(backbone: str) -> dict:
    """mmpretrain config of the benchmarked classifier."""
    spec = BACKBONES[backbone]
    return dict(
        _scope_='mmpretrain',
        type='ImageClassifier',
        backbone=dict(spec['backbone']),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=spec['in_channels'],
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, 5),
        ),
        data_preprocessor=dict(
            type='ClsDataPreprocessor',
            num_classes=NUM_CLASSES,
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            to_rgb=True,
        ),
    )


def build_classifier(backbone: str, seed: int = 0):
    from mmpretrain.registry import MODELS

    torch.manual_seed(seed)
    return MODELS.build(classifier_cfg(backbone))


def make_batch(batch_size: int, size: int, seed: int = 0) -> dict:
    """A fixed random batch in the dataloader's format."""
    from mmpretrain.structures import DataSample

    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(
        0, 256, (batch_size, 3, size, size), generator=g, dtype=torch.uint8
    )
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g)
    samples = [DataSample().set_gt_label(int(lb)) for lb in labels]
    return dict(inputs=inputs, data_samples=samples)


def sgd(params, weight_decay: float = 1e-4):
    from mmengine.optim import OptimWrapper

    return OptimWrapper(
        torch.optim.SGD(
            list(params), lr=LR, momentum=0.9, weight_decay=weight_decay
        )
    )


# --------------------------------------------------------------------- ours
def build_ours(backbone: str, size: int, num_groups: int, seed: int = 0):
    from mmengine.optim import OptimWrapperDict

    from projects.dmcp.models import DMCP
    from projects.dmcp.models.flops import count_flops
    from projects.dmcp.utils import tensor_forward

    net = build_classifier(backbone, seed)
    full = count_flops(net, (3, size, size), tensor_forward)
    algo = DMCP(
        architecture=net,
        target_flops=full // 2,
        mutator=dict(
            type='DMCPChannelMutator',
            channel_unit_cfg=dict(
                type='DMCPChannelUnit', num_groups=num_groups
            ),
        ),
        input_shape=(3, size, size),
        seed=seed,
    )
    algo.train()
    optim = OptimWrapperDict(
        architecture=sgd(algo.architecture.parameters()),
        mutator=sgd(algo.mutator.parameters(), weight_decay=0.0),
    )
    return algo, optim


# ------------------------------------------------------------------ mmrazor
def _mmrazor_dmcp_classes() -> List[tuple]:
    """(registry, name, mmrazor 1.0.0's class) of every DMCP part that
    mmrazor's DMCP builds by name and ``projects.dmcp`` replaces in the
    registries (by its own class or by a guard that refuses to build)."""
    from mmrazor.models.architectures.dynamic_ops import DMCPBatchNorm2d
    from mmrazor.models.mutables.mutable_channel.units.dmcp_channel_unit import (  # noqa: E501
        DMCPChannelUnit,
    )
    from mmrazor.models.mutators.channel_mutator.dmcp_channel_mutator import (  # noqa: E501
        DMCPChannelMutator,
    )
    from mmrazor.models.task_modules.estimators.counters.op_counters import (
        DMCPBatchNorm2dCounter,
    )
    from mmrazor.registry import MODELS, TASK_UTILS

    return [
        (MODELS, 'DMCPChannelMutator', DMCPChannelMutator),
        (MODELS, 'DMCPChannelUnit', DMCPChannelUnit),
        (MODELS, 'DMCPBatchNorm2d', DMCPBatchNorm2d),
        (TASK_UTILS, 'DMCPBatchNorm2dCounter', DMCPBatchNorm2dCounter),
    ]


@contextlib.contextmanager
def mmrazor_registry() -> Iterator[None]:
    """Within the context mmrazor's registries build mmrazor 1.0.0's own
    DMCP parts (its mutator, units, batch norm and that batch norm's FLOPs
    counter, which its architecture step builds by name) instead of what
    ``projects.dmcp`` registered under those names; ours are restored on
    exit. Every call into mmrazor's DMCP runs inside it; ours never does.
    """
    saved = []
    for registry, name, cls in _mmrazor_dmcp_classes():
        saved.append((registry, name, registry._module_dict.get(name)))
        registry._module_dict[name] = cls
    try:
        yield
    finally:
        for registry, name, entry in saved:
            if entry is None:
                registry._module_dict.pop(name, None)
            else:
                registry._module_dict[name] = entry


def build_mmrazor(backbone: str, size: int, seed: int = 0):
    """mmrazor 1.0.0's DMCP on the same classifier, distillation off."""
    from mmengine import MessageHub
    from mmengine.optim import OptimWrapperDict
    from mmrazor.models.algorithms.pruning.dmcp import DMCP as RazorDMCP
    from mmrazor.models.distillers import ConfigurableDistiller

    MessageHub.get_current_instance().update_info('iter', 0)
    net = build_classifier(backbone, seed)
    never = 10**12
    with mmrazor_registry():
        algo = RazorDMCP(
            distiller=ConfigurableDistiller(),  # no recorders, no losses
            architecture=net,
            mutator_cfg=dict(
                type='DMCPChannelMutator',
                channel_unit_cfg=dict(
                    type='DMCPChannelUnit',
                    default_args=dict(choice_mode='number'),
                ),
                parse_cfg=dict(
                    type='ChannelAnalyzer',
                    # Parsing only (not timed): any size traces the graph.
                    demo_input=(1, 3, size, size),
                    tracer_type='BackwardTracer',
                ),
            ),
            strategy=['max', 'min', 'scheduled_random', 'arch_random'],
            arch_start_train=never,
            arch_train_freq=1,
            distillation_times=never,
            target_flops=1.0,
            flop_loss_weight=0.1,
        )
        # Budget: half the full network's FLOPs by its own estimator
        # (224x224).
        algo.set_subnet('max', arch_train=False)
        algo.target_flops = float(algo.calc_current_flops()) / 2 / 1e6
    from mmrazor.models.mutators.channel_mutator.dmcp_channel_mutator import (  # noqa: E501
        DMCPChannelMutator,
    )

    assert type(algo.mutator) is DMCPChannelMutator, type(algo.mutator)
    algo.train()
    optim = OptimWrapperDict(
        architecture=sgd(algo.architecture.parameters()),
        mutator=sgd(algo.mutator.parameters(), weight_decay=0.0),
    )
    return algo, optim


def unit_map(ours, razor) -> Dict[str, Optional[str]]:
    """mmrazor unit index (str) -> the name of our unit over the same
    layers (None if ours does not prune them)."""
    ours_of_layer = {}
    for spec in ours.mutator.specs:
        for name in spec.producers + spec.followers:
            ours_of_layer[name] = spec.name
    out = {}
    for gid, unit in enumerate(razor.mutator.units):
        names = [c.name for c in unit.output_related]
        hits = {ours_of_layer[n] for n in names if n in ours_of_layer}
        if len(hits) > 1:
            raise RuntimeError(
                f'mmrazor unit {unit.name} spans our units {sorted(hits)}'
            )
        out[str(gid)] = hits.pop() if hits else None
    return out


class SameSubnets:
    """Replaces mmrazor's ``set_subnet`` during its stage 1 by one that sets
    the widths our stage 1 trains in the same iteration."""

    EXPECTED = {'max': 'max', 'min': 'min', 'random': 'direct'}

    def __init__(self, razor, mapping: Dict[str, Optional[str]]) -> None:
        self.razor = razor
        self.mapping = mapping
        self.plan: List[tuple] = []
        self.original = razor.set_subnet
        razor.set_subnet = self

    def to_razor(self, choices: Dict[str, int]) -> Dict[str, int]:
        units = self.razor.mutator.units
        return {
            gid: (choices[name] if name else units[int(gid)].num_channels)
            for gid, name in self.mapping.items()
        }

    @contextlib.contextmanager
    def use(self, plan: List[tuple]) -> Iterator[None]:
        self.plan = list(plan)
        try:
            yield
        finally:
            left, self.plan = self.plan, []
            if left:
                raise RuntimeError(f'mmrazor left {len(left)} subnets unused')

    def __call__(self, mode: str, arch_train=None) -> None:
        if not self.plan:
            return self.original(mode, arch_train)
        kind, choices = self.plan.pop(0)
        if self.EXPECTED.get(mode) != kind:
            raise RuntimeError(f'mmrazor asked for {mode}, planned {kind}')
        if arch_train is None:
            arch_train = self.razor.arch_train
        self.razor.mutator.set_choices(self.to_razor(choices))
        self.razor.mutator.modify_supernet_forward(arch_train)


def shifted_plan(ours, plan: List[tuple], step: int) -> List[tuple]:
    """The plan with every unit of the Direct Samples ``step`` channels
    wider (``-step`` where that would leave ``[1, C]``): nearly the same
    FLOPs, but no convolution shape in common, so that neither
    implementation runs on the oneDNN primitives (JIT-compiled kernels,
    cached by shape) that the other just created for the same widths. In
    a search every step draws new widths and pays for new primitives."""
    sizes = {u.name: u.num_channels for u in ours.mutator.units}
    out = []
    for kind, choices in plan:
        if kind == 'direct':
            choices = {
                n: w + step if 1 <= w + step <= sizes[n] else w - step
                for n, w in choices.items()
            }
        out.append((kind, choices))
    return out


# ------------------------------------------------------------------ stages
def ours_plan(ours) -> List[tuple]:
    """The four subnets our next stage 1 will train, drawn ahead."""
    mut = ours.mutator
    state = ours.sampler.get_state()
    direct = [
        mut.sample_choices('direct', ours.sampler)
        for _ in range(ours.num_direct_samples)
    ]
    ours.sampler.set_state(state)
    return [
        ('max', mut.sample_choices('max')),
        ('min', mut.sample_choices('min')),
    ] + [('direct', d) for d in direct]


def ours_stage1(ours, optim, batch):
    return ours.train_step(batch, optim, update_arch=False)


def ours_stage2(ours, optim, data):
    return ours._arch_step(data, optim['mutator'])


def razor_stage1(razor, optim, batch):
    return razor.train_step(batch, optim)


def razor_stage2(razor, optim, inputs, samples):
    with optim['mutator'].optim_context(razor):
        optim['mutator'].zero_grad()
        return razor._update_arch_params(inputs, samples, optim, mode='loss')


# ------------------------------------------------------------------ limits
def first_conv(net) -> torch.nn.Module:
    """The first convolution of a classifier in module order (the stem)."""
    return next(
        m
        for m in net.modules()
        if isinstance(m, torch.nn.modules.conv._ConvNd)
    )


def _leaf_output(module, args, out):
    return out.detach().requires_grad_()


def build_limit2(backbone: str):
    """The stage-2 limit: the plain classifier with frozen weights (no
    parameter requires grad), in train mode, whose stem convolution's output
    is a leaf that requires grad. Its backward therefore runs every layer's
    input gradient after the stem and no weight gradient, which is what our
    stage 2 must differentiate to reach the first unit's scale."""
    net = build_classifier(backbone)
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    first_conv(net).register_forward_hook(_leaf_output)
    return net


def limit_stage2(net, data) -> None:
    losses = net(**data, mode='loss')
    loss, _ = net.parse_losses(losses)
    loss.backward()


def pruned_nets(
    pristine, ours, plan: List[tuple], check: bool = False
) -> List[torch.nn.Module]:
    """The non-``max`` subnets of ``plan`` as plain, physically pruned
    classifiers (copies of ``pristine`` whose resized layers are fresh
    torch layers; :func:`projects.dmcp.models.prune.layer_shapes` and
    ``resize_layers``, the retraining's surgery). With ``check`` each one's
    MACs, counted by running it, must equal our FLOPs table's."""
    from projects.dmcp.models.flops import count_flops
    from projects.dmcp.models.prune import layer_shapes, resize_layers
    from projects.dmcp.utils import tensor_forward

    mut = ours.mutator
    nets = []
    for kind, choices in plan:
        if kind == 'max':
            continue
        net = copy.deepcopy(pristine)
        resize_layers(net, *layer_shapes(mut.trace, mut.specs, choices))
        net.train()
        if check:
            got = count_flops(net, ours.input_shape, tensor_forward)
            want = mut.subnet_flops(choices)
            if got != want:
                raise RuntimeError(
                    f'the pruned {kind} subnet runs {got} MACs, ours {want}'
                )
        nets.append(net)
    return nets


def limit_stage1(full, full_optim, nets, batch) -> None:
    """The stage-1 limit: the full plain classifier (the ``max`` subnet) and
    the three pruned ones each forward and backward on the batch, then one
    SGD step of the full network's weights (the size of ours)."""
    data = full.data_preprocessor(batch, True)
    for net in [full] + nets:
        losses = net(**data, mode='loss')
        loss, _ = net.parse_losses(losses)
        loss.backward()
    full_optim.step()
    full_optim.zero_grad()


def paired_ratio(num: List[float], den: List[float]) -> Dict[str, float]:
    """The median and quartiles of ``num[i] / den[i]`` over iterations.

    The two arms of a ratio run on the same random subnets in the same
    iteration, one right after the other, and the subnets' size changes
    from one iteration to the next (a Direct Sample keeps 10-50% of the
    FLOPs). A per-iteration ratio cancels that, and a drift of the
    machine's speed, where the ratio of two medians, taken over different
    iterations, does not.

    Args:
        num (List[float]): Times of the numerator's arm, one per iteration.
        den (List[float]): Times of the denominator's arm, same iterations.

    Returns:
        Dict[str, float]: ``median``, ``q1`` and ``q3`` of the ratios (the
        quartiles by ``statistics.quantiles``, inclusive; all three equal
        for a single iteration).
    """
    if len(num) != len(den) or not num:
        raise ValueError(
            f'paired_ratio needs equal, non-empty lists: {len(num)} and '
            f'{len(den)} times'
        )
    ratios = [a / b for a, b in zip(num, den)]
    if len(ratios) == 1:
        return dict(median=ratios[0], q1=ratios[0], q3=ratios[0])
    q1, _, q3 = statistics.quantiles(ratios, n=4, method='inclusive')
    return dict(median=statistics.median(ratios), q1=q1, q3=q3)


def timed(fn: Callable, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def timed_mmrazor(fn: Callable, *args) -> float:
    """:func:`timed` with mmrazor's DMCP parts in its registries (the swap
    itself is outside the timer)."""
    with mmrazor_registry():
        return timed(fn, *args)


# ----------------------------------------------------------------- memory
def memory_worker(args) -> dict:
    """Build one implementation in this fresh process, run it, report
    VmHWM (peak RSS) in MiB."""
    torch.set_num_threads(args.threads)
    import mmpretrain.models  # noqa: F401
    import mmrazor.models  # noqa: F401

    base = _status_kb('VmRSS')
    which, backbone = args.memory_worker, args.backbones[0]
    batch = make_batch(args.batch_size, args.input_size)
    n = args.memory_iters
    if which == 'ours':
        algo, optim = build_ours(backbone, args.input_size, args.num_groups)
        data = algo.data_preprocessor(batch, True)
        for _ in range(n):
            ours_stage1(algo, optim, batch)
            ours_stage2(algo, optim, data)
    elif which == 'mmrazor':
        algo, optim = build_mmrazor(backbone, args.input_size)
        inputs, samples = algo.data_preprocessor(batch, True).values()
        with mmrazor_registry():
            for _ in range(n):
                razor_stage1(algo, optim, batch)
                razor_stage2(algo, optim, inputs, samples)
    elif which == 'limit':
        from projects.dmcp.models.prune import layer_shapes, resize_layers

        # ours only to draw the subnets (its trace, units and sampler);
        # freed before the limit runs
        algo, _ = build_ours(backbone, args.input_size, args.num_groups)
        mut = algo.mutator
        shapes = []
        for _ in range(n):
            plan = ours_plan(algo)
            # ours_plan leaves the sampler where it was: new draws
            algo.sampler.manual_seed(len(shapes) + 1)
            shapes.append(
                [
                    layer_shapes(mut.trace, mut.specs, choices)
                    for kind, choices in plan
                    if kind != 'max'
                ]
            )
        del algo, mut
        gc.collect()
        full = build_classifier(backbone)
        full.train()
        ow = sgd(full.parameters())
        frozen = build_limit2(backbone)
        data = frozen.data_preprocessor(batch, True)
        for i in range(n):
            nets = [
                resize_layers(build_classifier(backbone), *sh).train()
                for sh in shapes[i]
            ]
            limit_stage1(full, ow, nets, batch)
            del nets
            limit_stage2(frozen, data)
    else:
        net = build_classifier(backbone)
        net.train()
        ow = sgd(net.parameters())
        for _ in range(n):
            net.train_step(batch, ow)
    peak = _status_kb('VmHWM')
    return dict(
        peak_rss_mib=peak / 1024,
        increment_mib=(peak - base) / 1024,
        base_rss_mib=base / 1024,
    )


def memory_commands(args) -> Dict[tuple, list]:
    """The subprocess command of every (backbone, implementation)."""
    cmds = {}
    for backbone in args.backbones:
        for which in MEMORY_ARMS:
            cmds[(backbone, which)] = [
                sys.executable,
                os.path.abspath(__file__),
                '--memory-worker',
                which,
                '--backbones',
                backbone,
                '--input-size',
                str(args.input_size),
                '--batch-size',
                str(args.batch_size),
                '--num-groups',
                str(args.num_groups),
                '--memory-iters',
                str(args.memory_iters),
                '--threads',
                str(args.memory_threads),
            ]
    return cmds


class MemoryJobs:
    """Runs the peak-memory subprocesses, ``jobs`` at a time, in the
    background; :meth:`wait` returns their results."""

    def __init__(self, cmds: Dict[tuple, list], jobs: int) -> None:
        self.pending = list(cmds.items())
        self.jobs = max(1, jobs)
        self.running: Dict[tuple, tuple] = {}
        self.results: Dict[tuple, dict] = {}
        self.poll()

    def poll(self) -> bool:
        """Collect finished workers, start pending ones; True when all
        are done."""
        for key, (proc, out, err) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[key]
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
            out.close()
            err.close()
            if proc.returncode != 0:
                raise RuntimeError(
                    f'memory worker {key} failed:\n{stderr[-3000:]}'
                )
            self.results[key] = json.loads(stdout.strip().splitlines()[-1])
        while self.pending and len(self.running) < self.jobs:
            key, cmd = self.pending.pop(0)
            # Files, not pipes: a worker's logs must never fill a pipe.
            out = tempfile.TemporaryFile('w+')
            err = tempfile.TemporaryFile('w+')
            self.running[key] = (
                subprocess.Popen(cmd, stdout=out, stderr=err),
                out,
                err,
            )
        return not (self.pending or self.running)

    def wait(self) -> Dict[tuple, dict]:
        while not self.poll():
            time.sleep(0.2)
        return self.results


# ------------------------------------------------------------------- main
def check_same_flops(ours, razor, same: SameSubnets, size: int) -> None:
    """Set one Direct Sample of ours on mmrazor's supernet and check, by
    counting the MACs its forward actually runs, that it is the subnet our
    FLOPs table says."""
    from projects.dmcp.models.flops import count_flops
    from projects.dmcp.utils import tensor_forward

    choices = ours.mutator.sample_choices(
        'direct', torch.Generator().manual_seed(12345)
    )
    with mmrazor_registry():
        razor.mutator.set_choices(same.to_razor(choices))
        razor.mutator.modify_supernet_forward(False)
        theirs = count_flops(
            razor.architecture, (3, size, size), tensor_forward
        )
        razor.set_subnet('max', arch_train=False)
    want = ours.mutator.subnet_flops(choices)
    if theirs != want:
        raise RuntimeError(
            f'the same widths run {theirs} MACs in mmrazor, {want} in ours'
        )


def build_all(args, backbone: str, log: Callable) -> dict:
    """Build ours, mmrazor's and the plain classifier (not timed)."""
    t0 = time.perf_counter()
    ours, ours_optim = build_ours(backbone, args.input_size, args.num_groups)
    razor, razor_optim = build_mmrazor(backbone, args.input_size)
    plain = build_classifier(backbone)
    plain.train()
    plain_optim = sgd(plain.parameters())
    limit_full = build_classifier(backbone)
    limit_full.train()
    limit_optim = sgd(limit_full.parameters())
    pristine = build_classifier(backbone)
    limit2 = build_limit2(backbone)
    mapping = unit_map(ours, razor)
    same = None if args.own_sampling else SameSubnets(razor, mapping)
    if same is not None:
        check_same_flops(ours, razor, same, args.input_size)
    only_ours = len(set(ours.mutator.unit_names) - set(mapping.values()))
    log(
        f'[{backbone}] built in {time.perf_counter() - t0:.1f}s: ours '
        f'{len(ours.mutator.units)} units, mmrazor '
        f'{len(razor.mutator.units)} units '
        f'({sum(v is None for v in mapping.values())} not pruned by ours, '
        f'{only_ours} not pruned by mmrazor)'
    )
    return dict(
        backbone=backbone,
        ours=ours,
        ours_optim=ours_optim,
        razor=razor,
        razor_optim=razor_optim,
        plain=plain,
        plain_optim=plain_optim,
        limit_full=limit_full,
        limit_optim=limit_optim,
        pristine=pristine,
        limit2=limit2,
        same=same,
    )


def bench_backbone(args, built: dict, log: Callable) -> dict:
    """Time the stages (see the module docstring)."""
    backbone, ours, razor = built['backbone'], built['ours'], built['razor']
    ours_optim, razor_optim = built['ours_optim'], built['razor_optim']
    plain, plain_optim, same = (
        built['plain'],
        built['plain_optim'],
        built['same'],
    )
    batch = make_batch(args.batch_size, args.input_size)
    data = ours.data_preprocessor(batch, True)
    r_inputs, r_samples = razor.data_preprocessor(batch, True).values()

    limit_full, limit_optim = built['limit_full'], built['limit_optim']
    pristine, limit2 = built['pristine'], built['limit2']
    limit_data = limit2.data_preprocessor(batch, True)

    times = {
        k: []
        for k in (
            'ours_s1',
            'razor_s1',
            'limit_s1',
            'plain',
            'ours_s2',
            'razor_s2',
            'limit_s2',
        )
    }
    subnet_flops: List[Dict[str, int]] = []
    razor_flops: List[int] = []
    limit_flops: List[int] = []
    total = args.warmup + args.iters

    def run_ours1(razor_plan):
        return timed(ours_stage1, ours, ours_optim, batch)

    def run_razor1(razor_plan):
        if same is None:
            return timed_mmrazor(razor_stage1, razor, razor_optim, batch)
        with same.use(razor_plan):
            return timed_mmrazor(razor_stage1, razor, razor_optim, batch)

    def run_ours2(razor_plan):
        return timed(ours_stage2, ours, ours_optim, data)

    def run_razor2(razor_plan):
        return timed_mmrazor(
            razor_stage2, razor, razor_optim, r_inputs, r_samples
        )

    nets: List[torch.nn.Module] = []

    def run_limit1(razor_plan):
        return timed(limit_stage1, limit_full, limit_optim, nets, batch)

    def run_limit2(razor_plan):
        return timed(limit_stage2, limit2, limit_data)

    for it in range(total):
        keep = it >= args.warmup
        plan = ours_plan(ours)
        step = 1 if it % 2 == 0 else -1
        razor_plan = (
            plan if args.shared_shapes else shifted_plan(ours, plan, step)
        )
        # the pruned subnets two channels off per unit: no convolution
        # shape in common with ours nor with mmrazor's
        limit_plan = (
            plan if args.shared_shapes else shifted_plan(ours, plan, 2 * step)
        )
        nets[:] = pruned_nets(pristine, ours, limit_plan, check=it == 0)
        # the order of the three rotates from one iteration to the next
        arms = [
            ('ours_s1', run_ours1),
            ('razor_s1', run_razor1),
            ('limit_s1', run_limit1),
        ]
        for key, fn in arms[it % 3 :] + arms[: it % 3]:
            dt = fn(razor_plan)
            if keep:
                times[key].append(dt)
        nets.clear()
        trained = dict(ours.last_subnet_flops)
        want = [ours.mutator.subnet_flops(c) for _, c in plan]
        if list(trained.values()) != want:
            raise RuntimeError(
                f'our stage 1 trained {trained}, planned {want}'
            )
        dt = timed(plain.train_step, batch, plain_optim)
        if keep:
            times['plain'].append(dt)
            subnet_flops.append(trained)
            if same is not None:
                razor_flops.append(
                    sum(ours.mutator.subnet_flops(c) for _, c in razor_plan)
                )
            limit_flops.append(
                sum(ours.mutator.subnet_flops(c) for _, c in limit_plan)
            )
        arms = [
            ('ours_s2', run_ours2),
            ('razor_s2', run_razor2),
            ('limit_s2', run_limit2),
        ]
        for key, fn in arms[it % 3 :] + arms[: it % 3]:
            dt = fn(razor_plan)
            if keep:
                times[key].append(dt)
        log(
            f'[{backbone}] iter {it + 1}/{total}'
            + ('' if keep else ' (warmup)')
            + ': '
            + ', '.join(f'{k} {v[-1]:.3f}s' for k, v in times.items() if v)
        )

    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {name: paired_ratio(times[a], times[b]) for name, a, b in RATIOS}
    full = ours.full_flops
    tags = list(subnet_flops[0])
    share = {
        t: statistics.mean(f[t] for f in subnet_flops) / full for t in tags
    }
    flops_sum = sum(share.values())
    # mmrazor's four subnets (ours, or shifted by a channel): their FLOPs
    # by our table; with --own-sampling unknown, taken as ours.
    razor_sum = (
        statistics.mean(razor_flops) / full if razor_flops else flops_sum
    )
    return dict(
        backbone=backbone + ('' if backbone != 'mobilenetv2' else '-1.0x'),
        input_size=args.input_size,
        batch_size=args.batch_size,
        full_mflops=full / 1e6,
        subnet_flops_share=share,
        subnet_flops_sum_over_full=flops_sum,
        mmrazor_subnet_flops_sum_over_full=razor_sum,
        same_subnets=same is not None,
        shared_shapes=bool(args.shared_shapes) and same is not None,
        plain_step_s=med['plain'],
        ours_stage1_s=med['ours_s1'],
        mmrazor_stage1_s=med['razor_s1'],
        stage1_ratio=ratios['stage1_ratio']['median'],
        ours_stage2_s=med['ours_s2'],
        mmrazor_stage2_s=med['razor_s2'],
        stage2_ratio=ratios['stage2_ratio']['median'],
        limit_stage1_s=med['limit_s1'],
        limit_stage2_s=med['limit_s2'],
        limit_subnet_flops_sum_over_full=statistics.mean(limit_flops) / full,
        overhead_stage1=ratios['overhead_stage1']['median'],
        overhead_stage2=ratios['overhead_stage2']['median'],
        mmrazor_overhead_stage1=ratios['mmrazor_overhead_stage1']['median'],
        mmrazor_overhead_stage2=ratios['mmrazor_overhead_stage2']['median'],
        efficiency=med['plain'] * flops_sum / med['ours_s1'],
        mmrazor_efficiency=med['plain'] * razor_sum / med['razor_s1'],
        ratio_quartiles={k: (v['q1'], v['q3']) for k, v in ratios.items()},
        ratio_of_medians={name: med[a] / med[b] for name, a, b in RATIOS},
        best_s={k: min(v) for k, v in times.items()},
        times_s={k: v for k, v in times.items()},
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--backbones',
        nargs='+',
        default=['resnet18', 'mobilenetv2'],
        choices=sorted(BACKBONES),
    )
    p.add_argument('--input-size', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--iters', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument(
        '--num-groups',
        type=int,
        default=10,
        help='groups per unit of our DMCP (sets our min subnet: 1 group)',
    )
    p.add_argument('--threads', type=int, default=2)
    p.add_argument(
        '--memory-iters',
        type=int,
        default=2,
        help='iterations each peak-memory subprocess runs',
    )
    p.add_argument(
        '--memory-threads',
        type=int,
        default=1,
        help='threads of each peak-memory subprocess (with --memory-jobs 2 '
        'on 2 cores, one each, so that they do not share a core)',
    )
    p.add_argument(
        '--memory-jobs',
        type=int,
        default=2,
        help='peak-memory subprocesses run at once (they run while the '
        'main process builds its models, and end before any timing)',
    )
    p.add_argument(
        '--own-sampling',
        action='store_true',
        help="let mmrazor draw its own min/random subnets instead of ours'",
    )
    p.add_argument(
        '--shared-shapes',
        action='store_true',
        help='give mmrazor exactly our Direct Samples (by default each of '
        'its units is one channel off, so that the two never share '
        'oneDNN primitives)',
    )
    p.add_argument(
        '--json',
        action='store_true',
        help='print one JSON object on the last line',
    )
    p.add_argument('--memory-worker', choices=MEMORY_ARMS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(args)))
        return 0
    start = time.perf_counter()
    args.load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(f'[{time.perf_counter() - start:6.1f}s] {msg}', flush=True)

    # The peak-memory subprocesses run while this process imports and
    # builds its first models, and all end before anything is timed.
    jobs = MemoryJobs(memory_commands(args), args.memory_jobs)
    import mmpretrain.models  # noqa: F401

    results = {}
    mem = None
    for backbone in args.backbones:
        built = build_all(args, backbone, log)
        if mem is None:
            mem = jobs.wait()
            log('peak-memory subprocesses done')
        results[backbone] = bench_backbone(args, built, log)
        del built
        for which in MEMORY_ARMS:
            results[backbone][f'{which}_memory'] = mem[(backbone, which)]
        r = results[backbone]
        r['peak_rss_ratio'] = (
            r['ours_memory']['peak_rss_mib']
            / r['mmrazor_memory']['peak_rss_mib']
        )
        r['peak_rss_increment_ratio'] = (
            r['ours_memory']['increment_mib']
            / r['mmrazor_memory']['increment_mib']
        )

    print_report(args, results, time.perf_counter() - start)
    if args.json:
        rs = list(results.values())
        summary = dict(
            overhead_stage1=max(r['overhead_stage1'] for r in rs),
            overhead_stage2=max(r['overhead_stage2'] for r in rs),
            stage1_ratio_vs_mmrazor=max(r['stage1_ratio'] for r in rs),
            stage2_ratio_vs_mmrazor=max(r['stage2_ratio'] for r in rs),
            efficiency=min(r['efficiency'] for r in rs),
            peak_rss_ratio_vs_mmrazor=max(r['peak_rss_ratio'] for r in rs),
            summary_is='worst case over backbones',
            backbones={k: _public(v) for k, v in results.items()},
            settings=dict(
                input_size=args.input_size,
                batch_size=args.batch_size,
                iters=args.iters,
                warmup=args.warmup,
                threads=args.threads,
                memory_threads=args.memory_threads,
                memory_iters=args.memory_iters,
                num_groups=args.num_groups,
                same_subnets=not args.own_sampling,
                shared_shapes=args.shared_shapes,
                load_average_start=args.load_start,
                load_average_end=os.getloadavg()[0],
            ),
            wall_time_s=time.perf_counter() - start,
        )
        print(json.dumps(summary))
    return 0


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != 'times_s'}


def _cell(result: dict, key: str, fmt: str) -> str:
    """One figure of the table; a ratio with its quartiles over the
    iterations, ``median [q1, q3]``."""
    text = fmt.format(result[key])
    if key in result['ratio_quartiles']:
        q1, q3 = result['ratio_quartiles'][key]
        text += f' [{q1:.2f}, {q3:.2f}]'
    return text


def print_report(args, results: dict, wall: float) -> None:
    rows = []

    def row(name, *cells):
        rows.append((name,) + cells)

    names = list(results)
    row('', *names)
    for key, label, fmt in (
        ('plain_step_s', 'plain full-net step (s)', '{:.3f}'),
        ('ours_stage1_s', 'stage 1 ours (s)', '{:.3f}'),
        ('mmrazor_stage1_s', 'stage 1 mmrazor (s)', '{:.3f}'),
        ('limit_stage1_s', 'stage 1 limit: 4 pruned subnets (s)', '{:.3f}'),
        ('stage1_ratio', 'stage 1 ratio ours/mmrazor', '{:.2f}'),
        ('overhead_stage1', 'stage 1 overhead ours/limit', '{:.2f}'),
        ('mmrazor_overhead_stage1', 'stage 1 mmrazor/limit', '{:.2f}'),
        ('ours_stage2_s', 'stage 2 ours (s)', '{:.3f}'),
        ('mmrazor_stage2_s', 'stage 2 mmrazor (s)', '{:.3f}'),
        ('limit_stage2_s', 'stage 2 limit: frozen full net (s)', '{:.3f}'),
        ('stage2_ratio', 'stage 2 ratio ours/mmrazor', '{:.2f}'),
        ('overhead_stage2', 'stage 2 overhead ours/limit', '{:.2f}'),
        ('mmrazor_overhead_stage2', 'stage 2 mmrazor/limit', '{:.2f}'),
        ('subnet_flops_sum_over_full', '4 subnets FLOPs / full', '{:.3f}'),
        (
            'mmrazor_subnet_flops_sum_over_full',
            "mmrazor's 4 subnets FLOPs / full",
            '{:.3f}',
        ),
        (
            'limit_subnet_flops_sum_over_full',
            "limit's 4 subnets FLOPs / full",
            '{:.3f}',
        ),
        ('efficiency', 'efficiency ours', '{:.2f}'),
        ('mmrazor_efficiency', 'efficiency mmrazor', '{:.2f}'),
    ):
        row(label, *(_cell(results[n], key, fmt) for n in names))
    row(
        'subnet FLOPs share',
        *(
            ' '.join(
                f'{t}={v:.2f}'
                for t, v in results[n]['subnet_flops_share'].items()
            )
            for n in names
        ),
    )
    for which in MEMORY_ARMS:
        row(
            f'peak RSS {which} (MiB, +over imports)',
            *(
                '{peak_rss_mib:.0f} (+{increment_mib:.0f})'.format(
                    **results[n][f'{which}_memory']
                )
                for n in names
            ),
        )
    row(
        'peak RSS ratio ours/mmrazor',
        *(f'{results[n]["peak_rss_ratio"]:.2f}' for n in names),
    )
    row(
        'increment ratio ours/mmrazor',
        *(f'{results[n]["peak_rss_increment_ratio"]:.2f}' for n in names),
    )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    print()
    print(
        f'DMCP search step, ours vs mmrazor 1.0.0: input '
        f'{args.input_size}x{args.input_size}, batch {args.batch_size}, '
        f'{args.threads} threads, median of {args.iters} iterations after '
        f'{args.warmup} warm-up (ratios: median [quartiles] of the '
        'per-iteration ratios); '
        + (
            'each draws its own subnets'
            if args.own_sampling
            else 'both train the same 4 subnets per step'
            + (
                ''
                if args.shared_shapes
                else " (mmrazor's random ones one channel off per unit)"
            )
        )
    )
    for r in rows:
        print(
            '  '.join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    rs = list(results.values())
    print(
        'Summary (worst case over backbones '
        f'{", ".join(names)}): overhead stage 1 '
        f'{max(r["overhead_stage1"] for r in rs):.2f} (target <= 1.10), '
        f'stage 2 {max(r["overhead_stage2"] for r in rs):.2f} '
        '(target <= 1.15); ratio to mmrazor stage 1 '
        f'{max(r["stage1_ratio"] for r in rs):.2f} (target <= 0.75), '
        f'stage 2 {max(r["stage2_ratio"] for r in rs):.2f} '
        '(target <= 0.5); peak RSS ratio '
        f'{max(r["peak_rss_ratio"] for r in rs):.2f} (target <= 1); '
        f'efficiency {min(r["efficiency"] for r in rs):.2f}'
    )
    print(
        f'wall time {wall:.0f}s; load average (1 min) at start '
        f'{args.load_start:.2f}, at end {os.getloadavg()[0]:.2f} on '
        f'{os.cpu_count()} CPUs (other processes skew absolute times; '
        'the alternating order keeps the ratios comparable)'
    )


if __name__ == '__main__':
    sys.exit(main())
