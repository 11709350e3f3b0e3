"""Planted redundancy (issue 14, part 1), small version: a network trained
with the last half of some units' channels exactly zero must be searched
down to those halves, not cut uniformly.

S is one unit per stage, the first block's ``conv1`` (a unit of its own);
a residual unit could be planted too (:func:`plant_redundancy` zeroes all
the batch norms joined by the addition), but its channels then vanish from
every block of the stage at once.

Alpha is stepped with Adam (0.3): the dead groups' transitions get only
the budget's gradient, small but of one sign, and Adam moves each alpha by
its own normalised gradient; a globally normalised step (the Fashion-MNIST
config's) moves them by their small share of the whole gradient and ends
near-uniform (docs/how_it_works.md, "Evidence").

With batch statistics (as a search trains) what the issue asks in full
(every S-unit <= 0.6, every other >= 0.9, the Expected Sampling subnet
within 0.5 points of the planted network) holds for some choices of S and
not for others: a batch norm after each convolution undoes any common scale
of its input channels, so the task loss feels only the shape of a unit's
Markov profile, and the search also cuts live units whose cut costs the
memorised labels little. The first test asserts what holds there for every
S tried: the planted units are cut most, and the searched subnet keeps far
more accuracy than the uniform one. With the frozen network's running
statistics the widths meet the issue's numbers (the second test;
benchmarks/planted.py ``--bn-stats running`` for 3 choices of S on both
backbones).
"""

import pytest
import torch

from tests.helpers.trained import (
    accuracy,
    random_label_task,
    search,
    tiny_dmcp,
    train_full,
)

UNIT_CFG = dict(alpha_init=3.0)  # start near the full network


def first_conv1_per_stage(names: list) -> list:
    return [n for n in names if n.endswith('.0.conv1') and 'layer' in n]


def planted_search(running_stats: bool) -> dict:
    """Train with S planted, search alpha only; widths and accuracies."""
    x, y = random_label_task()
    probe = tiny_dmcp(target_flops=100_000, channel_unit_cfg=UNIT_CFG)
    planted = first_conv1_per_stage(probe.mutator.unit_names)
    assert len(planted) == 4
    half = {
        u.name: u.num_channels // 2 if u.name in planted else u.num_channels
        for u in probe.mutator.units
    }
    target = probe.mutator.subnet_flops(half)
    algo = tiny_dmcp(target_flops=target, channel_unit_cfg=UNIT_CFG)
    train_full(algo, x, y, planted=planted)
    planted_acc = accuracy(algo, x, y, 'max')
    # the planted channels are dead: cutting them changes nothing
    assert accuracy(algo, x, y, half) == planted_acc
    search(
        algo,
        x,
        y,
        steps=300,
        lr=0.3,
        record=False,
        running_stats=running_stats,
    )
    mutator = algo.mutator
    with torch.no_grad():
        ratios = mutator.expected_channels() / torch.tensor(
            [u.num_channels for u in mutator.units]
        )
    widths = dict(zip(mutator.unit_names, ratios.tolist()))
    inside = [widths[n] for n in planted]
    outside = [w for n, w in widths.items() if n not in planted]
    uniform, _ = mutator.uniform_choices(target)
    es, _ = mutator.fit_widths(mutator.expected_channels().tolist(), target)
    return dict(
        inside=inside,
        outside=outside,
        es=accuracy(algo, x, y, es),
        uniform=accuracy(algo, x, y, uniform),
        planted=planted_acc,
        widths=widths,
    )


@pytest.mark.slow
def test_search_finds_planted_redundancy(torch_single_thread):
    """With batch statistics (as a search trains): found on average."""
    found = planted_search(running_stats=False)
    inside, outside = found['inside'], found['outside']
    # The search cuts the planted units most (a uniform cut leaves every
    # unit at the same ratio; normalised steps left them wider than the
    # others): on average, and at least one to near half.
    assert sum(inside) / 4 < sum(outside) / len(outside) - 0.08, found
    assert min(inside) < 0.7, found
    # Its subnet keeps most of what the network knows, a uniform cut of the
    # same FLOPs does not.
    assert found['es'] > found['uniform'] + 0.15, found
    assert found['es'] > found['planted'] - 0.1, found


@pytest.mark.slow
def test_search_on_running_statistics_finds_every_planted_unit(
    torch_single_thread,
):
    """With the frozen network's running statistics the task loss also
    feels the level of each unit's Markov profile (a batch norm on batch
    statistics undoes it): every planted unit is cut to about half, every
    other kept, as the issue asks (measured: S 0.48-0.55, outside >= 0.95,
    ES 1 point under the planted network, uniform 38 points under)."""
    found = planted_search(running_stats=True)
    assert max(found['inside']) <= 0.6, found
    assert min(found['outside']) >= 0.9, found
    assert found['es'] > found['planted'] - 0.02, found
    assert found['es'] > found['uniform'] + 0.25, found
