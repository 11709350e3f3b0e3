"""The budget regularisation of DMCP (Section 3.1.4)."""

import math

import torch
from torch import Tensor, nn

from ..registry import MODELS
from ..utils import is_number

__all__ = ['BUDGET_MODES', 'budget_loss', 'DMCPBudgetLoss']


BUDGET_MODES = ('bounded', 'official', 'paper')


def budget_loss(
    expected_flops: Tensor,
    target: float,
    gamma: float = 0.99,
    mode: str = 'bounded',
    unit: float = 1.0,
) -> Tensor:
    """Budget loss of Eq. 13 with the one-sided margin: zero when
    ``gamma * T <= E <= T``, a log of the distance otherwise.

    * ``'paper'``: ``log|E - T|`` on both sides, as Eq. 13 is written. Its
      gradient ``1 / (E - T)`` has no bound just above ``T``: a step that
      lands there is thrown far below the target.
    * ``'official'``: ``log(T - E)`` below the band and ``log(E - gamma *
      T)`` above it, the form of the official code (github Zx55/dmcp
      ``utils/loss_fn.py``, which measures above ``T`` from ``0.95 T``).
      Both sides are at least ``(1 - gamma) * T`` from their pole, so the
      gradient is at most ``1 / ((1 - gamma) * T)``; but above ``T`` it
      fades as ``1 / (E - gamma * T)``, so a strong task-loss push can hold
      ``E`` far above the target.
    * ``'bounded'`` (default): below the band as ``'official'``; above the
      middle of the band, ``c = (1 + gamma) / 2 * T``, the line ``log((1 -
      gamma) * T) + (E - c) / ((1 - gamma) * T)``. The gradient is at most
      ``1 / ((1 - gamma) * T)`` everywhere and that bound above ``c``,
      however far ``E`` is: no kick below the target and no equilibrium
      above it. The task loss pushes ``E`` up to where the budget starts
      to push back, so starting at the middle of the band leaves half of it
      for the last steps' oscillation, and the search ends inside it.

    Computed on the device of ``expected_flops`` without reading it on the
    host (no sync). The gradients of every form are the same whatever the
    budget's unit (MACs, or milliseconds for ``model.budget='latency'``):
    ``E`` and ``T`` scale together.

    Args:
        expected_flops (Tensor): ``E(N_FLOPs)`` (or E[latency]), a
            differentiable scalar.
        target (float): Target ``T`` in the same unit (MACs, or ms).
        gamma (float): Tolerance ratio, in ``(0, 1]``. Defaults to 0.99.
        mode (str): One of :data:`BUDGET_MODES`. Defaults to
            ``'bounded'``.
        unit (float): The smallest meaningful amount of the budget: each
            log's argument is clamped to at least it, so that the branch
            ``torch.where`` does not take never puts an inf into the
            gradient. Defaults to 1.0 (one MAC).

    Returns:
        Tensor: The loss, in the shape and dtype of ``expected_flops``;
        zero (still attached to the graph) inside the margin (``'bounded'``:
        its lower half).
    """
    check_budget_mode(mode)
    e = expected_flops
    upper = (1 + gamma) / 2 * target if mode == 'bounded' else target
    above, below = e > upper, e < gamma * target
    # Each branch is clamped to at least one unit (one MAC), so that the
    # branch torch.where does not take never puts an inf into the gradient.
    low = torch.log((target - e).clamp_min(unit))
    if mode == 'bounded':
        margin = max((1 - gamma) * target, unit)
        high = math.log(margin) + (e - upper) / margin
    else:
        pole = target if mode == 'paper' else gamma * target
        high = torch.log((e - pole).clamp_min(unit))
    return torch.where(above, high, torch.where(below, low, e * 0.0))


def check_budget_mode(mode: str) -> None:
    """Refuse an unknown budget loss mode in one line naming the key.

    Args:
        mode (str): The mode to check.
    """
    if mode not in BUDGET_MODES:
        raise ValueError(
            f'model.budget_mode={mode!r} is not one of {BUDGET_MODES}'
        )


@MODELS.register_module()
class DMCPBudgetLoss(nn.Module):
    """``lambda_reg * loss_reg`` of Eq. 15 as a module.

    Args:
        target_flops (float): Target ``T``: FLOPs (MACs), or milliseconds
            under the latency budget.
        gamma (float): Tolerance ratio in ``(0, 1]``. Defaults to 0.99.
        loss_weight (float): ``lambda_reg``. Defaults to 0.1.
        mode (str): Form of the loss, one of :data:`BUDGET_MODES` (see
            :func:`budget_loss`). Defaults to ``'bounded'``.
        unit (float): The budget's smallest meaningful amount (see
            :func:`budget_loss`). Defaults to 1.0 (one MAC).
    """

    def __init__(
        self,
        target_flops: float,
        gamma: float = 0.99,
        loss_weight: float = 0.1,
        mode: str = 'bounded',
        unit: float = 1.0,
    ) -> None:
        super().__init__()
        check_budget_mode(mode)
        if not (is_number(gamma) and 0 < gamma <= 1):
            raise ValueError(f'model.gamma must lie in (0, 1], got {gamma!r}')
        if not (is_number(loss_weight) and loss_weight >= 0):
            raise ValueError(
                'model.lambda_reg must be a finite number >= 0, '
                f'got {loss_weight!r}'
            )
        self.target_flops = float(target_flops)
        self.gamma = float(gamma)
        self.loss_weight = float(loss_weight)
        self.mode = mode
        self.unit = float(unit)

    def forward(self, expected_flops: Tensor) -> Tensor:
        """Weighted budget loss.

        Args:
            expected_flops (Tensor): ``E(N_FLOPs)``.

        Returns:
            Tensor: ``loss_weight * budget_loss(E, T, gamma)``.
        """
        return self.loss_weight * budget_loss(
            expected_flops, self.target_flops, self.gamma, self.mode, self.unit
        )
