"""FLOPs of DMCP: the expected FLOPs of Eq. 8-12 and a plain counter.

**Convention** (used in logs, the subnet yaml and every tool): FLOPs are the
multiply-accumulates (MACs) of convolution and linear layers for one input of
the config's input size. Batch norm, activations, pooling and additions are
not counted. With it the full ResNet-50 at 224x224 is 4.09 G and MobileNetV2
1.0x is 300.8 M, the figures the paper and OpenMMLab quote.

:class:`FlopsTable` turns the layers that one traced forward pass recorded
into three vectors, so that the FLOPs of the whole network, as a function of
every unit's channel count, is one gather and one dot product: no forward pass
of the model is needed once the shapes are known. Fed with expected channels
(Eq. 8) it is the differentiable ``E(N_FLOPs)`` of Eq. 12; fed with integer
channel counts it is the exact FLOPs of that subnet.
"""

import math
import re
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .tracer import ChannelTrace, UnitSpec, dummy_input

__all__ = [
    'FlopsTable',
    'count_flops',
    'count_params',
    'parse_flops',
    'format_flops',
]


class FlopsTable(nn.Module):
    """Conv + linear MACs of a network as a function of its units' channels.

    Each layer contributes ``coef * c[in] * c[out]`` (Eq. 9-11), where ``c``
    holds the units' channel counts followed by a constant 1 for channels that
    are never pruned. For a convolution ``coef = k*k * H_out*W_out / groups``
    times any fixed channel count; for a depthwise convolution (``groups =
    E(in)``, Eq. 10) the input factor is 1 and ``coef = k*k * H_out*W_out``
    times the channel multiplier.

    The table is a module whose (non-persistent) buffers follow the model to
    its device, so ``E(N_FLOPs)`` is computed where ``alpha`` lives, with no
    copy and no host sync; :meth:`count` gives the exact FLOPs of integer
    channel counts on the host, from a host copy of the same table.

    Args:
        trace (ChannelTrace): The traced layers and their channel nodes.
        units (Sequence[UnitSpec]): The prunable units, in mutator order.
    """

    def __init__(self, trace: ChannelTrace, units: Sequence[UnitSpec]) -> None:
        super().__init__()
        index = {}
        for i, unit in enumerate(units):
            index[trace.find(trace.layer(unit.producers[0]).out_node)] = i
        const = len(units)
        self.layer_names: List[str] = []
        coefs, in_idx, out_idx = [], [], []
        for rec in trace.layers:
            coef = float(rec.kernel_area * rec.out_spatial)
            i = index.get(trace.find(rec.in_node), const)
            o = index.get(trace.find(rec.out_node), const)
            if rec.depthwise:
                coef *= rec.out_channels // rec.in_channels
                if o == const:
                    coef *= rec.in_channels
                i = const
            else:
                coef /= rec.groups
                if i == const:
                    coef *= rec.in_channels
                if o == const:
                    coef *= rec.out_channels
            self.layer_names.append(rec.name)
            coefs.append(coef)
            in_idx.append(i)
            out_idx.append(o)
        self.num_units = const
        self._host = (coefs, in_idx, out_idx)
        self.register_buffer(
            'coef', torch.tensor(coefs, dtype=torch.float64), persistent=False
        )
        self.register_buffer(
            'in_idx', torch.tensor(in_idx, dtype=torch.long), persistent=False
        )
        self.register_buffer(
            'out_idx',
            torch.tensor(out_idx, dtype=torch.long),
            persistent=False,
        )

    def layer_flops(self, channels: Tensor) -> Tensor:
        """FLOPs of every layer (Eq. 9).

        Args:
            channels (Tensor): Channels of each unit, shape ``(..., U)``, on
                the table's device: expected channels (Eq. 8,
                differentiable) or integer counts; leading dims are a batch
                of subnets.

        Returns:
            Tensor: Float64 FLOPs per layer, shape ``(..., L)`` in
            ``layer_names`` order.
        """
        if channels.shape[-1:] != (self.num_units,):
            raise ValueError(
                f'expected {self.num_units} unit channel counts, '
                f'got shape {tuple(channels.shape)}'
            )
        c = channels.to(torch.float64)
        c = torch.cat([c, c.new_ones(c.shape[:-1] + (1,))], dim=-1)
        return self.coef * c[..., self.in_idx] * c[..., self.out_idx]

    def forward(self, channels: Tensor) -> Tensor:
        """Network FLOPs, Eq. 12: the sum over layers.

        Args:
            channels (Tensor): Channels of each unit, shape ``(..., U)``.

        Returns:
            Tensor: Float64 FLOPs, shape ``channels.shape[:-1]``,
            differentiable w.r.t. ``channels``.
        """
        return self.layer_flops(channels).sum(dim=-1)

    def count(self, channels: Sequence[float]) -> int:
        """Exact FLOPs of one subnet, on the host (no device tensor read).

        Args:
            channels (Sequence[float]): Channels of each unit, in unit order.

        Returns:
            int: Conv + linear MACs, rounded.
        """
        if len(channels) != self.num_units:
            raise ValueError(
                f'expected {self.num_units} unit channel counts, '
                f'got {len(channels)}'
            )
        c = [float(v) for v in channels] + [1.0]
        coefs, in_idx, out_idx = self._host
        return int(
            round(
                math.fsum(
                    k * c[i] * c[o] for k, i, o in zip(coefs, in_idx, out_idx)
                )
            )
        )


class _MacCounter(TorchFunctionMode):
    """Adds up conv and linear MACs from the tensors actually passed."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.conv2d or func is torch.conv2d:
            weight = args[1] if len(args) > 1 else kwargs['weight']
            # per output element: (C_in / groups) * k_h * k_w MACs
            self.macs += out.numel() * weight[0].numel()
        elif func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs['weight']
            self.macs += out.numel() * weight.shape[1]
        return out


def count_flops(
    model: nn.Module, input_shape: Sequence[int], forward=None
) -> int:
    """Count conv + linear MACs of any model (pruned, dynamic or plain) for
    one input of ``input_shape``, by running it once.

    Args:
        model (nn.Module): The model.
        input_shape (Sequence[int]): ``(C, H, W)``.
        forward (callable, optional): ``forward(model, x)`` to call instead of
            ``model(x)``. Defaults to None.

    Returns:
        int: MACs for one sample.
    """
    x = dummy_input(model, input_shape)
    was_training = model.training
    model.eval()
    counter = _MacCounter()
    try:
        with torch.no_grad(), counter:
            forward(model, x) if forward else model(x)
    finally:
        model.train(was_training)
    return int(counter.macs)


def count_params(model: nn.Module) -> int:
    """Number of parameters of a model.

    Args:
        model (nn.Module): The model.

    Returns:
        int: Total elements of all parameters.
    """
    return sum(p.numel() for p in model.parameters())


_UNITS = {'': 1, 'K': 10**3, 'M': 10**6, 'G': 10**9, 'T': 10**12}


def parse_flops(value: Union[int, float, str]) -> int:
    """Read a FLOPs figure given as a number of MACs or a string such as
    ``'2.2G'``, ``'300M'`` or ``'1.5e9'``.

    Args:
        value (int | float | str): The figure.

    Returns:
        int: MACs.
    """
    if isinstance(value, bool):
        raise TypeError(
            f'FLOPs must be a number or a string like "2.2G", got {value!r}'
        )
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(
            r'\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*'
            r'([kKMGT]?)(?:FLOPs|flops|MACs|macs)?\s*',
            value,
        )
        if m:
            return int(round(float(m.group(1)) * _UNITS[m.group(2).upper()]))
    raise ValueError(
        f'cannot read FLOPs from {value!r}: give a number of '
        f'MACs or a string such as "2.2G" or "300M"'
    )


def format_flops(value: Union[int, float]) -> str:
    """Format MACs for logs: ``4.09G``, ``300.8M``.

    Args:
        value (int | float): MACs.

    Returns:
        str: Human-readable figure.
    """
    value = float(value)
    for suffix, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(value) >= scale:
            return f'{value / scale:.{2 if suffix == "G" else 1}f}{suffix}'
    return f'{value:.0f}'
