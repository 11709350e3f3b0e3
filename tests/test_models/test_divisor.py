"""``channel_unit_cfg.divisor``: every width the search can export (group
ends, Expected Sampling, its fit to the budget, the uniform baseline) is a
multiple of it, except a full width that is not; the expected FLOPs, the
yaml and the pruned model agree."""

import pytest
import torch
import yaml
from torch import nn

from projects.dmcp.models import (
    DMCP,
    DMCPChannelMutator,
    DMCPSubnet,
    count_flops,
    export_search_results,
    group_ends,
)
from projects.dmcp.models.markov import round_width
from projects.dmcp.utils import tensor_forward
from tests.helpers.models import set_binary_alphas

ARCH = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=512),
)
SHAPE = (3, 32, 32)


def searched(divisor: int, target: str = '20M', seed: int = 0) -> DMCP:
    """A ResNet-18 DMCP with 8 groups a unit, the divisor, and random
    binary alphas (every marginal 0 or 1)."""
    algo = DMCP(
        architecture=ARCH,
        input_shape=SHAPE,
        seed=0,
        target_flops=target,
        mutator=dict(
            type='DMCPChannelMutator',
            channel_unit_cfg=dict(num_groups=8, divisor=divisor),
        ),
    )
    set_binary_alphas(algo.mutator, torch.Generator().manual_seed(seed))
    return algo


def test_group_ends():
    assert group_ends(64, 8, 8) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert group_ends(64, 3, 8) == [24, 40, 64]
    # 100 is no multiple of 8: 12 blocks, the last group takes the rest
    ends = group_ends(100, 5, 8)
    assert ends[-1] == 100
    assert all(e % 8 == 0 for e in ends[:-1])
    assert ends == sorted(set(ends))
    # divisor 1: round half up of C * k / G, as before
    for c, g in ((10, 4), (64, 10), (7, 7), (1920, 15)):
        assert group_ends(c, g) == [
            int(c * k / g + 0.5) for k in range(1, g + 1)
        ]


def test_round_width():
    assert round_width(13.0, 64, 8) == 16
    assert round_width(11.9, 64, 8) == 8
    assert round_width(2.0, 64, 8) == 8  # never below the divisor
    assert round_width(99.0, 100, 8) == 100  # the full width may be odd
    assert round_width(97.0, 100, 8) == 96
    assert round_width(95.0, 100, 8) == 96
    assert round_width(7.4, 64) == 7


def test_every_width_a_multiple_of_8_and_flops_agree(tmp_path):
    algo = searched(8, seed=3)
    mutator = algo.mutator
    full = mutator.layer_channels(mutator.sample_choices('max'))

    def check(channels):
        for name, width in channels.items():
            assert width % 8 == 0 or width == full[name], (name, width)

    # the exported subnet (Expected Sampling, fitted to the budget if
    # needed) and the Direct Samples
    export_search_results(algo, str(tmp_path), max_direct_draws=200)
    doc = yaml.safe_load((tmp_path / 'DMCP_SUBNET_IMAGENET.yaml').read_text())
    assert doc['meta']['divisor'] == 8
    check(doc['channels'])
    for path in (tmp_path / 'direct_sampling').glob('subnet_*.yaml'):
        check(yaml.safe_load(path.read_text())['channels'])
    rows = mutator.sample_direct_batch(50, torch.Generator().manual_seed(0))
    for choices in mutator.choices_from_rows(rows):
        check(mutator.layer_channels(choices))
    uniform, _ = mutator.uniform_choices(algo.target_flops * 0.6)
    check(mutator.layer_channels(uniform))
    assert any(
        w != full[n] for n, w in mutator.layer_channels(uniform).items()
    )

    # marginals 0/1: E[FLOPs] (Eq. 12), the yaml's FLOPs and the pruned
    # model's counted FLOPs are one number
    expected = mutator.sample_choices('expected')
    check(mutator.layer_channels(expected))
    flops = mutator.subnet_flops(expected)
    with torch.no_grad():
        assert float(mutator.expected_flops()) == pytest.approx(flops, abs=1)
    path = tmp_path / 'expected.yaml'
    from projects.dmcp.models import dump_subnet

    dump_subnet(path, mutator.layer_channels(expected), dict(flops=flops))
    model = DMCPSubnet(ARCH, str(path), SHAPE)
    assert count_flops(model, SHAPE, tensor_forward) == flops
    for name, width in mutator.layer_channels(expected).items():
        assert model.get_submodule(name).weight.shape[0] == width


def test_uniform_baseline_rounds_to_the_divisor():
    """The same target: divisor 8 gives multiples of 8 within the budget,
    divisor 1 need not."""
    for divisor in (1, 8):
        mutator = searched(divisor).mutator
        target = mutator.flops_of('max') * 0.4
        choices, _ = mutator.uniform_choices(target)
        assert mutator.subnet_flops(choices) <= target
        if divisor == 8:
            assert all(w % 8 == 0 for w in choices.values())
        else:
            assert any(w % 8 for w in choices.values())


class Odd(nn.Module):
    """Two convolutions of 20 and 24 channels (20 is no multiple of 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 20, 3)
        self.bn1 = nn.BatchNorm2d(20)
        self.conv2 = nn.Conv2d(20, 24, 3)
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def test_full_width_not_a_multiple():
    mutator = DMCPChannelMutator(
        channel_unit_cfg=dict(num_groups=2, divisor=8)
    )
    mutator.prepare_from_supernet(Odd(), (3, 8, 8))
    ends = {u.name: u.ends for u in mutator.units}
    assert ends == {'conv1': [8, 20], 'conv2': [16, 24]}
    choices, _ = mutator.uniform_choices(mutator.flops_of('max') * 0.5)
    assert all(w % 8 == 0 for w in choices.values())


@pytest.mark.parametrize(
    'unit_cfg, words',
    [
        (dict(num_groups=2, divisor=0), ['divisor must be >= 1, got 0']),
        (dict(num_groups=2, divisor=1.5), ['divisor must be an integer']),
        (dict(num_groups=3, divisor=8), ['divisor=8', 'unit conv1']),
    ],
)
def test_bad_divisor_is_one_line_naming_the_key(unit_cfg, words):
    mutator = DMCPChannelMutator(channel_unit_cfg=unit_cfg)
    with pytest.raises(ValueError) as exc:
        mutator.prepare_from_supernet(Odd(), (3, 8, 8))
    message = str(exc.value)
    assert '\n' not in message
    assert message.startswith('model.mutator.channel_unit_cfg: ')
    for word in words:
        assert word in message
