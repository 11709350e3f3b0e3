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
BACKBONES = ('resnet', 'mobilenet_v2')
# MobileNetV2 downsamples 32x: at 8x8 it is 1x1 before its last stride.
INPUT_SIZE = dict(resnet=SIZE, mobilenet_v2=32)


def random_label_task(
    num: int = 1024, seed: int = 0, size: int = SIZE
) -> Tuple[Tensor, Tensor]:
    """Random images ``(num, 3, size, size)`` and random labels in
    ``[0, 10)``.

    Args:
        num (int): Number of images. Defaults to 1024.
        seed (int): Seed of the draw. Defaults to 0.
        size (int): Image side. Defaults to :data:`SIZE` (8).

    Returns:
        tuple[Tensor, Tensor]: Images and labels.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num, 3, size, size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (num,), generator=g)
    return x, y


def tiny_architecture(backbone: str = 'resnet', base: int = 8) -> dict:
    """A small classifier config.

    Args:
        backbone (str): ``'resnet'``: a CIFAR-style ResNet-18 with ``base``
            channels in its first stage; ``'mobilenet_v2'``: mmpretrain's
            MobileNetV2 at widen factor 0.25. Defaults to ``'resnet'``.
        base (int): First-stage width of the ResNet. Defaults to 8.

    Returns:
        dict: The ``ImageClassifier`` config.
    """
    if backbone == 'resnet':
        net = dict(
            type='ResNet_CIFAR',
            depth=18,
            stem_channels=base,
            base_channels=base,
        )
        channels = 8 * base
    elif backbone == 'mobilenet_v2':
        net = dict(type='MobileNetV2', widen_factor=0.25, out_indices=(7,))
        channels = 1280
    else:
        raise ValueError(f'backbone must be one of {BACKBONES}: {backbone!r}')
    return dict(
        type='ImageClassifier',
        backbone=net,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=channels
        ),
    )


def tiny_dmcp(
    base: int = 8,
    num_groups: int = 4,
    seed: int = 0,
    backbone: str = 'resnet',
    **kwargs,
) -> DMCP:
    """DMCP on :func:`tiny_architecture`, searching on frozen weights (no
    stage 1 after warmup) unless ``kwargs`` say otherwise.

    Args:
        base (int): First-stage width of the ResNet. Defaults to 8.
        num_groups (int): Channel groups per unit. Defaults to 4.
        seed (int): Seed of the weights and the sampler. Defaults to 0.
        backbone (str): See :func:`tiny_architecture`. Defaults to
            ``'resnet'``.
        **kwargs: More :class:`DMCP` arguments.

    Returns:
        DMCP: The algorithm.
    """
    torch.manual_seed(seed)
    size = INPUT_SIZE[backbone]
    unit_cfg = dict(num_groups=num_groups)
    unit_cfg.update(kwargs.pop('channel_unit_cfg', {}))
    kwargs.setdefault('update_weights_after_warmup', False)
    return DMCP(
        architecture=tiny_architecture(backbone, base),
        input_shape=(3, size, size),
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
    adam_lr: Optional[float] = None,
) -> None:
    """Plain training of the full network (not a search), then freeze it.

    Args:
        algo (DMCP): The algorithm whose supernet to train.
        x (Tensor): Images.
        y (Tensor): Labels.
        steps (int): Steps of batch 64. Defaults to 400.
        seed (int): Seed of the batches. Defaults to 0.
        planted (list[str], optional): Units whose planted channels stay
            zero throughout (:func:`plant_redundancy` after every step): the
            network learns to do without them. Defaults to None.
        adam_lr (float, optional): Train with Adam at this rate instead of
            SGD 0.1 with momentum (MobileNetV2 hardly learns random labels
            with it). Defaults to None.
    """
    net = algo.architecture
    algo.mutator.set_subnet('max')
    g = torch.Generator().manual_seed(seed)
    if adam_lr is None:
        opt = torch.optim.SGD(
            net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4
        )
    else:
        opt = torch.optim.Adam(net.parameters(), lr=adam_lr)
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


ALPHA_OPTIMIZERS = ('adam', 'normalised', 'sgd')


def alpha_optim(
    algo: DMCP, kind: str = 'adam', lr: float = 0.1
) -> OptimWrapperDict:
    """The architecture optimiser of a search on frozen weights, with a
    zero-rate SGD on the weights.

    Args:
        algo (DMCP): The algorithm.
        kind (str): ``'adam'``: Adam at ``lr``; ``'normalised'``: the
            Fashion-MNIST config's normalised gradient descent (every alpha
            step has length ``lr``, in the direction of the gradient);
            ``'sgd'``: the ImageNet configs' SGD at ``lr`` with momentum
            0.9 and the gradient clipped to norm 0.1. Defaults to
            ``'adam'``.
        lr (float): Learning rate (step length for ``'normalised'``).
            Defaults to 0.1.

    Returns:
        OptimWrapperDict: ``architecture`` and ``mutator`` wrappers.
    """
    weights = list(algo.architecture.parameters())
    alphas = list(algo.mutator.parameters())
    if kind == 'adam':
        arch = OptimWrapper(torch.optim.Adam(alphas, lr))
    elif kind == 'normalised':
        arch = OptimWrapper(
            torch.optim.SGD(alphas, lr=lr * 1000.0),
            clip_grad=dict(max_norm=0.001),
        )
    elif kind == 'sgd':
        arch = OptimWrapper(
            torch.optim.SGD(alphas, lr=lr, momentum=0.9),
            clip_grad=dict(max_norm=0.1),
        )
    else:
        raise ValueError(f'kind must be one of {ALPHA_OPTIMIZERS}: {kind!r}')
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
    kind: str = 'adam',
    lr: float = 0.1,
    record: bool = True,
    running_stats: bool = False,
) -> List[Tuple[float, float]]:
    """Architecture steps on batches of 64 drawn from ``(x, y)``.

    With batch statistics (as a search trains), the batch norm after each
    convolution undoes any common scale of its input channels, so the task
    loss feels only the shape of a unit's Markov profile, not its level;
    with the frozen network's running statistics it feels both.

    Args:
        algo (DMCP): The algorithm (frozen weights).
        x (Tensor): Images.
        y (Tensor): Labels.
        steps (int): Number of steps.
        kind (str): Optimiser, see :func:`alpha_optim`. Defaults to
            ``'adam'``.
        lr (float): Its learning rate. Defaults to 0.1.
        record (bool): Whether to record the trace. Defaults to True.
        running_stats (bool): Whether the batch norms use the network's
            running statistics during the steps (eval mode) instead of the
            batch's; the network is back in train mode afterwards.
            Defaults to False.

    Returns:
        list[tuple[float, float]]: After each step, ``(E[FLOPs] / full,
        Markov-scaled training accuracy)``; empty without ``record``.
    """
    optim = alpha_optim(algo, kind, lr)
    g = torch.Generator().manual_seed(1)
    trace = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        algo.architecture.train(not running_stats)
        algo.train_step(batch(x, y, idx), optim, update_arch=True)
        algo.architecture.train()
        if not record:
            continue
        with torch.no_grad():
            ratio = float(algo.mutator.expected_flops()) / algo.full_flops
        trace.append((ratio, accuracy(algo, x, y)))
    return trace
