"""Small helpers shared by the search and the retraining.

Nothing here imports the rest of the package: the search
(:mod:`.models.algorithm`), its export (:mod:`.models.export`), the subnet file
(:mod:`.models.subnet_file`) and the retraining (:mod:`.models.prune`) all
sit above it.
"""

import math
import os.path as osp
from typing import Any, Optional, Sequence

from mmengine.model import BaseModel, is_model_wrapper
from torch import Tensor, nn

__all__ = [
    'REPO_ROOT',
    'check_input_shape',
    'is_int',
    'is_number',
    'is_shape',
    'tensor_forward',
    'unwrap',
    'with_scope',
]


def tensor_forward(model: nn.Module, x: Tensor) -> Tensor:
    """Forward used to trace and count a model: an OpenMMLab ``BaseModel`` in
    ``mode='tensor'``, any other module called on ``x``.

    Args:
        model (nn.Module): The model.
        x (Tensor): A batch of inputs.

    Returns:
        Tensor: The model's raw output.
    """
    if isinstance(model, BaseModel):
        return model(x, mode='tensor')
    return model(x)


def unwrap(model: nn.Module) -> nn.Module:
    """The algorithm inside a model wrapper (or the model itself).

    Args:
        model (nn.Module): A model, wrapped or not.

    Returns:
        nn.Module: The wrapped module.
    """
    return model.module if is_model_wrapper(model) else model


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a ``bool`` is not).

    Args:
        value: Anything.

    Returns:
        bool: True for an ``int`` that is not a ``bool``.
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite real number (a ``bool`` is not).

    Args:
        value: Anything.

    Returns:
        bool: True for a finite ``int`` or ``float`` that is not a ``bool``.
    """
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def is_shape(shape: Any) -> bool:
    """Whether ``shape`` is ``(C, H, W)`` of positive integers.

    Args:
        shape: Anything.

    Returns:
        bool: True for a list or tuple of three positive integers.
    """
    return (
        isinstance(shape, (list, tuple))
        and len(shape) == 3
        and all(is_int(s) and s > 0 for s in shape)
    )


def check_input_shape(input_shape: Sequence[int]) -> tuple:
    """Refuse a ``model.input_shape`` that is not ``(C, H, W)``.

    Args:
        input_shape (Sequence[int]): The configured shape.

    Returns:
        tuple: The shape as a tuple.

    Raises:
        ValueError: Not three positive integers.
    """
    if not is_shape(input_shape):
        raise ValueError(
            'model.input_shape must be (C, H, W) with positive '
            f'integers, got {input_shape!r}'
        )
    return tuple(input_shape)


def with_scope(cfg: Any, scope: Optional[str]) -> dict:
    """A copy of a config dict with ``_scope_`` set to ``scope`` unless it
    names one already.

    Args:
        cfg (dict): A model config.
        scope (str, optional): The registry scope to build it in (e.g.
            ``'mmpretrain'`` for a classifier, ``'mmrazor'`` for DMCP's
            parts). None leaves the config as it is.

    Returns:
        dict: The (shallow) copy.
    """
    cfg = dict(cfg)
    if scope is not None:
        cfg.setdefault('_scope_', scope)
    return cfg


#: The repository's root (the folder holding ``projects/`` and ``configs/``).
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
