"""E[latency] from a per-layer table (projects/dmcp/models/latency.py): a
hand-made table, binary transitions, gradients and bad tables."""

import pytest
import torch
from torch import nn

from projects.dmcp.models import DMCPChannelMutator
from projects.dmcp.models.latency import group_count_probs, layer_units
from tests.helpers.models import set_binary_alphas

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


def hand_table(mutator, seed=0):
    """Random positive entries of the right shapes."""
    g = torch.Generator().manual_seed(seed)
    names = mutator.unit_names
    layers = {}
    for rec, i, o in layer_units(mutator.trace, mutator.specs):
        rows = 1 if i is None else GROUPS
        cols = 1 if o is None else GROUPS
        layers[rec.name] = {
            'in': None if i is None else names[i],
            'out': None if o is None else names[o],
            'ms': (0.1 + torch.rand(rows, cols, generator=g)).tolist(),
        }
    return dict(meta=dict(device='hand-made'), layers=layers)


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
