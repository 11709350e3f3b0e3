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

A network is more than its convolution and linear layers (batch norms,
activations, additions, pooling, the framework's per-module overhead), so
the tool also times whole pruned networks end to end and fits
``measured = offset_ms + scale * sum(layer entries)`` by least squares;
``meta.calibration: {offset_ms, scale, points}`` holds the fit, and every
figure of :class:`LatencyTable` (E[latency], a subnet's value) is that
affine map of the layers' sum (``offset_ms = 0``, ``scale = 1`` without
it). A width between two group ends (Expected Sampling rounds expected
channels, not groups) takes the linear interpolation of the entries of the
two ends (:func:`interpolation_weights`).
"""

import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from torch import Tensor, nn

from ..utils import is_number
from .tracer import ChannelTrace, UnitSpec

__all__ = [
    'LatencyTable',
    'group_count_probs',
    'interpolation_weights',
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


def interpolation_weights(widths: Tensor, ends: Tensor) -> Tensor:
    """Weights over the group ends that linearly interpolate each width.

    A width at a group end puts weight 1 on it; one between the ends
    ``e_j < w < e_{j+1}`` puts ``1 - t`` on ``j`` and ``t`` on ``j + 1``,
    ``t = (w - e_j) / (e_{j+1} - e_j)``; one below the first end (the
    uniform baseline may go below a group) counts as the first end.

    Args:
        widths (Tensor): Channels of every unit, ``(N, U)``, any dtype.
        ends (Tensor): Group ends of every unit, ``(U, G)``, increasing.

    Returns:
        Tensor: Float64, ``(N, U, G)``, each row summing to 1.
    """
    ends = ends.to(torch.float64)
    w = widths.to(ends.device, torch.float64)
    num, units = w.shape
    groups = ends.shape[1]
    if groups == 1:
        return w.new_ones(num, units, 1)
    j = torch.searchsorted(ends, w.T.contiguous(), right=True).T - 1
    j = j.clamp(0, groups - 2)
    lo = ends.gather(1, j.T).T
    hi = ends.gather(1, (j + 1).T).T
    t = ((w - lo) / (hi - lo)).clamp(0.0, 1.0)
    out = w.new_zeros(num, units, groups)
    out.scatter_(2, j[..., None], (1 - t)[..., None])
    out.scatter_add_(2, (j + 1)[..., None], t[..., None])
    return out


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
        input_shape (Sequence[int], optional): The network's input, to
            compare with ``meta.input_shape``. Defaults to None (not
            checked).
        divisor (int, optional): The units' divisor, to compare with
            ``meta.divisor``. Defaults to None (not checked).

    Raises:
        ValueError: The table does not fit the network: another input
            shape, number of groups or divisor in its ``meta``, a layer
            missing or unknown, other channels, another unit on a side, or
            a wrong number of entries (the message names the file and the
            key).
    """

    def __init__(
        self,
        trace: ChannelTrace,
        units: Sequence[UnitSpec],
        num_groups: int,
        doc: Dict[str, Any],
        where: str = 'latency table',
        input_shape: Optional[Sequence[int]] = None,
        divisor: Optional[int] = None,
    ) -> None:
        super().__init__()
        layers = doc.get('layers')
        if not isinstance(layers, dict) or not layers:
            raise ValueError(f'{where}: no layers mapping')
        meta = doc.get('meta') or {}
        for key, want in (
            (
                'input_shape',
                None if input_shape is None else list(input_shape),
            ),
            ('num_groups', num_groups),
            ('divisor', divisor),
        ):
            got = meta.get(key)
            if want is not None and got is not None and got != want:
                raise ValueError(
                    f'{where}: meta.{key} is {got}, but the network has '
                    f'{want} (a table of another architecture or setting?)'
                )
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
            channels = entry.get('channels')
            widths = [rec.in_channels, rec.out_channels]
            if channels is not None and list(channels) != widths:
                raise ValueError(
                    f'{where}: layers.{rec.name}.channels is {channels}, but '
                    f'the network has {widths} (a table of another '
                    'architecture?)'
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
        self.offset_ms, self.scale = calibration(self.meta, where)
        self.num_units = const
        # a host copy for lookups of one subnet (no device sync)
        self.host = (
            torch.stack(tables),
            torch.tensor(in_idx, dtype=torch.long),
            torch.tensor(out_idx, dtype=torch.long),
        )
        self.register_buffer('ms', self.host[0].clone(), persistent=False)
        self.register_buffer('in_idx', self.host[1].clone(), persistent=False)
        self.register_buffer('out_idx', self.host[2].clone(), persistent=False)

    def layer_times(self, weights: Tensor, host: bool = False) -> Tensor:
        """Time of every layer given weights over each unit's group counts.

        Args:
            weights (Tensor): ``(..., U, G)``: ``P(K = k)`` (expected
                times) or :func:`interpolation_weights` (one subnet).
            host (bool): Use the host copy of the table (``weights`` on the
                CPU) instead of the buffers on the module's device.
                Defaults to False.

        Returns:
            Tensor: Float64 milliseconds, ``(..., L)``, before calibration.
        """
        ms, in_idx, out_idx = (
            self.host if host else (self.ms, self.in_idx, self.out_idx)
        )
        weights = weights.to(torch.float64)
        one = torch.zeros_like(weights[..., :1, :])
        one[..., 0] = 1.0  # a never-pruned side: one "group count"
        dist = torch.cat([weights, one], dim=-2)
        p_in = dist[..., in_idx, :]
        p_out = dist[..., out_idx, :]
        return torch.einsum('...lg,lgh,...lh->...l', p_in, ms, p_out)

    def layer_latency(self, marginals: Tensor) -> Tensor:
        """Expected time of every layer (before calibration).

        Args:
            marginals (Tensor): ``p(w)`` of every unit, ``(..., U, G)``, on
                the table's device (differentiable).

        Returns:
            Tensor: Float64 milliseconds, ``(..., L)``.
        """
        return self.layer_times(group_count_probs(marginals))

    def calibrated(self, layer_sum: Any) -> Any:
        """The whole network's milliseconds from its layers' sum:
        ``offset_ms + scale * layer_sum`` (see the module's docstring).

        Args:
            layer_sum (Tensor | float): Sum of the layers' entries.

        Returns:
            Tensor | float: Milliseconds, of the same type.
        """
        return self.offset_ms + self.scale * layer_sum

    def forward(self, marginals: Tensor) -> Tensor:
        """E[latency]: the calibrated sum over layers.

        Args:
            marginals (Tensor): ``(..., U, G)``.

        Returns:
            Tensor: Float64 milliseconds, ``marginals.shape[:-2]``.
        """
        return self.calibrated(self.layer_latency(marginals).sum(dim=-1))

    def of_widths(self, widths: Tensor, ends: Tensor) -> Tensor:
        """The table's latency of subnets given by their units' channels,
        interpolated between group ends, on the table's device (no host
        sync).

        Args:
            widths (Tensor): Channels, ``(N, U)``.
            ends (Tensor): Group ends of every unit, ``(U, G)``.

        Returns:
            Tensor: Float64 milliseconds, ``(N,)``.
        """
        weights = interpolation_weights(widths.to(self.ms.device), ends)
        return self.calibrated(self.layer_times(weights).sum(dim=-1))

    def of_subnet(self, widths: Sequence[int], ends: Tensor) -> float:
        """:meth:`of_widths` of one subnet, on the host (from a host copy
        of the table: no device sync).

        Args:
            widths (Sequence[int]): Channels of every unit.
            ends (Tensor): Group ends of every unit, ``(U, G)``.

        Returns:
            float: Milliseconds.
        """
        w = torch.tensor([list(widths)], dtype=torch.float64)
        weights = interpolation_weights(w, ends.cpu())
        total = float(self.layer_times(weights, host=True).sum())
        return self.calibrated(total)

    def lookup(self, num_groups: Sequence[int]) -> float:
        """The table's latency of one subnet given by group counts.

        Args:
            num_groups (Sequence[int]): Retained groups of every unit.

        Returns:
            float: Milliseconds (calibrated).
        """
        groups = list(num_groups) + [1]
        total = 0.0
        for t, i, o in zip(*self.host):
            total += float(t[groups[int(i)] - 1, groups[int(o)] - 1])
        return self.calibrated(total)


def calibration(meta: Dict[str, Any], where: str) -> Tuple[float, float]:
    """``(offset_ms, scale)`` of a table's ``meta.calibration``.

    Args:
        meta (dict): The table's ``meta``.
        where (str): The file, for errors.

    Returns:
        tuple[float, float]: ``(0.0, 1.0)`` without a calibration.
    """
    cal = meta.get('calibration')
    if cal is None:
        return 0.0, 1.0
    offset = cal.get('offset_ms') if isinstance(cal, dict) else None
    scale = cal.get('scale') if isinstance(cal, dict) else None
    if not (is_number(offset) and is_number(scale) and scale > 0):
        raise ValueError(
            f'{where}: meta.calibration needs numbers offset_ms and '
            f'scale > 0, got {cal!r}'
        )
    return float(offset), float(scale)


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
