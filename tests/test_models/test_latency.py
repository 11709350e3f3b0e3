"""E[latency] from a per-layer table (projects/dmcp/models/latency.py): a
hand-made table, binary transitions, gradients and bad tables."""

import pytest
import torch
from torch import nn

from projects.dmcp.models import DMCPChannelMutator
from projects.dmcp.models.latency import (
    group_count_probs,
    interpolation_weights,
    layer_units,
)
from tests.helpers.models import hand_latency_table, set_binary_alphas

GROUPS = 3


class Net(nn.Module):
    """conv (unit a) -> depthwise -> conv (unit b) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3)
        self.bn1 = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, groups=12)
        self.conv2 = nn.Conv2d(12, 9, 1)
        self.fc = nn.Linear(9, 4)

    def forward(self, x):
        x = self.dw(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(self.conv2(x).mean((2, 3)))


def prepared():
    mutator = DMCPChannelMutator(channel_unit_cfg=dict(num_groups=GROUPS))
    mutator.prepare_from_supernet(Net(), (3, 10, 10))
    return mutator


def hand_table(mutator, seed=0, **meta):
    return hand_latency_table(mutator, seed, **meta)


def test_group_count_probs():
    marg = torch.tensor([1.0, 0.7, 0.2])
    torch.testing.assert_close(
        group_count_probs(marg), torch.tensor([0.3, 0.5, 0.2])
    )


def test_layer_units_of_the_net():
    mutator = prepared()
    plan = {
        r.name: (i, o) for r, i, o in layer_units(mutator.trace, mutator.specs)
    }
    a, b = (mutator.unit_names.index(n) for n in ('conv1', 'conv2'))
    # the depthwise layer is indexed by its unit alone; fc's output is fixed
    assert plan == {
        'conv1': (None, a),
        'dw': (None, a),
        'conv2': (a, b),
        'fc': (b, None),
    }


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_binary_transitions_give_the_table_entry(seed):
    mutator = prepared()
    doc = hand_table(mutator, seed)
    mutator.set_latency_table(doc)
    set_binary_alphas(mutator, torch.Generator().manual_seed(seed))
    groups = [int(k) for k in mutator.marginals().sum(-1).round().tolist()]
    want = 0.0
    plan = layer_units(mutator.trace, mutator.specs)
    for rec, i, o in plan:
        r = 0 if i is None else groups[i] - 1
        c = 0 if o is None else groups[o] - 1
        want += doc['layers'][rec.name]['ms'][r][c]
    got = float(mutator.expected_latency())
    assert got == pytest.approx(want, rel=1e-9)
    assert mutator.latency_table.lookup(groups) == pytest.approx(want)


def test_expected_latency_is_differentiable():
    mutator = prepared()
    mutator.set_latency_table(hand_table(mutator))
    latency = mutator.expected_latency()
    assert latency.dtype == torch.float64
    latency.backward()
    for a in mutator.arch_parameters():
        assert a.grad is not None and torch.isfinite(a.grad).all()
        assert a.grad.abs().sum() > 0


@pytest.mark.parametrize(
    'change, words',
    [
        (lambda d: d['layers'].pop('conv2'), 'layers.conv2 is missing'),
        (
            lambda d: d['layers'].update(other={'ms': [[1.0]]}),
            'layers.other is no layer of this network',
        ),
        (
            lambda d: d['layers']['conv2'].update(ms=[[1.0, 2.0]]),
            'layers.conv2.ms has shape (1, 2), expected (3, 3)',
        ),
        (
            lambda d: d['layers']['fc'].update(out='conv1'),
            'layers.fc: in/out units',
        ),
    ],
)
def test_bad_table_is_one_line(change, words):
    mutator = prepared()
    doc = hand_table(mutator)
    change(doc)
    with pytest.raises(ValueError) as exc:
        mutator.set_latency_table(doc, 'table.yaml')
    message = str(exc.value)
    assert message.startswith('table.yaml: ') and '\n' not in message
    assert words in message


def test_interpolation_weights():
    ends = torch.tensor([[4, 8, 12]])
    w = interpolation_weights(torch.tensor([[4], [6], [12], [2], [11]]), ends)
    torch.testing.assert_close(
        w[:, 0],
        torch.tensor(
            [
                [1.0, 0.0, 0.0],
                [0.5, 0.5, 0.0],
                [0.0, 0.0, 1.0],
                [1.0, 0.0, 0.0],  # below the first group: the first end
                [0.0, 0.25, 0.75],
            ],
            dtype=torch.float64,
        ),
    )


@pytest.mark.parametrize('seed', [0, 1])
def test_a_subnet_at_group_ends_is_its_entry_and_between_them_in_between(
    seed,
):
    mutator = prepared()
    cal = dict(offset_ms=0.5, scale=2.0)
    mutator.set_latency_table(hand_table(mutator, seed, calibration=cal))
    table = mutator.latency_table
    g = torch.Generator().manual_seed(seed)
    groups = torch.randint(1, GROUPS + 1, (len(mutator.units),), generator=g)
    choices = {
        u.name: u.channels_of(int(k)) for u, k in zip(mutator.units, groups)
    }
    # the calibration is the affine map of the layers' sum
    raw = sum(
        float(
            t[0 if i == len(mutator.units) else groups[i] - 1][
                0 if o == len(mutator.units) else groups[o] - 1
            ]
        )
        for t, i, o in zip(*table.host)
    )
    assert table.lookup(groups.tolist()) == pytest.approx(0.5 + 2.0 * raw)
    assert mutator.subnet_latency(choices) == pytest.approx(
        table.lookup(groups.tolist())
    )
    rows = torch.tensor([[choices[n] for n in mutator.unit_names]])
    assert float(mutator.latency_of_rows(rows)) == pytest.approx(
        mutator.subnet_latency(choices)
    )
    # one channel more than the min subnet: between the min and next entry
    low = mutator.sample_choices('min')
    name = mutator.unit_names[0]
    up = dict(low, **{name: mutator.units[0].channels_of(2)})
    mid = dict(low, **{name: low[name] + 1})
    lo, hi = mutator.subnet_latency(low), mutator.subnet_latency(up)
    assert min(lo, hi) <= mutator.subnet_latency(mid) <= max(lo, hi)


@pytest.mark.parametrize(
    'meta, words',
    [
        (dict(input_shape=[3, 32, 32]), 'meta.input_shape is [3, 32, 32]'),
        (dict(num_groups=10), 'meta.num_groups is 10'),
        (dict(calibration=dict(offset_ms=1.0)), 'meta.calibration needs'),
    ],
)
def test_table_of_another_setting_is_one_line(meta, words):
    mutator = prepared()
    doc = hand_table(mutator)
    doc['meta'].update(meta)
    with pytest.raises(ValueError) as exc:
        mutator.set_latency_table(doc, 'table.yaml')
    message = str(exc.value)
    assert message.startswith('table.yaml: ') and '\n' not in message
    assert words in message


def test_table_of_other_channels_is_one_line():
    mutator = prepared()
    doc = hand_table(mutator)
    doc['layers']['conv2']['channels'] = [24, 9]
    with pytest.raises(ValueError, match=r'layers\.conv2\.channels is'):
        mutator.set_latency_table(doc, 'table.yaml')
