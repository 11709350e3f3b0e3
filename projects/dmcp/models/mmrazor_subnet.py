"""mmrazor 1.0.0's published DMCP subnets, read as our subnet yaml.

mmrazor publishes a searched subnet in two formats (see
``tests/data/mmrazor/README.md``):

* a mutator config (``DMCP_R50_2G.json``): ``channel_unit_cfg.units`` maps
  unit names such as ``"backbone.layer1.0.conv1_(0, 64)_64"`` to
  ``{'init_args': ..., 'choice': 22}``, the retained channels;
  ``parse_cfg`` names the ``ChannelAnalyzer`` that found the units;
* an index file (``DMCP_R50_2G.yaml``): ``{0: 52, 1: 22, ...}``, unit index
  -> retained channels, the index counting the units in the order mmrazor's
  channel analyzer lists them (``DMCPChannelMutator.set_choices`` takes
  ``str(index)`` over its ``units``).

Neither names layers, so the units are found the way mmrazor finds them: its
own ``ChannelAnalyzer`` (``BackwardTracer``) runs on a copy of the
architecture (:func:`mmrazor_units`); every convolution or linear layer whose
output channels form a unit takes the unit's value (coupled layers and
depthwise followers alike). Units the file does not list keep all their
channels, and a choice above a unit's width keeps the whole unit, as
mmrazor's channel mask does (with a warning). Only mmrazor's channel analysis
is used here, never its DMCP algorithm.
"""

import copy
import difflib
import json
import logging
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml
from mmengine.logging import print_log
from torch import nn

from ..utils import is_int, with_scope

__all__ = [
    'MUTATOR_FORMAT',
    'INDEX_FORMAT',
    'RazorUnit',
    'mmrazor_subnet_kind',
    'read_mmrazor_file',
    'mmrazor_units',
    'mmrazor_choices',
    'mmrazor_to_subnet_doc',
    'resolve_mmrazor_subnet',
]

#: A ``DMCPChannelMutator`` config with ``channel_unit_cfg.units``.
MUTATOR_FORMAT = 'mmrazor mutator config'
#: Unit index -> retained channels.
INDEX_FORMAT = 'mmrazor unit-index map'
#: ``parse_cfg`` of mmrazor's DMCP configs (1x3x224x224, BackwardTracer).
DEFAULT_PARSE_CFG = dict(
    type='ChannelAnalyzer',
    demo_input=(1, 3, 224, 224),
    tracer_type='BackwardTracer',
)


@dataclass
class RazorUnit:
    """A prunable unit as mmrazor's channel analyzer finds it.

    Args:
        name (str): mmrazor's name, ``<layer>_(start, end)_<channels>``.
        num_channels (int): Its channels in the unpruned architecture.
        layers (list[tuple[str, int]]): Convolution/linear layers whose
            output channels belong to it, with their channel multiplier
            (a depthwise layer's ``out // in``, else 1).
        mutable (bool): Whether mmrazor can prune it. Defaults to True.
    """

    name: str
    num_channels: int
    layers: List[Tuple[str, int]]
    mutable: bool = True


def mmrazor_subnet_kind(doc: Any) -> Optional[str]:
    """Which mmrazor format a parsed file has, if any.

    Args:
        doc: The parsed file.

    Returns:
        str | None: :data:`MUTATOR_FORMAT`, :data:`INDEX_FORMAT` or None
        (not an mmrazor subnet: our yaml, or something else).
    """
    if not isinstance(doc, dict) or not doc:
        return None
    unit_cfg = doc.get('channel_unit_cfg')
    if isinstance(unit_cfg, dict) and 'units' in unit_cfg:
        return MUTATOR_FORMAT
    if all(is_int(k) for k in doc):
        return INDEX_FORMAT
    return None


def read_mmrazor_file(path: Union[str, os.PathLike]) -> Optional[tuple]:
    """Parse a file and say whether it is an mmrazor subnet.

    Args:
        path (str | PathLike): The file.

    Returns:
        tuple | None: ``(kind, doc)``, or None for anything that is not an
        mmrazor subnet (including unreadable files: the subnet yaml reader
        reports those).
    """
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read(1 << 20)
        try:
            doc = json.loads(text)
        except ValueError:
            doc = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    kind = mmrazor_subnet_kind(doc)
    return None if kind is None else (kind, doc)


def _layer_multiplier(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return module.out_channels // module.in_channels
    return 1


def mmrazor_units(
    model: nn.Module, parse_cfg: Optional[dict] = None
) -> List[RazorUnit]:
    """Run mmrazor's channel analyzer on a copy of ``model`` and list its
    units in mmrazor's order (its ``mutator.units``).

    Args:
        model (nn.Module): The unpruned classifier (plain layers).
        parse_cfg (dict, optional): mmrazor's ``parse_cfg``. Defaults to
            None (:data:`DEFAULT_PARSE_CFG`).

    Returns:
        list[RazorUnit]: The units.
    """
    from mmrazor.models.mutables import DMCPChannelUnit as RazorChannelUnit
    from mmrazor.models.mutators import ChannelMutator

    parse_cfg = with_scope(parse_cfg or DEFAULT_PARSE_CFG, 'mmrazor')
    parse_cfg.pop('from_cfg', None)
    if isinstance(parse_cfg.get('demo_input'), list):
        parse_cfg['demo_input'] = tuple(parse_cfg['demo_input'])
    copied = copy.deepcopy(model).cpu()
    modules = dict(model.named_modules())
    # mmrazor's own unit class, passed as a class: the registry's
    # ``DMCPChannelUnit`` is ours
    mutator = ChannelMutator(
        channel_unit_cfg=RazorChannelUnit, parse_cfg=parse_cfg
    )
    mutator.prepare_from_supernet(copied)
    units = []
    for unit in mutator.units:
        layers = []
        for channel in unit.output_related:
            module = modules.get(channel.name)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                layers.append((channel.name, _layer_multiplier(module)))
        units.append(
            RazorUnit(unit.name, unit.num_channels, layers, unit.is_mutable)
        )
    return units


def _check_choice(value: Any, unit: RazorUnit, where: str, key: str) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(
            f'{where}: {key}: {value!r} is not a positive number of channels'
        )
    if value > unit.num_channels:
        print_log(
            f'{where}: {key}: {value} channels asked of a unit of '
            f'{unit.num_channels} ({unit.name}); keeping all '
            f'{unit.num_channels}, as mmrazor does',
            logger='current',
            level=logging.WARNING,
        )
        return unit.num_channels
    return value


def _mutator_choices(
    doc: dict, units: Sequence[RazorUnit], where: str
) -> Dict[str, int]:
    listed = doc['channel_unit_cfg']['units']
    if not isinstance(listed, dict) or not listed:
        raise ValueError(
            f'{where}: channel_unit_cfg.units: expected a mapping from '
            'mmrazor unit names to {choice: ...}'
        )
    by_name = {u.name: u for u in units if u.mutable}
    unknown = [k for k in listed if k not in by_name]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(by_name), n=1)
        hint = f'; did you mean {close[0]}?' if close else ''
        raise ValueError(
            f'{where}: written for another architecture: '
            f'{len(unknown)} of its {len(listed)} units are not units of '
            f'this one (first: channel_unit_cfg.units."{unknown[0]}")' + hint
        )
    choices = {}
    for name, cfg in listed.items():
        key = f'channel_unit_cfg.units."{name}"'
        if not isinstance(cfg, dict) or 'choice' not in cfg:
            raise ValueError(f'{where}: {key}: has no choice')
        choices[name] = _check_choice(cfg['choice'], by_name[name], where, key)
    return choices


def _index_choices(
    doc: dict, units: Sequence[RazorUnit], where: str
) -> Dict[str, int]:
    expected = list(range(len(units)))
    if sorted(doc) != expected:
        raise ValueError(
            f'{where}: written for another architecture: it has units '
            f'{min(doc)}..{max(doc)} ({len(doc)}), mmrazor finds '
            f'{len(units)} units (0..{len(units) - 1}) in this one'
        )
    choices = {}
    for i in expected:
        choice = _check_choice(doc[i], units[i], where, str(i))
        if not units[i].mutable and choice != units[i].num_channels:
            raise ValueError(
                f'{where}: {i}: {choice} channels of {units[i].name}, a '
                'unit mmrazor does not prune'
            )
        choices[units[i].name] = choice
    return choices


def mmrazor_choices(
    kind: str, doc: dict, units: Sequence[RazorUnit], where: str
) -> Dict[str, int]:
    """Unit name -> retained channels of every unit the file lists.

    Args:
        kind (str): :data:`MUTATOR_FORMAT` or :data:`INDEX_FORMAT`.
        doc (dict): The parsed file.
        units (Sequence[RazorUnit]): :func:`mmrazor_units` of the
            architecture.
        where (str): The file, for errors.

    Returns:
        dict[str, int]: Choices, clamped to the units' widths.
    """
    if kind == MUTATOR_FORMAT:
        return _mutator_choices(doc, units, where)
    return _index_choices(doc, units, where)


def mmrazor_to_subnet_doc(
    kind: str,
    doc: dict,
    where: str,
    architecture: nn.Module,
    units: Optional[Sequence[RazorUnit]] = None,
) -> Dict[str, Any]:
    """Our subnet yaml's content for an mmrazor subnet file.

    Args:
        kind (str): :data:`MUTATOR_FORMAT` or :data:`INDEX_FORMAT`.
        doc (dict): The parsed file.
        where (str): The file, for errors.
        architecture (nn.Module): The unpruned classifier it prunes.
        units (Sequence[RazorUnit], optional): :func:`mmrazor_units` of the
            architecture, if already known. Defaults to None (analysed).

    Returns:
        dict: ``{'meta': ..., 'channels': ...}``, as a subnet yaml holds.
    """
    parse_cfg = None
    if kind == MUTATOR_FORMAT:
        parse_cfg = doc.get('parse_cfg') or None
        if parse_cfg is not None and 'Analyzer' not in str(
            parse_cfg.get('type')
        ):
            raise ValueError(
                f'{where}: parse_cfg.type: {parse_cfg.get("type")!r}; only '
                "mmrazor's ChannelAnalyzer units can be read"
            )
    if units is None:
        units = mmrazor_units(architecture, parse_cfg)
    choices = mmrazor_choices(kind, doc, units, where)
    channels = {}
    for unit in units:
        if not unit.mutable:
            continue
        width = choices.get(unit.name, unit.num_channels)
        for layer, mult in unit.layers:
            channels[layer] = width * mult
    demo = (parse_cfg or DEFAULT_PARSE_CFG)['demo_input']
    meta = dict(
        algorithm='DMCP',
        source=f'{kind}: {osp.basename(where)}',
        input_shape=[int(s) for s in demo[1:]],
    )
    return {'meta': meta, 'channels': channels}


def resolve_mmrazor_subnet(
    doc: Any, where: str, architecture: Optional[nn.Module]
) -> Any:
    """``doc`` itself, or, for an mmrazor subnet, our yaml's content.

    Args:
        doc: A parsed subnet file.
        where (str): The file, for errors.
        architecture (nn.Module, optional): The unpruned classifier.

    Returns:
        The document to check as a subnet yaml.

    Raises:
        ValueError: An mmrazor subnet and no architecture to resolve it on.
    """
    kind = mmrazor_subnet_kind(doc)
    if kind is None:
        return doc
    if architecture is None:
        raise ValueError(
            f'{where}: an {kind}; its units are resolved on the '
            'architecture: give it as model.subnet of a subnet config, or '
            'convert it with tools/convert_mmrazor_subnet.py SRC OUT.yaml '
            '--config CONFIG'
        )
    return mmrazor_to_subnet_doc(kind, doc, where, architecture)
