"""A trained tiny network for the tests that search on frozen weights
(recoverability, planted redundancy).

The task is memorising random labels of random 8x8 images: a small ResNet
can only partly memorise it, so every channel carries part of what was
learnt and a pruned network loses accuracy (on an easy task the later
channel groups are redundant and nothing pushes the search to keep them).
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmpretrain.structures import DataSample
from torch import Tensor

import projects.dmcp  # noqa: F401  (compat shims + registration first)
from projects.dmcp.models import DMCP

SIZE = 8
NUM_CLASSES = 10


def random_label_task(num: int = 1024, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Random images ``(num, 3, 8, 8)`` and random labels in ``[0, 10)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num, 3, SIZE, SIZE, generator=g)
    y = torch.randint(0, NUM_CLASSES, (num,), generator=g)
    return x, y


def tiny_dmcp(
    base: int = 8, num_groups: int = 4, seed: int = 0, **kwargs
) -> DMCP:
    """DMCP on a CIFAR-style ResNet-18 with ``base`` channels in its first
    stage, searching on frozen weights (no stage 1 after warmup) unless
    ``kwargs`` say otherwise."""
    torch.manual_seed(seed)
    arch = dict(
        type='ImageClassifier',
        backbone=dict(
            type='ResNet_CIFAR',
            depth=18,
            stem_channels=base,
            base_channels=base,
        ),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=NUM_CLASSES,
            in_channels=8 * base,
        ),
    )
    unit_cfg = dict(num_groups=num_groups)
    unit_cfg.update(kwargs.pop('channel_unit_cfg', {}))
    kwargs.setdefault('update_weights_after_warmup', False)
    return DMCP(
        architecture=arch,
        input_shape=(3, SIZE, SIZE),
        mutator=dict(type='DMCPChannelMutator', channel_unit_cfg=unit_cfg),
        seed=seed,
        **kwargs,
    )


def plant_redundancy(algo: DMCP, units: List[str]) -> None:
    """Make the last half of each named unit's channels exactly zero: the
    batch norms of all its producing layers (all layers joined by a
    residual addition, for a residual unit) get weight and bias 0 there.

    Args:
        algo (DMCP): The algorithm whose supernet to change.
        units (list[str]): Unit names (``algo.mutator.unit_names``).
    """
    modules = dict(algo.architecture.named_modules())
    with torch.no_grad():
        for spec in algo.mutator.specs:
            if spec.name in units:
                half = spec.num_channels // 2
                for name in spec.scale_points:
                    modules[name].weight[half:] = 0
                    modules[name].bias[half:] = 0


def train_full(
    algo: DMCP,
    x: Tensor,
    y: Tensor,
    steps: int = 400,
    seed: int = 0,
    planted: Optional[List[str]] = None,
) -> None:
    """Plain training of the full network (not a search), then freeze it.
    With ``planted`` units, their planted channels stay zero throughout
    (:func:`plant_redundancy` after every step): the network learns to do
    without them."""
    net = algo.architecture
    algo.mutator.set_subnet('max')
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(
        net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4
    )
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(net(x[idx], mode='tensor'), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if planted:
            plant_redundancy(algo, planted)
    for p in net.parameters():
        p.requires_grad_(False)


def alpha_optim(
    algo: DMCP, lr: float = 0.1, step: Optional[float] = None
) -> OptimWrapperDict:
    """Adam on alpha, or with ``step`` the Fashion-MNIST config's
    normalised gradient descent (every alpha step has length ``step``, in
    the direction of the gradient); a zero-rate SGD on the frozen weights.
    """
    weights = list(algo.architecture.parameters())
    if step is None:
        arch = OptimWrapper(torch.optim.Adam(algo.mutator.parameters(), lr))
    else:
        arch = OptimWrapper(
            torch.optim.SGD(algo.mutator.parameters(), lr=step * 1000.0),
            clip_grad=dict(max_norm=0.001),
        )
    return OptimWrapperDict(
        architecture=OptimWrapper(torch.optim.SGD(weights, lr=0.0)),
        mutator=arch,
    )


def batch(x: Tensor, y: Tensor, idx: Tensor) -> Dict[str, list]:
    """A data batch as the dataloader gives it."""
    return dict(
        inputs=x[idx],
        data_samples=[DataSample().set_gt_label(int(c)) for c in y[idx]],
    )


def accuracy(
    algo: DMCP, x: Tensor, y: Tensor, subnet: Optional[object] = None
) -> float:
    """Training accuracy with batch statistics (as the search sees the
    network): Markov-scaled if ``subnet`` is None, else of that subnet
    (``'max'`` or a choice dict) inheriting the weights."""
    algo.train()
    with torch.no_grad():
        if subnet is None:
            with algo.mutator.markov_scaling():
                out = algo.architecture(x, mode='tensor')
        else:
            algo.mutator.set_subnet(subnet)
            with algo.mutator.frozen_norm_stats():
                out = algo.architecture(x, mode='tensor')
            algo.mutator.set_subnet('max')
    return (out.argmax(1) == y).float().mean().item()


def search(
    algo: DMCP,
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float = 0.1,
    step: Optional[float] = None,
) -> List[Tuple[float, float]]:
    """``steps`` architecture steps (optimiser: :func:`alpha_optim`); after
    each, ``(E[FLOPs] / full, Markov-scaled training accuracy)``."""
    optim = alpha_optim(algo, lr, step)
    g = torch.Generator().manual_seed(1)
    trace = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        algo.train_step(batch(x, y, idx), optim, update_arch=True)
        with torch.no_grad():
            ratio = float(algo.mutator.expected_flops()) / algo.full_flops
        trace.append((ratio, accuracy(algo, x, y)))
    return trace
