"""The Bernoulli ablation of DMCP's Markov process (supplement D of the
paper): every channel group after the first is kept with its own,
independent probability ``sigmoid(alpha_k)``.

The Markov process keeps group ``k`` only if groups ``1..k-1`` are kept, so
its marginals ``p(w_k)`` are nested (non-increasing). Here the marginal of
group ``k`` is its keep probability itself, ``p(w_1) = 1`` and
``p(w_k) = sigmoid(alpha_k)``, with no order between groups. The expected
channels (Eq. 8), the channel scale (Eq. 7) and so the budget loss are
computed from these marginals exactly as from the Markov ones.

A draw keeps each group independently; the slicing layers run channel
prefixes, so the drawn subnet keeps as many groups as the draw kept, as a
prefix. Its expected width is the same ``sum_k size_k * p(w_k)`` only when
the groups have equal sizes (as :func:`~.markov.group_ends` makes them, up
to one channel).

Functions work on the last dimension of ``alpha``, shape ``(..., G - 1)``,
like those of :mod:`projects.dmcp.models.markov`.
"""

from typing import Optional

import torch
from torch import Tensor

from .markov import (
    marginal_probs,
    sample_num_groups,
    transition_probs,
    uniform_like,
)

__all__ = [
    'PROCESSES',
    'bernoulli_marginals',
    'sample_num_groups_bernoulli',
    'keep_marginals',
    'sample_groups',
    'check_process',
]

#: Values of the unit config key ``process``.
PROCESSES = ('markov', 'bernoulli')


def check_process(process: str, key: str = 'process') -> str:
    """Refuse an unknown ``process`` in one line naming the key.

    Args:
        process (str): ``'markov'`` or ``'bernoulli'``.
        key (str): Config key to name in the error. Defaults to
            ``'process'``.

    Returns:
        str: ``process``.
    """
    if process not in PROCESSES:
        raise ValueError(f'{key} must be one of {PROCESSES}, got {process!r}')
    return process


def bernoulli_marginals(alpha: Tensor) -> Tensor:
    """Keep probability of each group: ``1`` for the first, then
    ``sigmoid(alpha_k)``, independent of each other (not nested).

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.

    Returns:
        Tensor: ``p(w)`` of shape ``(..., G)``, with ``p(w_1) == 1``.
    """
    return transition_probs(alpha)


def sample_num_groups_bernoulli(
    alpha: Tensor, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Draw every group after the first independently; count the kept ones.

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.
        generator (torch.Generator, optional): Source of randomness; the
            draws are made on its device and moved to alpha's. Defaults to
            None (torch's global generator).

    Returns:
        Tensor: Number of kept groups (long, in ``[1, G]``), shape
        ``alpha.shape[:-1]``.
    """
    with torch.no_grad():
        p = torch.sigmoid(alpha.detach().double())
        return (uniform_like(p, generator) < p).long().sum(dim=-1) + 1


def keep_marginals(alpha: Tensor, process: str = 'markov') -> Tensor:
    """``p(w)`` of every group under ``process``.

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.
        process (str): ``'markov'`` (Eq. 6, nested) or ``'bernoulli'``
            (independent). Defaults to ``'markov'``.

    Returns:
        Tensor: ``p(w)``, shape ``(..., G)``.
    """
    if process == 'bernoulli':
        return bernoulli_marginals(alpha)
    return marginal_probs(alpha)


def sample_groups(
    alpha: Tensor,
    generator: Optional[torch.Generator] = None,
    process: str = 'markov',
) -> Tensor:
    """Number of kept groups of one draw per row of ``alpha`` under
    ``process`` (see :func:`~.markov.sample_num_groups` and
    :func:`sample_num_groups_bernoulli`).

    Args:
        alpha (Tensor): Architecture parameters, shape ``(..., G - 1)``.
        generator (torch.Generator, optional): Source of randomness.
            Defaults to None.
        process (str): ``'markov'`` or ``'bernoulli'``. Defaults to
            ``'markov'``.

    Returns:
        Tensor: Kept groups (long, in ``[1, G]``), shape
        ``alpha.shape[:-1]``.
    """
    if process == 'bernoulli':
        return sample_num_groups_bernoulli(alpha, generator)
    return sample_num_groups(alpha, generator)
