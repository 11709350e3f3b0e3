"""Checkpoints into a pruned subnet: key layouts mapped, strictly.

A ``DMCPSubnet`` model is the pruned mmpretrain classifier, so its own
checkpoints have mmpretrain's keys. Checkpoints from mmrazor put the same
classifier under ``architecture.`` (its algorithms wrap the model) next to
mutator and distiller entries. :class:`SubnetCheckpointCheck`, a
load-state-dict pre-hook on the subnet model, maps such a state dict onto
the model's keys and refuses, in one line naming the key or shape, anything
that does not fit: a missing or unexpected key, a weight of another shape,
and a search (supernet) checkpoint, whose weights have the unpruned widths.
mmengine's ``load_checkpoint`` (hence ``load_from``, ``resume`` and
``init_cfg=dict(type='Pretrained')``) loads without ``strict``; the hook
makes every load into a subnet strict.
"""

from typing import Any, Dict, List

import torch
from torch import nn

from ..compat import CheckpointLoadError

__all__ = [
    'SubnetCheckpointCheck',
    'SubnetCheckpointError',
    'map_subnet_state_dict',
]

#: Prefix of the wrapped classifier in mmrazor's (and our search's)
#: algorithm checkpoints.
ARCH_PREFIX = 'architecture.'
#: Keys of a search checkpoint that are not classifier weights.
SEARCH_KEYS = ('mutator.', 'distiller.', 'teacher.', 'sampler_state')


class SubnetCheckpointError(CheckpointLoadError):
    """A checkpoint whose keys or shapes do not fit the subnet model."""


def _search_keys(keys: List[str]) -> List[str]:
    """Keys of a search checkpoint, mutator entries first."""
    found = [k for k in keys if k.startswith(SEARCH_KEYS)]
    return sorted(found, key=lambda k: not k.startswith('mutator.'))


def map_subnet_state_dict(
    state: Dict[str, Any], model_state: Dict[str, torch.Tensor], where: str
) -> Dict[str, Any]:
    """Map a checkpoint's state dict onto a subnet model's keys, strictly.

    Args:
        state (dict): The checkpoint's state dict.
        model_state (dict): The model's ``state_dict()``.
        where (str): What the model was built from (its subnet file), for
            errors.

    Returns:
        dict: The state dict with the model's keys.

    Raises:
        SubnetCheckpointError: A key or shape that does not fit, in one
            line.
    """
    keys = [k for k in state if not k.startswith('_')]
    search = _search_keys(keys)
    wrapped = [k for k in keys if k.startswith(ARCH_PREFIX)]
    if wrapped and not any(k in model_state for k in keys):
        mapped = {k[len(ARCH_PREFIX) :]: state[k] for k in wrapped}
        rest = [k for k in keys if k not in wrapped and k not in search]
        if rest:
            raise SubnetCheckpointError(
                f'checkpoint key {rest[0]}: unexpected beside '
                f'{ARCH_PREFIX}* weights; it fits no layer of the subnet '
                f'built from {where}'
            )
    else:
        mapped = {k: state[k] for k in keys}
    for key, value in model_state.items():
        if key not in mapped:
            raise SubnetCheckpointError(
                f'checkpoint key {key}: missing; the subnet built from '
                f'{where} needs it (a checkpoint of another model?)'
            )
        got = tuple(getattr(mapped[key], 'shape', ()))
        if got != tuple(value.shape):
            if search:
                raise SubnetCheckpointError(
                    f'checkpoint key {key}: shape {got}, the subnet has '
                    f'{tuple(value.shape)}: a search (supernet) checkpoint, '
                    'with unpruned widths '
                    f'and {search[0]}; load_from of a subnet config takes a '
                    'checkpoint of the retrained subnet'
                )
            raise SubnetCheckpointError(
                f'checkpoint key {key}: shape {got} in the checkpoint, '
                f'{tuple(value.shape)} in the subnet built from {where} '
                '(a checkpoint of another subnet?)'
            )
    extra = [k for k in mapped if k not in model_state]
    if extra:
        raise SubnetCheckpointError(
            f'checkpoint key {extra[0]}: unexpected; it fits no layer of the '
            f'subnet built from {where}'
        )
    return mapped


class SubnetCheckpointCheck:
    """A load-state-dict pre-hook that maps and checks the whole state dict
    when it reaches the subnet model's root (:func:`map_subnet_state_dict`).

    Args:
        where (str): The subnet file the model was built from.
    """

    def __init__(self, where: str) -> None:
        self.where = where

    def __call__(
        self,
        module: nn.Module,
        state_dict: Dict[str, Any],
        prefix: str,
        *args: Any,
    ) -> None:
        """Rewrite ``state_dict`` in place to the model's keys.

        Args:
            module (nn.Module): The subnet model.
            state_dict (dict): What is being loaded.
            prefix (str): The module's prefix; only ``''`` (the root, where
                the whole state dict arrives) is checked.
            *args: The rest of torch's pre-hook arguments (unused).
        """
        if prefix:
            return
        mapped = map_subnet_state_dict(
            state_dict, module.state_dict(), self.where
        )
        metadata = getattr(state_dict, '_metadata', None)
        state_dict.clear()
        state_dict.update(mapped)
        if metadata is not None:
            state_dict._metadata = metadata

    @classmethod
    def attach(cls, model: nn.Module, where: str) -> nn.Module:
        """Register the check on ``model``.

        Args:
            model (nn.Module): The pruned classifier.
            where (str): Its subnet file.

        Returns:
            nn.Module: ``model``.
        """
        model.register_load_state_dict_pre_hook(cls(where))
        return model
