"""The budget regularisation of DMCP (Section 3.1.4)."""

import math

import torch
from torch import Tensor, nn

from ..registry import MODELS

__all__ = ['budget_loss', 'DMCPBudgetLoss']


def budget_loss(
    expected_flops: Tensor, target: float, gamma: float = 0.99
) -> Tensor:
    """Budget loss of Eq. 13 with the one-sided margin:
    zero when ``gamma * T <= E <= T``, ``log(|E - T|)`` otherwise.

    Args:
        expected_flops (Tensor): ``E(N_FLOPs)``, a differentiable scalar.
        target (float): Target FLOPs ``T`` (MACs).
        gamma (float): Tolerance ratio, in ``(0, 1]``. Defaults to 0.99.

    Returns:
        Tensor: The loss, a scalar in the dtype of ``expected_flops``; zero
        (still attached to the graph) inside the margin.
    """
    e = float(expected_flops.detach())
    if gamma * target <= e <= target:
        return expected_flops * 0.0
    diff = (expected_flops - target).abs()
    # |E - T| is at least (1 - gamma) * T outside the margin unless gamma == 1
    # and E == T exactly (then the margin is hit): never log(0).
    return torch.log(diff)


@MODELS.register_module()
class DMCPBudgetLoss(nn.Module):
    """``lambda_reg * loss_reg`` of Eq. 15 as a module.

    Args:
        target_flops (float): Target FLOPs ``T`` (MACs).
        gamma (float): Tolerance ratio in ``(0, 1]``. Defaults to 0.99.
        loss_weight (float): ``lambda_reg``. Defaults to 0.1.
    """

    def __init__(
        self,
        target_flops: float,
        gamma: float = 0.99,
        loss_weight: float = 0.1,
    ) -> None:
        super().__init__()
        if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):
            raise ValueError(f'gamma must lie in (0, 1], got {gamma!r}')
        if not (
            isinstance(loss_weight, (int, float))
            and math.isfinite(loss_weight)
            and loss_weight >= 0
        ):
            raise ValueError(
                f'lambda_reg (loss_weight) must be a finite '
                f'number >= 0, got {loss_weight!r}'
            )
        self.target_flops = float(target_flops)
        self.gamma = float(gamma)
        self.loss_weight = float(loss_weight)

    def forward(self, expected_flops: Tensor) -> Tensor:
        """Weighted budget loss.

        Args:
            expected_flops (Tensor): ``E(N_FLOPs)``.

        Returns:
            Tensor: ``loss_weight * budget_loss(E, T, gamma)``.
        """
        return self.loss_weight * budget_loss(
            expected_flops, self.target_flops, self.gamma
        )
