"""Model builders and small utilities shared by the model tests."""

import copy
import itertools
import math
from typing import Dict, Tuple

import torch
from torch import nn

import projects.dmcp  # noqa: F401  (compat shims + registration first)
from projects.dmcp.models import DMCPChannelMutator

# name -> (backbone config, head in_channels)
ARCHS: Dict[str, Tuple[dict, int]] = {
    'resnet18': (dict(type='ResNet', depth=18), 512),
    'resnet50': (dict(type='ResNet', depth=50), 2048),
    # mmpretrain keeps the last conv at 1280 for widen_factor <= 1.0 and
    # scales it (int(1280 * w)) above.
    'mbv2_1.0': (dict(type='MobileNetV2', widen_factor=1.0), 1280),
    'mbv2_1.5': (dict(type='MobileNetV2', widen_factor=1.5), 1920),
}
ARCH_NAMES = list(ARCHS)


def forward_tensor(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The FLOPs convention's forward of an mmpretrain ImageClassifier."""
    return model(x, mode='tensor')


def build_classifier(arch: str, seed: int = 0) -> nn.Module:
    """An ImageNet classifier with random but reproducible weights and BN
    statistics (so that eval-mode comparisons are not trivial)."""
    # imported here: mmpretrain must come after projects.dmcp's shims
    from mmpretrain.registry import MODELS

    backbone, in_channels = ARCHS[arch]
    torch.manual_seed(seed)
    model = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=copy.deepcopy(backbone),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=1000,
                in_channels=in_channels,
            ),
        )
    )
    randomize_norms(model, seed)
    return model


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every batch norm random affine parameters and running stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def prepared(
    arch: str, size: int = 64, num_groups: int = 10, seed: int = 0
) -> Tuple[nn.Module, DMCPChannelMutator]:
    """A classifier and a mutator prepared on it at ``(3, size, size)``."""
    model = build_classifier(arch, seed)
    mutator = DMCPChannelMutator(
        channel_unit_cfg=dict(type='DMCPChannelUnit', num_groups=num_groups)
    )
    mutator.prepare_from_supernet(model, (3, size, size), forward_tensor)
    return model, mutator


def set_binary_alphas(
    mutator: DMCPChannelMutator, generator: torch.Generator, big: float = 50.0
) -> None:
    """Set every alpha entry to +big or -big at random, so that every
    transition (and hence every marginal) is 0 or 1 up to float rounding."""
    with torch.no_grad():
        for a in mutator.arch_parameters():
            coin = torch.rand(a.shape, generator=generator) < 0.5
            a.copy_(torch.where(coin, big, -big))


def set_alphas(mutator: DMCPChannelMutator, value: float) -> None:
    """Fill every alpha with ``value``."""
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.fill_(value)


def bn_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Copies of every batch norm buffer (running stats and counters)."""
    return {
        name: buf.detach().clone()
        for name, buf in model.named_buffers()
        if 'running_' in name or 'num_batches_tracked' in name
    }


def closed_form_alpha_grad(alpha, sizes, out, coef):
    """dLoss/dalpha by Eq. 16-18 for ``Loss = sum_k c_k * O_hat_k`` with
    ``O_hat_k = O_k * p(w_g(k))`` (Eq. 7, one marginal per group).

    Eq. 17 with group indices: dO_hat_k/dalpha_j = 0 if g(k) < j, else
    dp_j/dalpha_j * O_k * prod_{r <= g(k), r != j} p_r, with Eq. 18
    dp_j/dalpha_j = (1 - p_j) p_j. ``alpha[j - 2]`` parameterises ``p_j``.
    """
    p = [1.0] + [1.0 / (1.0 + math.exp(-float(a))) for a in alpha]
    group_of = []
    for g, size in enumerate(sizes):
        group_of += [g] * int(size)
    grads = []
    for j in range(1, len(p)):  # zero-based group index of p_j
        dpj = (1.0 - p[j]) * p[j]  # Eq. 18
        total = 0.0
        for k, g in enumerate(group_of):  # Eq. 16: sum over channels
            if g < j:
                continue  # Eq. 17, first case
            prod = 1.0
            for r in range(g + 1):
                if r != j:
                    prod *= p[r]
            # dLoss/dO_hat_k = c_k; dO_hat_k/dalpha_j by Eq. 17.
            total += float(coef[k]) * dpj * float(out[k]) * prod
        grads.append(total)
    return torch.tensor(grads, dtype=torch.float64)


def chain_distribution(alpha):
    """P(K = k), k = 1..G, of the number of retained groups, by enumerating
    every outcome of the G - 1 Bernoulli transitions of the chain (Fig. 3):
    the chain keeps group k + 1 iff the transitions 2..k + 1 all succeed,
    i.e. K = 1 + the number of leading successes."""
    p = [1.0 / (1.0 + math.exp(-float(a))) for a in alpha]
    dist = [0.0] * (len(p) + 1)
    for outcome in itertools.product((0, 1), repeat=len(p)):
        prob = 1.0
        for success, pk in zip(outcome, p):
            prob *= pk if success else 1.0 - pk
        k = 1
        for success in outcome:
            if not success:
                break
            k += 1
        dist[k - 1] += prob
    return dist


def hand_latency_table(
    mutator: DMCPChannelMutator,
    seed: int = 0,
    monotone: bool = False,
    **meta,
) -> dict:
    """A latency table of ``mutator``'s network with random positive
    entries of the right shapes (the content of a table yaml).

    Args:
        mutator (DMCPChannelMutator): A prepared mutator.
        seed (int): Seed of the entries. Defaults to 0.
        monotone (bool): Entries growing with both widths (a random
            per-layer factor times the product of the group counts), as
            measured times do. Defaults to False (independent entries).
        **meta: More ``meta`` keys (e.g. ``calibration``).

    Returns:
        dict: ``meta`` and ``layers``.
    """
    from projects.dmcp.models.latency import layer_units

    groups = mutator.units[0].num_groups
    g = torch.Generator().manual_seed(seed)
    names = mutator.unit_names
    layers = {}
    for rec, i, o in layer_units(mutator.trace, mutator.specs):
        rows = 1 if i is None else groups
        cols = 1 if o is None else groups
        layers[rec.name] = {
            'in': None if i is None else names[i],
            'out': None if o is None else names[o],
            'channels': [rec.in_channels, rec.out_channels],
            'ms': (
                0.01 + torch.rand(1, generator=g) * grid(rows, cols)
                if monotone
                else 0.1 + torch.rand(rows, cols, generator=g)
            ).tolist(),
        }
    return dict(
        meta=dict(
            device='hand-made',
            backend='none',
            threads=1,
            batch=1,
            input_shape=list(mutator.input_shape),
            num_groups=groups,
            divisor=mutator.divisor,
            **meta,
        ),
        layers=layers,
    )


def grid(rows: int, cols: int) -> torch.Tensor:
    """``(i + 1) * (j + 1) / (rows * cols)``, shape ``(rows, cols)``."""
    i = torch.arange(1, rows + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, cols + 1, dtype=torch.float64)[None]
    return i * j / (rows * cols)
