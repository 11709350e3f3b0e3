"""The Markov mutable channel unit: one set of architecture parameters for a
group of layers whose output channels are pruned together."""

from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..registry import MODELS
from .bernoulli import check_process, keep_marginals, sample_groups
from .markov import (
    channel_scale,
    expected_channels,
    group_ends,
    round_width,
)

__all__ = ['DMCPChannelUnit']


def initial_alpha(
    num_groups: int, init: Union[str, float], name: str = ''
) -> Tensor:
    """Initial architecture parameters of a unit, before noise.

    Args:
        num_groups (int): Groups ``G``.
        init (str | float): ``'uniform'`` for ``alpha_k = log(G - k + 1)``
            (``k = 2..G``: ``p(w_k) = (G - k + 1) / G``, every number of
            retained groups equally likely), or a number for a constant.
        name (str): Unit name for error messages. Defaults to ''.

    Returns:
        Tensor: ``alpha`` of shape ``(G - 1,)``.
    """
    if init == 'uniform':
        return torch.log(
            torch.arange(num_groups - 1, 0, -1, dtype=torch.float32)
        )
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        return torch.full((num_groups - 1,), float(init))
    raise ValueError(
        f"alpha_init must be 'uniform' or a number, got {init!r} (unit {name})"
    )


@MODELS.register_module(force=True)
class DMCPChannelUnit(nn.Module):
    """Channels of one or more coupled layers, split into ``num_groups``
    groups, with the Markov architecture parameters of Section 3.1.

    ``alpha`` has ``num_groups - 1`` entries: the first group is always kept
    (``p_1 = 1``, Eq. 5). Retaining ``k`` groups means the first ``k``; group
    ``k`` ends at channel ``round(C * k / G)`` (with a ``divisor``, at a
    multiple of it: :func:`~.markov.group_ends`).

    Args:
        name (str): The unit's name (its first producing layer).
        num_channels (int): Channels ``C`` of the unit.
        num_groups (int): Groups ``G`` the channels are split into (10 for
            ResNet and 15 for MobileNetV2 1.5x in the paper). Defaults to 10.
        alpha_init (str | float): Mean of the random initial ``alpha``:
            ``'uniform'`` sets ``alpha_k = log(G - k + 1)``, under which the
            Markov chain retains each number of groups ``1..G`` with equal
            probability (the uniform widths of the original sandwich rule),
            so warmup trains every width alike; a number sets every
            ``alpha_k`` to it (0.0: every transition 0.5). Defaults to
            ``'uniform'``.
        alpha_init_std (float): Standard deviation of the Gaussian noise
            added to the initial ``alpha`` (the paper initialises it
            randomly). Defaults to 0.01.
        layers (Sequence[str], optional): Names of the layers whose output
            channels the unit sets, for reports. Defaults to None.
        divisor (int): Every width the unit takes but its full one is a
            multiple of it (group ends, Expected Sampling, fitted widths),
            e.g. 8 for hardware kernels; ``num_channels // divisor`` must
            be at least ``num_groups``. Defaults to 1.
        process (str): ``'markov'``, the paper's Markov process, or
            ``'bernoulli'``, the ablation of supplement D: each group after
            the first kept with its own independent probability
            ``sigmoid(alpha_k)`` (see :mod:`projects.dmcp.models.bernoulli`).
            Defaults to ``'markov'``.
    """

    def __init__(
        self,
        name: str,
        num_channels: int,
        num_groups: int = 10,
        alpha_init: Union[str, float] = 'uniform',
        alpha_init_std: float = 0.01,
        layers: Optional[Sequence[str]] = None,
        divisor: int = 1,
        process: str = 'markov',
    ) -> None:
        super().__init__()
        self.process = check_process(
            process, 'model.mutator.channel_unit_cfg.process'
        )
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(
                f'num_groups must be a positive integer, got '
                f'{num_groups!r} (unit {name})'
            )
        if num_groups > num_channels:
            raise ValueError(
                f'num_groups={num_groups} is more than the {num_channels} '
                f'channels of unit {name}: every group needs a channel'
            )
        self.name = name
        self.num_channels = num_channels
        self.num_groups = num_groups
        self.divisor = divisor
        self.layers: List[str] = list(layers or [name])
        try:
            self.ends: List[int] = group_ends(
                num_channels, num_groups, divisor
            )
        except ValueError as e:
            raise ValueError(f'{e} (unit {name})') from None
        sizes = [self.ends[0]] + [
            b - a for a, b in zip(self.ends, self.ends[1:])
        ]
        self.register_buffer(
            'group_sizes', torch.tensor(sizes), persistent=False
        )
        self.alpha = nn.Parameter(initial_alpha(num_groups, alpha_init, name))
        with torch.no_grad():
            self.alpha.add_(torch.randn_like(self.alpha) * alpha_init_std)
        self.choice = num_channels

    @property
    def min_channels(self) -> int:
        """Channels of the smallest choice: the first group."""
        return self.ends[0]

    def marginals(self) -> Tensor:
        """``p(w_k)`` of every group (Eq. 6, or independent under
        ``process='bernoulli'``), shape ``(G,)``."""
        return keep_marginals(self.alpha, self.process)

    def expected_channels(self) -> Tensor:
        """``E(channel)`` (Eq. 8), a differentiable scalar."""
        return expected_channels(self.marginals(), self.group_sizes)

    def channel_scale(self) -> Tensor:
        """Per-channel scale ``p(w_k)`` of Eq. 7, shape ``(C,)``."""
        return channel_scale(
            self.marginals(), self.group_sizes, self.num_channels
        )

    def channels_of(self, num_groups: int) -> int:
        """Channels retained by keeping the first ``num_groups`` groups."""
        return self.ends[num_groups - 1]

    def sample_channels(
        self, generator: Optional[torch.Generator] = None
    ) -> int:
        """Direct Sampling: run the Markov chain once (Section 3.3), or
        draw the groups independently under ``process='bernoulli'``.

        Args:
            generator (torch.Generator, optional): Source of randomness.
                Defaults to None.

        Returns:
            int: Retained channels (a group boundary).
        """
        groups = sample_groups(self.alpha, generator, self.process)
        return self.channels_of(int(groups))

    def expected_choice(self) -> int:
        """Expected Sampling: ``E(channel)`` rounded to a channel count
        (Section 3.3), a multiple of the divisor unless it is the full
        width."""
        value = float(self.expected_channels().detach())
        return self.round_width(value)

    def round_width(self, value: float, low: int = 1) -> int:
        """A width rounded to a channel count this unit can take: the
        nearest multiple of the divisor, in ``[max(low, divisor), C]``.

        Args:
            value (float): The width.
            low (int): The smallest width. Defaults to 1.

        Returns:
            int: The channel count.
        """
        return round_width(value, self.num_channels, self.divisor, low)

    def extra_repr(self) -> str:
        return (
            f'name={self.name}, num_channels={self.num_channels}, '
            f'num_groups={self.num_groups}, divisor={self.divisor}'
        )


#: The old Python name of :class:`DMCPChannelUnit`.
MarkovChannelUnit = DMCPChannelUnit
