"""The Markov process of DMCP (Section 3.1 of the paper), one function per
equation.

A layer's channels are split into ``G`` groups. State ``S_k`` means "group
``k`` is retained"; the chain starts in ``S_1`` (the first group is always
kept) and moves from ``S_k`` to ``S_{k+1}`` with transition probability
``p_{k+1}`` or stops. Retaining ``k`` groups therefore always means the first
``k`` groups, a prefix of the channels.

All functions take the architecture parameters of one unit, shape ``(G - 1,)``,
or of many units stacked, shape ``(U, G - 1)``, and work on the last dimension.
"""

from typing import Optional

import torch
from torch import Tensor

__all__ = [
    'transition_probs',
    'marginal_probs',
    'expected_channels',
    'channel_scale',
    'sample_num_groups',
    'expected_num_groups',
    'check_divisor',
    'group_ends',
    'round_width',
]


def transition_probs(alpha: Tensor) -> Tensor:
    """Transition probabilities, Eq. 5: ``p_1 = 1``,
    ``p_k = sigmoid(alpha_k)``.

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.

    Returns:
        Tensor: ``p`` of shape ``(..., G)``, with ``p[..., 0] == 1``.
    """
    ones = alpha.new_ones(alpha.shape[:-1] + (1,))
    return torch.cat([ones, torch.sigmoid(alpha)], dim=-1)


def marginal_probs(alpha: Tensor) -> Tensor:
    """Marginal probabilities of retaining each group, Eq. 6:
    ``p(w_k) = prod_{i <= k} p_i``.

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.

    Returns:
        Tensor: ``p(w)`` of shape ``(..., G)``, non-increasing along the last
        dimension, with ``p(w_1) == 1``.
    """
    return torch.cumprod(transition_probs(alpha), dim=-1)


def expected_channels(marginals: Tensor, group_sizes: Tensor) -> Tensor:
    """Expected number of retained channels, Eq. 8, with groups:
    ``E(channel) = sum_k size_k * p(w_k)``.

    Args:
        marginals (Tensor): ``p(w)``, shape ``(..., G)``.
        group_sizes (Tensor): Channels in each group, shape ``(..., G)`` or
            ``(G,)``.

    Returns:
        Tensor: Expected channels, shape ``marginals.shape[:-1]``.
    """
    return (marginals * group_sizes.to(marginals.dtype)).sum(dim=-1)


def channel_scale(
    marginals: Tensor, group_sizes: Tensor, num_channels: Optional[int] = None
) -> Tensor:
    """Per-channel scale of Eq. 7, ``O_hat_k = O_k * p(w_k)``: every channel of
    group ``k`` is scaled by ``p(w_k)``.

    Args:
        marginals (Tensor): ``p(w)`` of one unit, shape ``(G,)``.
        group_sizes (Tensor): Channels in each group, shape ``(G,)``, long,
            on the device of ``marginals``.
        num_channels (int, optional): ``C = group_sizes.sum()``, known to
            the caller; given, the scale is built without reading
            ``group_sizes`` on the host (a sync on CUDA). Defaults to None
            (read).

    Returns:
        Tensor: Scale of shape ``(C,)``.
    """
    if num_channels is None:
        num_channels = int(group_sizes.sum())
    return torch.repeat_interleave(
        marginals, group_sizes, dim=-1, output_size=num_channels
    )


def sample_num_groups(
    alpha: Tensor, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Run the Markov chain once per unit (Direct Sampling, Section 3.3).

    Starting in ``S_1``, each step ``k -> k + 1`` is taken with probability
    ``p_{k+1}``; the first failure ends the chain.

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.
        generator (torch.Generator, optional): Source of randomness. Defaults
            to None (torch's global generator).

    Returns:
        Tensor: Number of retained groups (long, in ``[1, G]``), shape
        ``alpha.shape[:-1]``.
    """
    with torch.no_grad():
        p = torch.sigmoid(alpha.detach().double())
        u = uniform_like(p, generator)
        steps = torch.cumprod((u < p).long(), dim=-1).sum(dim=-1)
    return steps + 1


def uniform_like(p: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform draws in ``[0, 1)`` of ``p``'s shape and dtype, on its
    device.

    Drawn on the generator's device and moved: CUDA refuses a CPU generator
    for a CUDA tensor, and a CPU generator keeps the draws the same on every
    device type.

    Args:
        p (Tensor): Gives shape, dtype and device.
        generator (torch.Generator, optional): Source of randomness; None
            for torch's global generator.

    Returns:
        Tensor: The draws.
    """
    device = p.device if generator is None else generator.device
    return torch.rand(
        p.shape, generator=generator, dtype=p.dtype, device=device
    ).to(p.device)


def expected_num_groups(alpha: Tensor) -> Tensor:
    """Expected number of retained groups, ``sum_k p(w_k)`` (Eq. 8 in groups).

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.

    Returns:
        Tensor: Expected groups, shape ``alpha.shape[:-1]``.
    """
    return marginal_probs(alpha).sum(dim=-1)


def group_ends(num_channels: int, num_groups: int, divisor: int = 1) -> list:
    """Channel index at which each group ends (exclusive), for ``G`` groups as
    equal as integers allow: group ``k`` ends at ``round(C * k / G)``.

    With a ``divisor`` ``d`` the channels are cut into ``B = C // d`` blocks
    of ``d`` and group ``k < G`` ends at ``d * round(B * k / G)``, a multiple
    of ``d``; the last group ends at ``C`` (not a multiple of ``d`` when
    ``C`` is not: its extra channels go to the last group).

    Args:
        num_channels (int): Channels ``C`` of the unit.
        num_groups (int): Groups ``G``; ``1 <= G <= C // d``.
        divisor (int): Every end but the last is a multiple of it.
            Defaults to 1.

    Returns:
        list[int]: ``G`` strictly increasing ends, the last equal to ``C``.
    """
    if num_groups < 1:
        raise ValueError(f'num_groups must be >= 1, got {num_groups}')
    check_divisor(divisor)
    blocks = num_channels // divisor
    if num_groups > blocks:
        what = (
            f'the {num_channels} channels to split'
            if divisor == 1
            else f'the {blocks} blocks of divisor={divisor} in '
            f'{num_channels} channels: every group needs a block'
        )
        raise ValueError(f'num_groups={num_groups} is more than {what}')
    # Integer arithmetic: round half up of B * k / G.
    ends = [
        divisor * ((2 * blocks * k + num_groups) // (2 * num_groups))
        for k in range(1, num_groups)
    ]
    return ends + [num_channels]


def check_divisor(divisor: int) -> None:
    """Refuse a divisor that is not a positive integer.

    Args:
        divisor (int): The channel divisor.

    Raises:
        ValueError: It is not an integer >= 1.
    """
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise ValueError(f'divisor must be an integer, got {divisor!r}')
    if divisor < 1:
        raise ValueError(f'divisor must be >= 1, got {divisor}')


def round_width(
    value: float, num_channels: int, divisor: int = 1, low: int = 1
) -> int:
    """A width as a channel count: the nearest multiple of ``divisor``,
    at least ``low`` and at most ``num_channels`` (which need not be a
    multiple of it).

    Args:
        value (float): The width (e.g. expected channels).
        num_channels (int): The full width.
        divisor (int): Widths below the full one are multiples of it.
            Defaults to 1.
        low (int): The smallest width. Defaults to 1 (raised to
            ``divisor``).

    Returns:
        int: The channel count.
    """
    width = divisor * round(value / divisor)
    if num_channels - value < abs(value - width):
        width = num_channels  # nearer than any multiple (an odd full width)
    return int(min(max(width, low, divisor), num_channels))
