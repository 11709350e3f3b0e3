"""Pruning surgery: a subnet yaml -> a physically pruned classifier.

Retraining reads a subnet file (:mod:`.subnet_file`) and builds the searched
structure with :func:`DMCPSubnet` (its registry name; configs say
``type='mmrazor.DMCPSubnet'``): the plain classifier of the architecture
config is traced to find its units (the same :func:`~.tracer.find_units` the
search used), the file is checked against them
(:func:`~.subnet_file.check_channels`), :func:`plan_subnet` works out the new
layer shapes and :func:`prune_model` replaces every affected convolution,
batch norm and linear layer by a new plain one of the retained width.
Nothing here imports the search.
"""

import copy
import logging
import os
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from mmengine.logging import print_log
from torch import nn

from ..registry import MODELS
from ..utils import check_input_shape, tensor_forward, with_scope
from .flops import FlopsTable, count_params, format_flops
from .layers import Conv2dAdaptivePadding, DynamicConv2dAdaptivePadding
from .subnet_checkpoint import SubnetCheckpointCheck
from .subnet_file import DEFAULT_SUBNET, check_channels, read_subnet
from .tracer import ChannelTrace, UnitSpec, find_units, trace_channels

__all__ = [
    'DMCPSubnet',
    'SubnetPlan',
    'build_subnet',
    'layer_shapes',
    'plan_subnet',
    'prune_model',
    'resize_layers',
]


@dataclass
class SubnetPlan:
    """The new shapes of a pruned model.

    Args:
        where (str): The subnet file (or ``'model.subnet'``).
        meta (dict): Its ``meta``.
        channels (dict[str, int]): Its ``channels``.
        input_shape (tuple): ``(C, H, W)`` of the trace and the FLOPs.
        trace (ChannelTrace): The architecture's trace.
        specs (list[UnitSpec]): Its units.
        choices (dict[str, int]): Unit name -> retained channels.
        layers (dict[str, tuple]): Convolution/linear layer name -> new
            ``(in, out)`` channels, for every layer whose shape changes.
        norms (dict[str, int]): Batch norm name -> new number of features.
        flops (int): FLOPs of the pruned model at ``input_shape``.
        full_flops (int): FLOPs of the architecture at ``input_shape``.
    """

    where: str
    meta: Dict[str, Any]
    channels: Dict[str, int]
    input_shape: tuple
    trace: ChannelTrace
    specs: List[UnitSpec]
    choices: Dict[str, int]
    layers: Dict[str, tuple]
    norms: Dict[str, int]
    flops: int
    full_flops: int


def layer_shapes(
    trace: ChannelTrace, specs: Sequence[UnitSpec], choices: Dict[str, int]
) -> Tuple[Dict[str, Tuple[int, int]], Dict[str, int]]:
    """The new shapes of every layer a subnet changes.

    Args:
        trace (ChannelTrace): The architecture's trace.
        specs (Sequence[UnitSpec]): Its units.
        choices (dict[str, int]): Unit name -> retained channels (checked
            by the caller).

    Returns:
        tuple[dict[str, tuple[int, int]], dict[str, int]]: Convolution and
        linear layer name -> new ``(in, out)`` channels, for every layer
        whose shape changes; batch norm name -> new number of features.
    """
    width = {
        trace.find(trace.layer(s.producers[0]).out_node): choices[s.name]
        for s in specs
    }
    layers = {}
    for rec in trace.layers:
        cin = width.get(trace.find(rec.in_node), rec.in_channels)
        if rec.depthwise:
            cout = cin * (rec.out_channels // rec.in_channels)
        else:
            cout = width.get(trace.find(rec.out_node), rec.out_channels)
        if (cin, cout) != (rec.in_channels, rec.out_channels):
            layers[rec.name] = (cin, cout)
    norms = {
        name: width[trace.find(node)]
        for name, node in trace.norms.items()
        if trace.find(node) in width
    }
    return layers, norms


def plan_subnet(
    model: nn.Module,
    subnet: Union[str, os.PathLike, dict],
    input_shape: Optional[Sequence[int]] = None,
    forward: Optional[Callable] = None,
    units: Optional[List[List[str]]] = None,
) -> SubnetPlan:
    """Read and check a subnet against a plain model and work out the new
    layer shapes (the model is only run once, not changed).

    Args:
        model (nn.Module): The unpruned architecture (plain layers).
        subnet (str | PathLike | dict): The yaml, or its content.
        input_shape (Sequence[int], optional): ``(C, H, W)`` to trace at and
            count FLOPs for. Defaults to None: the file's
            ``meta.input_shape``, else ``(3, 224, 224)``.
        forward (callable, optional): ``forward(model, x)``. Defaults to
            None (``model(x)``).
        units (list[list[str]], optional): Explicit units, as the search's
            ``mutator.units``. Defaults to None (traced).

    Returns:
        SubnetPlan: What to change.
    """
    where, doc = read_subnet(subnet, model)
    if input_shape is None:
        input_shape = doc['meta'].get('input_shape') or (3, 224, 224)
    input_shape = check_input_shape(input_shape)
    trace = trace_channels(model, input_shape, forward)
    specs = find_units(trace, units)
    choices = check_channels(doc['channels'], trace, specs, where, doc['meta'])
    layers, norms = layer_shapes(trace, specs, choices)
    table = FlopsTable(trace, specs)
    flops = table.count([choices[s.name] for s in specs])
    full = table.count([s.num_channels for s in specs])
    return SubnetPlan(
        where=where,
        meta=doc['meta'],
        channels=doc['channels'],
        input_shape=input_shape,
        trace=trace,
        specs=specs,
        choices=choices,
        layers=layers,
        norms=norms,
        flops=int(round(flops)),
        full_flops=int(round(full)),
    )


def _device_dtype(module: nn.Module) -> dict:
    t = next(iter(module.parameters()), None)
    if t is None:
        t = next(iter(module.buffers()), None)
    return {} if t is None else dict(device=t.device, dtype=t.dtype)


def _resized(old: nn.Module, cin: int, cout: int) -> nn.Module:
    """A new plain layer like ``old`` with ``cin`` -> ``cout`` channels."""
    kw = _device_dtype(old)
    if isinstance(old, (Conv2dAdaptivePadding, DynamicConv2dAdaptivePadding)):
        depthwise = old.groups > 1 and old.groups == old.in_channels
        new = Conv2dAdaptivePadding(
            cin,
            cout,
            old.kernel_size,
            stride=old.stride,
            dilation=old.dilation,
            groups=cin if depthwise else old.groups,
            bias=old.bias is not None,
        ).to(**kw)
    elif isinstance(old, nn.Conv2d):
        depthwise = old.groups > 1 and old.groups == old.in_channels
        new = nn.Conv2d(
            cin,
            cout,
            old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            dilation=old.dilation,
            groups=cin if depthwise else old.groups,
            bias=old.bias is not None,
            padding_mode=old.padding_mode,
            **kw,
        )
    elif isinstance(old, nn.Linear):
        new = nn.Linear(cin, cout, bias=old.bias is not None, **kw)
    elif isinstance(old, nn.BatchNorm2d):
        new = nn.BatchNorm2d(
            cout,
            eps=old.eps,
            momentum=old.momentum,
            affine=old.affine,
            track_running_stats=old.track_running_stats,
            **kw,
        )
    else:
        raise TypeError(
            f'cannot resize a {type(old).__name__}: only Conv2d, '
            'BatchNorm2d and Linear layers are pruned'
        )
    return new.train(old.training)


def prune_model(model: nn.Module, plan: SubnetPlan) -> nn.Module:
    """Replace, in place, every layer whose shape the plan changes by a new
    plain ``nn.Conv2d``/``nn.BatchNorm2d``/``nn.Linear`` of the retained
    widths (freshly initialised by torch; a depthwise convolution gets
    ``groups`` = its new input channels).

    Args:
        model (nn.Module): The model :func:`plan_subnet` traced.
        plan (SubnetPlan): The new shapes.

    Returns:
        nn.Module: ``model``.
    """
    return resize_layers(model, plan.layers, plan.norms)


def resize_layers(
    model: nn.Module,
    layers: Dict[str, Tuple[int, int]],
    norms: Dict[str, int],
) -> nn.Module:
    """Replace, in place, every named layer by a new plain one of the given
    shape (what :func:`prune_model` does with a plan; :func:`layer_shapes`
    gives the shapes of any subnet).

    Args:
        model (nn.Module): The model (plain or dynamic layers).
        layers (dict[str, tuple[int, int]]): Convolution or linear layer
            name -> new ``(in, out)`` channels.
        norms (dict[str, int]): Batch norm name -> new number of features.

    Returns:
        nn.Module: ``model``.
    """
    # every (parent, attribute) holding a module, so that a layer reachable
    # under two names is replaced everywhere
    slots: Dict[int, list] = {}
    for parent in model.modules():
        for attr, child in parent._modules.items():
            if child is not None:
                slots.setdefault(id(child), []).append((parent, attr))
    modules = dict(model.named_modules())
    changes = [(n, cin, cout) for n, (cin, cout) in layers.items()]
    changes += [(n, c, c) for n, c in norms.items()]
    for name, cin, cout in changes:
        old = modules[name]
        new = _resized(old, cin, cout)
        for parent, attr in slots[id(old)]:
            setattr(parent, attr, new)
    modules = dict(model.named_modules())
    for name, cin, cout in changes:
        m = modules[name]
        shape = (
            (m.num_features, m.num_features)
            if isinstance(m, nn.BatchNorm2d)
            else (
                getattr(m, 'in_channels', getattr(m, 'in_features', 0)),
                getattr(m, 'out_channels', getattr(m, 'out_features', 0)),
            )
        )
        if shape != (cin, cout):  # pragma: no cover  (a bug, not bad input)
            raise RuntimeError(f'{name} was not resized to {(cin, cout)}')
    return model


@MODELS.register_module()
def DMCPSubnet(
    architecture: Union[dict, nn.Module],
    subnet: Union[str, os.PathLike, dict] = DEFAULT_SUBNET,
    input_shape: Optional[Sequence[int]] = None,
    units: Optional[List[List[str]]] = None,
    data_preprocessor: Optional[Union[dict, nn.Module]] = None,
) -> nn.Module:
    """Build the physically pruned classifier of a searched subnet
    (registered as ``DMCPSubnet``; configs say ``type='mmrazor.DMCPSubnet'``).

    The architecture (the supernet's ``model.architecture``, an mmpretrain
    classifier config) is built as usual, traced, the subnet file is checked
    against its units, and every convolution, batch norm and linear layer
    whose shape changes is replaced by a new plain torch layer of the
    retained widths. What comes back is the mmpretrain classifier itself,
    with nothing of DMCP left in it: its checkpoints have mmpretrain's keys
    and ``tools/test.py`` evaluates them with the same config. Like any model
    the runner builds it is not yet initialised by its ``init_cfg``: the
    runner calls ``init_weights()`` before training (the paper trains the
    pruned network from scratch).

    Args:
        architecture (dict | nn.Module): The classifier config (or a plain
            classifier, pruned in place).
        subnet (str | PathLike | dict): The subnet yaml (``model.subnet``),
            or its content. Defaults to
            ``configs/pruning/dmcp/DMCP_SUBNET_IMAGENET.yaml``.
        input_shape (Sequence[int], optional): ``(C, H, W)`` to trace at and
            to report FLOPs for. Defaults to None (the file's
            ``meta.input_shape``, else ``(3, 224, 224)``).
        units (list[list[str]], optional): Explicit units, when the search
            used ``mutator.units``. Defaults to None.
        data_preprocessor (dict | nn.Module, optional): Handed to the
            classifier unless its config has one (the runner passes the
            config's top-level ``data_preprocessor`` here). Defaults to None.

    Returns:
        nn.Module: The pruned classifier.
    """
    if isinstance(architecture, nn.Module):
        model = architecture
    else:
        cfg = with_scope(copy.deepcopy(dict(architecture)), 'mmpretrain')
        if data_preprocessor is not None:
            cfg.setdefault('data_preprocessor', data_preprocessor)
        model = MODELS.build(cfg)
    plan = plan_subnet(model, subnet, input_shape, tensor_forward, units)
    full_params = count_params(model)
    prune_model(model, plan)
    shape = list(plan.input_shape)
    print_log(
        f'DMCP subnet {plan.where}: {format_flops(plan.flops)} FLOPs '
        f'({plan.flops} MACs) and {count_params(model)} parameters at input '
        f'{shape}; the full architecture has '
        f'{format_flops(plan.full_flops)} and {full_params}',
        logger='current',
    )
    meta_flops = plan.meta.get('flops')
    same_shape = list(plan.meta.get('input_shape') or []) == shape
    if meta_flops is not None and same_shape and meta_flops != plan.flops:
        print_log(
            f'{plan.where}: meta.flops says {meta_flops} MACs but its '
            f'channels give {plan.flops} at input {shape}: the file was '
            'edited by hand or comes from another architecture',
            logger='current',
            level=logging.WARNING,
        )
    return SubnetCheckpointCheck.attach(model, plan.where)


#: The old Python name of :func:`DMCPSubnet`.
build_subnet = DMCPSubnet
