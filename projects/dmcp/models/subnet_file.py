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
value. Files are written atomically (a temporary file, then a rename) by
:func:`dump_subnet`: the search's export (:mod:`.export`) writes
:data:`SUBNET_FILE`, the retraining (:mod:`.prune`) reads
:data:`DEFAULT_SUBNET` unless ``model.subnet`` names another file.

This module holds the whole contract: the schema and its checks
(:func:`check_subnet_doc`), reading (:func:`load_subnet`, which also reads
mmrazor's published formats through :mod:`.mmrazor_subnet`), writing, and the
check of a file's widths against the units of an architecture
(:func:`check_channels`). Every error names the file and the key.
"""

import difflib
import os
import os.path as osp
from typing import Any, Dict, Optional, Sequence, Union

import yaml
from torch import nn

from ..fileio import atomic_write_text
from ..utils import is_int, is_shape
from .mmrazor_subnet import resolve_mmrazor_subnet
from .tracer import ChannelTrace, UnitSpec

__all__ = [
    'DEFAULT_SUBNET',
    'SUBNET_FILE',
    'check_channels',
    'check_subnet_doc',
    'dump_subnet',
    'load_subnet',
    'read_subnet',
]

#: The name of the file the search writes into its work dir.
SUBNET_FILE = 'DMCP_SUBNET_IMAGENET.yaml'
#: Where the subnet configs look by default (``model.subnet``).
DEFAULT_SUBNET = 'configs/pruning/dmcp/' + SUBNET_FILE
#: Larger files are refused unread (a subnet yaml is a few kB).
MAX_SUBNET_BYTES = 8 * 1024 * 1024


# ------------------------------------------------------------------ writing
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
    if shape is not None and not is_shape(shape):
        raise ValueError(
            f'{where}: meta.input_shape: {shape!r} is not [C, H, W] of '
            'positive integers'
        )
    for key in ('flops', 'target_flops'):
        value = meta.get(key)
        if value is not None and not (is_int(value) and value >= 0):
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
        if not is_int(value):
            raise ValueError(
                f'{where}: channels.{key}: {value!r} is not an integer'
            )
        out[str(key)] = int(value)
    return {'meta': dict(meta), 'channels': out}


def read_subnet(
    subnet: Union[str, os.PathLike, dict], model: Optional[nn.Module] = None
) -> tuple:
    """Read a subnet given as a path (:func:`load_subnet`) or as its content
    (:func:`check_subnet_doc`).

    Args:
        subnet (str | PathLike | dict): The yaml, or its content.
        model (nn.Module, optional): The unpruned classifier, to resolve an
            mmrazor subnet on. Defaults to None.

    Returns:
        tuple[str, dict]: What to name in errors (the file, or
        ``'model.subnet'``) and the checked document.
    """
    if isinstance(subnet, dict):
        doc = resolve_mmrazor_subnet(dict(subnet), 'model.subnet', model)
        return 'model.subnet', check_subnet_doc(doc)
    if not isinstance(subnet, (str, os.PathLike)):
        raise TypeError(
            'model.subnet must be the path of a subnet yaml, got '
            f'{type(subnet).__name__}'
        )
    return os.fspath(subnet), load_subnet(subnet, model)


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
