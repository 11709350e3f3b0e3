"""The subnet yaml: the contract between the search and the retraining.

A subnet file is readable and editable by hand::

    meta:
      algorithm: DMCP
      sampling: expected          # or direct
      target_flops: 2200000000    # MACs
      flops: 2187000000           # this subnet, MACs, at input_shape
      input_shape: [3, 224, 224]
      supernet: configs/pruning/dmcp/dmcp_resnet50_supernet_8xb64_in1k.py
    channels:                     # retained output channels per layer
      backbone.conv1: 51
      backbone.layer1.0.conv1: 38
      ...

``channels`` lists every pruned convolution (and linear) layer by its module
name in the classifier; layers coupled by a residual addition carry the same
value. Files are written atomically (a temporary file, then a rename).

Retraining reads a file with :func:`load_subnet` (its format) and builds the
searched structure with :func:`build_subnet` (registered as ``DMCPSubnet`` in
mmrazor's ``MODELS``): the plain classifier of the architecture config is
traced to find its units (the same :func:`~.tracer.find_units` the search
used), the file is checked against them (:func:`check_channels`) and every
affected convolution, batch norm and linear layer is replaced by a new plain
one of the retained width. Every error names the file and the key.
"""

import copy
import difflib
import logging
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import yaml
from mmengine.logging import print_log
from torch import nn

from ..fileio import atomic_write_text
from ..registry import MODELS
from .algorithm import tensor_forward
from .flops import FlopsTable, format_flops
from .layers import Conv2dAdaptivePadding, DynamicConv2dAdaptivePadding
from .mmrazor_subnet import resolve_mmrazor_subnet
from .subnet_checkpoint import SubnetCheckpointCheck
from .tracer import ChannelTrace, UnitSpec, find_units, trace_channels

__all__ = [
    'dump_subnet',
    'atomic_write_text',
    'load_subnet',
    'check_subnet_doc',
    'check_channels',
    'SubnetPlan',
    'plan_subnet',
    'prune_model',
    'build_subnet',
    'DEFAULT_SUBNET',
]

#: Where the subnet configs look by default (``model.subnet``).
DEFAULT_SUBNET = 'configs/pruning/dmcp/DMCP_SUBNET_IMAGENET.yaml'
#: Larger files are refused unread (a subnet yaml is a few kB).
MAX_SUBNET_BYTES = 8 * 1024 * 1024


class _SubnetDumper(yaml.SafeDumper):
    """Writes lists inline (``input_shape: [3, 224, 224]``), mappings as
    blocks (one layer per line)."""


_SubnetDumper.add_representer(
    list,
    lambda dumper, data: dumper.represent_sequence(
        'tag:yaml.org,2002:seq', data, flow_style=True
    ),
)


def dump_subnet(
    path: str, channels: Dict[str, int], meta: Optional[Dict[str, Any]] = None
) -> None:
    """Write a subnet yaml atomically.

    Args:
        path (str): Destination file.
        channels (dict[str, int]): Layer name -> retained output channels.
        meta (dict, optional): The ``meta`` section. Defaults to None.
    """
    doc = {
        'meta': dict(meta or {}),
        'channels': {k: int(v) for k, v in channels.items()},
    }
    atomic_write_text(
        path, yaml.dump(doc, Dumper=_SubnetDumper, sort_keys=False)
    )


# ------------------------------------------------------------------ reading
def _hint_for_missing(path: str) -> str:
    what = (
        'the subnet configs read this path by default'
        if osp.normpath(path) == osp.normpath(DEFAULT_SUBNET)
        else 'no such subnet file'
    )
    return (
        f'{path}: {what}, and it does not exist; pass the yaml the search '
        'wrote with --cfg-options '
        'model.subnet=<work_dir>/DMCP_SUBNET_IMAGENET.yaml'
    )


def load_subnet(
    path: Union[str, os.PathLike], architecture: Optional[nn.Module] = None
) -> Dict[str, Any]:
    """Read a subnet yaml and check its format.

    The widths are checked against a model by :func:`check_channels`; this
    function checks what it can without one: a readable, non-empty text
    file holding a mapping with an optional ``meta`` mapping and a non-empty
    ``channels`` mapping from layer names to integers. mmrazor's published
    subnet files are read too (:mod:`.mmrazor_subnet`, detected by content),
    given the unpruned ``architecture`` they prune.

    Args:
        path (str | PathLike): The file.
        architecture (nn.Module, optional): The unpruned classifier, to
            resolve an mmrazor subnet on. Defaults to None.

    Returns:
        dict: ``{'meta': dict, 'channels': dict[str, int]}`` in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Anything else wrong, in one line naming the file (and the
            key, where there is one).
    """
    path = os.fspath(path)
    if not osp.exists(path):
        raise FileNotFoundError(_hint_for_missing(path))
    if osp.isdir(path):
        raise ValueError(f'{path}: is a directory, not a subnet yaml')
    size = osp.getsize(path)
    if size > MAX_SUBNET_BYTES:
        raise ValueError(
            f'{path}: {size} bytes is too large for a subnet yaml (is it a '
            'checkpoint?); pass the DMCP_SUBNET_IMAGENET.yaml of the search'
        )
    with open(path, 'rb') as f:
        data = f.read()
    try:
        if b'\x00' in data:
            raise UnicodeDecodeError('utf-8', data, 0, 1, 'NUL byte')
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise ValueError(
            f'{path}: binary file, not a subnet yaml (is it a checkpoint?); '
            'pass the DMCP_SUBNET_IMAGENET.yaml of the search'
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f' at line {mark.line + 1}' if mark is not None else ''
        problem = getattr(e, 'problem', None) or type(e).__name__
        raise ValueError(
            f'{path}: not valid yaml ({problem}{where})'
        ) from None
    doc = resolve_mmrazor_subnet(doc, path, architecture)
    return check_subnet_doc(doc, path)


def check_subnet_doc(doc: Any, where: str = 'model.subnet') -> Dict[str, Any]:
    """Check the format of a parsed subnet document (see
    :func:`load_subnet`).

    Args:
        doc: The parsed yaml (or a dict given directly).
        where (str): What to name in errors (the file). Defaults to
            ``'model.subnet'``.

    Returns:
        dict: ``{'meta': dict, 'channels': dict[str, int]}``.
    """
    if doc is None:
        raise ValueError(
            f'{where}: empty file; a subnet yaml has meta: and channels: '
            '(as the search writes them)'
        )
    if not isinstance(doc, dict):
        raise ValueError(
            f'{where}: holds a {type(doc).__name__}, not a subnet yaml (a '
            'mapping with meta: and channels:)'
        )
    unknown = [str(k) for k in doc if k not in ('meta', 'channels')]
    if unknown:
        raise ValueError(
            f'{where}: {unknown[0]}: unknown top-level key; a subnet yaml '
            'has meta: and channels:'
        )
    if 'channels' not in doc:
        raise ValueError(
            f'{where}: channels: missing; a subnet yaml maps every pruned '
            'layer to its retained channels under channels:'
        )
    meta = doc.get('meta')
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ValueError(
            f'{where}: meta: expected a mapping, got {type(meta).__name__}'
        )
    shape = meta.get('input_shape')
    if shape is not None and not _is_shape(shape):
        raise ValueError(
            f'{where}: meta.input_shape: {shape!r} is not [C, H, W] of '
            'positive integers'
        )
    for key in ('flops', 'target_flops'):
        value = meta.get(key)
        if value is not None and not (_is_int(value) and value >= 0):
            raise ValueError(
                f'{where}: meta.{key}: {value!r} is not a number of MACs'
            )
    channels = doc['channels']
    if not isinstance(channels, dict) or not channels:
        got = (
            'an empty mapping'
            if isinstance(channels, dict) or channels is None
            else f'a {type(channels).__name__}'
        )
        raise ValueError(
            f'{where}: channels: expected a mapping from layer names to '
            f'retained channels, got {got}'
        )
    out = {}
    for key, value in channels.items():
        if not _is_int(value):
            raise ValueError(
                f'{where}: channels.{key}: {value!r} is not an integer'
            )
        out[str(key)] = int(value)
    return {'meta': dict(meta), 'channels': out}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(shape: Any) -> bool:
    return (
        isinstance(shape, (list, tuple))
        and len(shape) == 3
        and all(_is_int(s) and s > 0 for s in shape)
    )


# --------------------------------------------------------------- validation
def _pruned_layers(trace: ChannelTrace, specs: Sequence[UnitSpec]) -> dict:
    """Layer name -> (unit, channel multiplier) of every pruned layer."""
    out = {}
    for spec in specs:
        for name in spec.producers:
            out[name] = (spec, 1)
        for name in spec.followers:
            rec = trace.layer(name)
            out[name] = (spec, rec.out_channels // rec.in_channels)
    return out


def check_channels(
    channels: Dict[str, int],
    trace: ChannelTrace,
    specs: Sequence[UnitSpec],
    where: str = 'model.subnet',
    meta: Optional[dict] = None,
) -> Dict[str, int]:
    """Check a subnet's widths against the units of the architecture.

    Every pruned layer (the producers of every unit and their depthwise
    followers, as :meth:`DMCPChannelMutator.layer_channels` lists them) must
    be given, nothing else; each width must lie in ``[1, supernet width]``
    (times the channel multiplier for a depthwise layer) and layers of one
    unit (coupled by a residual addition) must agree. A file whose layers
    do not match the architecture's at all (more than one unknown or more
    than one missing layer) is reported as written for another supernet.

    Args:
        channels (dict[str, int]): Layer name -> retained channels.
        trace (ChannelTrace): The architecture's trace.
        specs (Sequence[UnitSpec]): Its units.
        where (str): The file, for errors. Defaults to ``'model.subnet'``.
        meta (dict, optional): The file's ``meta``, for hints. Defaults to
            None.

    Returns:
        dict[str, int]: Unit name -> retained channels.
    """
    meta = meta or {}
    expected = _pruned_layers(trace, specs)
    unknown = [k for k in channels if k not in expected]
    missing = [k for k in expected if k not in channels]
    supernet = meta.get('supernet')
    if len(unknown) > 1 or len(missing) > 1:
        parts = []
        if unknown:
            parts.append(
                f'{len(unknown)} of its {len(channels)} layers are not '
                f'pruned layers of this architecture (first: '
                f'channels.{unknown[0]})'
            )
        if missing:
            parts.append(
                f"{len(missing)} of the architecture's {len(expected)} "
                f'pruned layers are missing (first: channels.{missing[0]})'
            )
        origin = f' (meta.supernet: {supernet})' if supernet else ''
        raise ValueError(
            f'{where}: written for another supernet{origin}: '
            + ' and '.join(parts)
        )
    if unknown:
        key = unknown[0]
        names = {r.name for r in trace.layers}
        if key in names:
            rec = trace.layer(key)
            why = trace.fixed_reason(rec.out_node) or (
                'coupled with layers of other widths'
            )
            msg = f'not a pruned layer: its output channels are fixed ({why})'
        else:
            msg = 'unknown layer: no convolution or linear layer of that name'
        close = difflib.get_close_matches(key, missing, n=1)
        if close:
            msg += f'; did you mean {close[0]}?'
        raise ValueError(f'{where}: channels.{key}: {msg}')
    if missing:
        key = missing[0]
        spec, mult = expected[key]
        raise ValueError(
            f'{where}: channels.{key}: missing; every pruned layer needs a '
            f'width (this one has at most {spec.num_channels * mult})'
        )
    choices = {}
    for spec in specs:
        first = None
        for name in spec.producers + spec.followers:
            _, mult = expected[name]
            width = channels[name]
            low, high = mult, spec.num_channels * mult
            if not low <= width <= high:
                hint = ''
                if width > high and supernet:
                    hint = f' (meta.supernet: {supernet}; another supernet?)'
                raise ValueError(
                    f'{where}: channels.{name}: {width} is outside '
                    f'[{low}, {high}]{hint}'
                )
            if width % mult:
                raise ValueError(
                    f'{where}: channels.{name}: {width} is not a multiple '
                    f'of {mult}, the depthwise channel multiplier'
                )
            if first is None:
                first = name
            elif width // mult != channels[first] // expected[first][1]:
                raise ValueError(
                    f'{where}: channels.{name}: {width} differs from '
                    f'channels.{first}: {channels[first]}; the two layers '
                    'are coupled (a residual addition or a depthwise '
                    'convolution joins them) and must keep the same width'
                )
        choices[spec.name] = channels[first] // expected[first][1]
    return choices


# ----------------------------------------------------------------- pruning
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


def _read(
    subnet: Union[str, os.PathLike, dict], model: Optional[nn.Module] = None
) -> tuple:
    if isinstance(subnet, dict):
        doc = resolve_mmrazor_subnet(dict(subnet), 'model.subnet', model)
        return 'model.subnet', check_subnet_doc(doc)
    if not isinstance(subnet, (str, os.PathLike)):
        raise TypeError(
            'model.subnet must be the path of a subnet yaml, got '
            f'{type(subnet).__name__}'
        )
    return os.fspath(subnet), load_subnet(subnet, model)


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
    where, doc = _read(subnet, model)
    if input_shape is None:
        input_shape = doc['meta'].get('input_shape') or (3, 224, 224)
    if not _is_shape(input_shape):
        raise ValueError(
            'model.input_shape must be (C, H, W) with positive integers, '
            f'got {input_shape!r}'
        )
    input_shape = tuple(input_shape)
    trace = trace_channels(model, input_shape, forward)
    specs = find_units(trace, units)
    choices = check_channels(doc['channels'], trace, specs, where, doc['meta'])
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
    # every (parent, attribute) holding a module, so that a layer reachable
    # under two names is replaced everywhere
    slots: Dict[int, list] = {}
    for parent in model.modules():
        for attr, child in parent._modules.items():
            if child is not None:
                slots.setdefault(id(child), []).append((parent, attr))
    modules = dict(model.named_modules())
    changes = [(n, cin, cout) for n, (cin, cout) in plan.layers.items()]
    changes += [(n, c, c) for n, c in plan.norms.items()]
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


def _count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@MODELS.register_module(name='DMCPSubnet')
def build_subnet(
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
        cfg = copy.deepcopy(dict(architecture))
        if data_preprocessor is not None:
            cfg.setdefault('data_preprocessor', data_preprocessor)
        cfg.setdefault('_scope_', 'mmpretrain')
        model = MODELS.build(cfg)
    plan = plan_subnet(model, subnet, input_shape, tensor_forward, units)
    full_params = _count_params(model)
    prune_model(model, plan)
    shape = list(plan.input_shape)
    print_log(
        f'DMCP subnet {plan.where}: {format_flops(plan.flops)} FLOPs '
        f'({plan.flops} MACs) and {_count_params(model)} parameters at input '
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
