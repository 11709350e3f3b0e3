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

What the issue asks in full (every S-unit <= 0.6, every other >= 0.9, the
Expected Sampling subnet within 0.5 points of the planted network) holds
for some choices of S and not for others: the search also cuts live units
whose cut costs the memorised labels little (benchmarks/planted.py and its
results file). This test asserts what holds for every S tried: the
planted units are cut most, and the searched subnet keeps far more
accuracy than the uniform one.
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


@pytest.mark.slow
def test_search_finds_planted_redundancy(torch_single_thread):
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
    search(algo, x, y, steps=300, lr=0.3, record=False)
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
    es_acc = accuracy(algo, x, y, es)
    uniform_acc = accuracy(algo, x, y, uniform)
    found = dict(
        inside=sum(inside) / len(inside),
        outside=sum(outside) / len(outside),
        most_cut=min(inside),
        es=es_acc,
        uniform=uniform_acc,
        planted=planted_acc,
    )
    # The search cuts the planted units most (a uniform cut leaves every
    # unit at the same ratio; normalised steps left them wider than the
    # others): on average, and at least one to near half.
    assert found['inside'] < found['outside'] - 0.08, (found, widths)
    assert found['most_cut'] < 0.7, (found, widths)
    # Its subnet keeps most of what the network knows, a uniform cut of the
    # same FLOPs does not.
    assert es_acc > uniform_acc + 0.15, found
    assert es_acc > planted_acc - 0.1, found
