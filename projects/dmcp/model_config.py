"""What a config's ``model`` describes, read once for every tool.

The tools accept three kinds of config: a DMCP search (``model.type='DMCP'``),
a subnet retraining (``'DMCPSubnet'``) and a plain mmpretrain classifier.
:func:`read_model_config` turns any of them into a :class:`ModelSpec`: the
kind, the plain classifier's config (with the config's ``data_preprocessor``
and default scope filled in, ready for ``MODELS.build``), and the input shape,
unit overrides and subnet yaml the config names.
"""

import copy
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from .models.subnet_file import DEFAULT_SUBNET
from .utils import with_scope

__all__ = ['ModelSpec', 'read_model_config', 'model_kind']

SEARCH, SUBNET, PLAIN = 'DMCP', 'DMCPSubnet', 'plain'


def model_kind(model_cfg: Any) -> str:
    """``'DMCP'``, ``'DMCPSubnet'`` or ``'plain'`` for a ``model`` config.

    Args:
        model_cfg (dict): The ``model`` field of a config; its ``type`` may be
            scoped (``'mmrazor.DMCP'``) or a class.

    Returns:
        str: The kind.
    """
    t = model_cfg.get('type', '')
    name = t.split('.')[-1] if isinstance(t, str) else t.__name__
    return name if name in (SEARCH, SUBNET) else PLAIN


@dataclass
class ModelSpec:
    """A config's model, taken apart.

    Args:
        kind (str): ``'DMCP'``, ``'DMCPSubnet'`` or ``'plain'``.
        architecture (dict): The classifier's config (the supernet of a
            search, the unpruned network of a subnet config), with
            ``data_preprocessor`` and ``_scope_`` set.
        input_shape (tuple, optional): ``model.input_shape`` of a DMCP or
            subnet config, None when unset or for a plain config.
        units (dict, optional): The unit overrides (``mutator.units`` of a
            search, ``units`` of a subnet config). None when unset.
        subnet (str, optional): The yaml a subnet config names (the default
            yaml when unset); None for the other kinds.
    """

    kind: str
    architecture: dict
    input_shape: Optional[Tuple[int, ...]] = None
    units: Optional[dict] = None
    subnet: Optional[str] = None


def read_model_config(cfg: Any) -> ModelSpec:
    """Take the ``model`` of an mmengine config apart.

    Args:
        cfg (Config): The config.

    Returns:
        ModelSpec: What the config's model is.
    """
    model_cfg = copy.deepcopy(cfg.model)
    kind = model_kind(model_cfg)
    spec = ModelSpec(kind=kind, architecture={})
    if kind == PLAIN:
        arch = model_cfg
    else:
        arch = model_cfg['architecture']
        shape = model_cfg.get('input_shape')
        spec.input_shape = None if shape is None else tuple(shape)
    if kind == SEARCH:
        spec.units = (model_cfg.get('mutator') or {}).get('units')
    elif kind == SUBNET:
        spec.units = model_cfg.get('units')
        spec.subnet = model_cfg.get('subnet') or DEFAULT_SUBNET
    arch = copy.deepcopy(dict(arch))
    if cfg.get('data_preprocessor') is not None:
        arch.setdefault('data_preprocessor', cfg.data_preprocessor)
    scope = cfg.get('default_scope', 'mmpretrain')
    spec.architecture = with_scope(arch, scope)
    return spec
