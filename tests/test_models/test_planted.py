"""Planted redundancy (issue 14, part 1), small version: a network trained
with the last half of some units' channels exactly zero must be searched
down to those halves, not cut uniformly.

S is one unit per stage, the first block's ``conv1`` (a unit of its own);
a residual unit could be planted too (:func:`plant_redundancy` zeroes all
the batch norms joined by the addition), but its channels then vanish from
every block of the stage at once.

Today the search does NOT meet the criteria here (measured, see
docs/how_it_works.md, "Evidence"): the widths come out nearly uniform, the
S-units' dead groups keep their alpha (no task gradient reaches them and
the budget pushes every unit alike), so the test is a strict xfail that
turns into a failure, to be updated, once the search tells the layers
apart.
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
@pytest.mark.xfail(
    strict=True,
    reason='the search does not find planted redundancy yet (issue 14)',
)
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
    search(algo, x, y, steps=200, step=0.1)
    mutator = algo.mutator
    with torch.no_grad():
        widths = dict(
            zip(
                mutator.unit_names,
                (
                    mutator.expected_channels()
                    / torch.tensor([u.num_channels for u in mutator.units])
                ).tolist(),
            )
        )
    uniform, _ = mutator.uniform_choices(target)
    es, _ = mutator.fit_widths(mutator.expected_channels().tolist(), target)
    es_acc = accuracy(algo, x, y, es)
    uniform_acc = accuracy(algo, x, y, uniform)
    # what the issue asks
    assert max(widths[n] for n in planted) <= 0.6, widths
    assert min(w for n, w in widths.items() if n not in planted) >= 0.9
    assert es_acc >= planted_acc - 0.005
    assert uniform_acc < planted_acc - 0.05
