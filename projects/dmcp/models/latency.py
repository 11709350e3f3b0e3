"""Expected latency from a per-layer lookup table (beyond the paper).

A latency table holds, for every convolution and linear layer of a traced
network, its measured time at each number of retained groups of its output
unit given each number of retained groups of its input unit (one row or
column when that side is never pruned). The Markov chains of different units
are independent, so a layer's expected time is

    E[t_l] = sum_i sum_j P(K_in = i) P(K_out = j) T_l[i, j]

with ``P(K = k) = p(w_k) - p(w_{k+1})`` (Eq. 6; ``p(w_{G+1}) = 0``): a
differentiable function of the marginals, as Eq. 8-12 are for FLOPs. When
every transition is 0 or 1 it is exactly the table's entry of that subnet.
A depthwise layer (and any layer whose input and output are one unit) is
indexed by that unit's group count alone.

The table file is a yaml written by ``tools/analysis/latency_table.py``::

    meta: {device: ..., backend: torch, threads: 1, batch: 1, runs: 20,
           input_shape: [1, 28, 28], num_groups: 10, divisor: 1}
    layers:
      backbone.conv1: {in: null, out: backbone.conv1, ms: [[...]]}
      ...

``in``/``out`` name the unit (its first producer) or are null (a width that
is never pruned); ``ms`` is a ``len(in groups) x len(out groups)`` list.
"""

import os.path as osp
from typing import Any, Dict, List, Sequence

import torch
import yaml
from torch import Tensor, nn

from .tracer import ChannelTrace, UnitSpec

__all__ = [
    'LatencyTable',
    'group_count_probs',
    'layer_units',
    'load_latency_table',
]


def group_count_probs(marginals: Tensor) -> Tensor:
    """``P(K = k)``, ``k = 1..G``, of the number of retained groups.

    Args:
        marginals (Tensor): ``p(w_k)`` (Eq. 6), shape ``(..., G)``.

    Returns:
        Tensor: Shape ``(..., G)``, summing to 1 over the last dim.
    """
    nxt = torch.cat(
        [marginals[..., 1:], marginals.new_zeros(marginals.shape[:-1] + (1,))],
        dim=-1,
    )
    return marginals - nxt


def layer_units(trace: ChannelTrace, units: Sequence[UnitSpec]) -> list:
    """``(layer, in unit, out unit)`` of every traced layer; a unit is its
    index in ``units`` or None for a width that is never pruned. A
    depthwise layer's input is None (its time follows its output).

    Args:
        trace (ChannelTrace): The traced layers.
        units (Sequence[UnitSpec]): The prunable units, in mutator order.

    Returns:
        list[tuple]: ``(LayerRecord, int | None, int | None)`` in call order.
    """
    index = {
        trace.find(trace.layer(u.producers[0]).out_node): i
        for i, u in enumerate(units)
    }
    out = []
    for rec in trace.layers:
        i = index.get(trace.find(rec.in_node))
        o = index.get(trace.find(rec.out_node))
        if rec.depthwise or (i is not None and i == o):
            i, o = None, (o if o is not None else i)
        out.append((rec, i, o))
    return out


class LatencyTable(nn.Module):
    """E[latency] of a network as a function of its units' marginals.

    Args:
        trace (ChannelTrace): The traced layers.
        units (Sequence[UnitSpec]): The prunable units, in mutator order.
        num_groups (int): Groups ``G`` of every unit.
        doc (dict): The table file's content (``meta`` and ``layers``).
        where (str): The file, for errors. Defaults to
            ``'latency table'``.

    Raises:
        ValueError: The table does not fit the network: a layer missing or
            unknown, another unit on a side, or a wrong number of entries
            (the message names the file and the layer).
    """

    def __init__(
        self,
        trace: ChannelTrace,
        units: Sequence[UnitSpec],
        num_groups: int,
        doc: Dict[str, Any],
        where: str = 'latency table',
    ) -> None:
        super().__init__()
        layers = doc.get('layers')
        if not isinstance(layers, dict) or not layers:
            raise ValueError(f'{where}: no layers mapping')
        names = [u.name for u in units]
        plan = layer_units(trace, units)
        known = {rec.name for rec, _, _ in plan}
        unknown = sorted(set(layers) - known)
        if unknown:
            raise ValueError(
                f'{where}: layers.{unknown[0]} is no layer of this network '
                '(a table of another architecture?)'
            )
        const = len(units)
        tables, in_idx, out_idx = [], [], []
        for rec, i, o in plan:
            entry = layers.get(rec.name)
            if entry is None:
                raise ValueError(
                    f'{where}: layers.{rec.name} is missing (the table '
                    'must time every convolution and linear layer)'
                )
            want = (
                None if i is None else names[i],
                None if o is None else names[o],
            )
            if (entry.get('in'), entry.get('out')) != want:
                raise ValueError(
                    f'{where}: layers.{rec.name}: in/out units '
                    f'{entry.get("in")}/{entry.get("out")}, but the network '
                    f'has {want[0]}/{want[1]}'
                )
            rows = 1 if i is None else num_groups
            cols = 1 if o is None else num_groups
            ms = torch.tensor(entry.get('ms'), dtype=torch.float64)
            if tuple(ms.shape) != (rows, cols):
                raise ValueError(
                    f'{where}: layers.{rec.name}.ms has shape '
                    f'{tuple(ms.shape)}, expected ({rows}, {cols}) (groups '
                    f'of its input x output units, num_groups={num_groups})'
                )
            full = ms.new_zeros(num_groups, num_groups)
            full[:rows, :cols] = ms
            tables.append(full)
            in_idx.append(const if i is None else i)
            out_idx.append(const if o is None else o)
        self.layer_names: List[str] = [rec.name for rec, _, _ in plan]
        self.meta: Dict[str, Any] = dict(doc.get('meta') or {})
        self.num_units = const
        self.register_buffer('ms', torch.stack(tables), persistent=False)
        self.register_buffer(
            'in_idx', torch.tensor(in_idx, dtype=torch.long), persistent=False
        )
        self.register_buffer(
            'out_idx',
            torch.tensor(out_idx, dtype=torch.long),
            persistent=False,
        )

    def layer_latency(self, marginals: Tensor) -> Tensor:
        """Expected time of every layer.

        Args:
            marginals (Tensor): ``p(w)`` of every unit, ``(..., U, G)``, on
                the table's device (differentiable).

        Returns:
            Tensor: Float64 milliseconds, ``(..., L)``.
        """
        probs = group_count_probs(marginals.to(torch.float64))
        one = torch.zeros_like(probs[..., :1, :])
        one[..., 0] = 1.0  # a never-pruned side: one "group count"
        dist = torch.cat([probs, one], dim=-2)
        p_in = dist[..., self.in_idx, :]
        p_out = dist[..., self.out_idx, :]
        return torch.einsum('...lg,lgh,...lh->...l', p_in, self.ms, p_out)

    def forward(self, marginals: Tensor) -> Tensor:
        """E[latency]: the sum over layers.

        Args:
            marginals (Tensor): ``(..., U, G)``.

        Returns:
            Tensor: Float64 milliseconds, ``marginals.shape[:-2]``.
        """
        return self.layer_latency(marginals).sum(dim=-1)

    def lookup(self, num_groups: Sequence[int]) -> float:
        """The table's latency of one subnet given by group counts.

        Args:
            num_groups (Sequence[int]): Retained groups of every unit.

        Returns:
            float: Milliseconds.
        """
        groups = list(num_groups) + [1]
        total = 0.0
        for t, i, o in zip(self.ms, self.in_idx, self.out_idx):
            total += float(t[groups[int(i)] - 1, groups[int(o)] - 1])
        return total


def load_latency_table(path: str) -> Dict[str, Any]:
    """Read a latency table yaml.

    Args:
        path (str): The file.

    Returns:
        dict: Its content.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: It is not a mapping with ``layers``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such latency table')
    with open(path) as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or 'layers' not in doc:
        raise ValueError(f'{path}: not a latency table (no layers)')
    return doc
