"""Convert an mmrazor DMCP subnet file into this repository's subnet yaml.

Usage::

    python tools/convert_mmrazor_subnet.py SRC OUT.yaml [--config CONFIG]
        [--cfg-options KEY=VALUE ...]

``SRC`` is one of mmrazor's published subnet files: a mutator config
(``DMCP_R50_2G.json``, units by name) or a unit-index map
(``DMCP_R50_2G.yaml``, units by their index in mmrazor's channel analysis).
The units are resolved by running mmrazor's own channel analyzer on the
architecture of ``CONFIG`` (a supernet or subnet config of this repository;
by default the reproduction config of mmrazor's published ResNet-50 or
MobileNetV2 subnet, chosen by the file's units). ``OUT.yaml`` gets
(atomically) every pruned layer with its retained channels, coupled layers
with their unit's value, and ``meta.flops`` at 224x224. Nothing is written
when the file does not fit the architecture.
"""

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import argparse
from typing import List, Optional

from mmengine.config import Config, DictAction

from projects.dmcp import cli
from projects.dmcp.model_config import read_model_config
from projects.dmcp.models import (
    dump_subnet,
    format_flops,
    plan_subnet,
    tensor_forward,
)
from projects.dmcp.models.mmrazor_subnet import (
    MUTATOR_FORMAT,
    read_mmrazor_file,
)
from projects.dmcp.registry import MODELS
from projects.dmcp.utils import REPO_ROOT

#: Reproduction configs of mmrazor's two published subnets.
CONFIGS = {
    'resnet50': 'configs/pruning/dmcp/dmcp_resnet50_subnet_mmrazor-2g_in1k.py',
    'mobilenet-v2': (
        'configs/pruning/dmcp/dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k.py'
    ),
}
#: Units of mmrazor's analysis of ResNet-50 and MobileNetV2 1.0x.
NUM_UNITS = {'resnet50': 37, 'mobilenet-v2': 25}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = cli.parser(
        description="Convert mmrazor's DMCP subnet file (json mutator "
        'config or unit-index yaml) into a DMCP_SUBNET yaml'
    )
    parser.add_argument('src', help="mmrazor's subnet file")
    parser.add_argument('out', help='the subnet yaml to write')
    parser.add_argument(
        '--config',
        help='config whose model.architecture the file prunes (default: '
        "the reproduction config of mmrazor's ResNet-50 or MobileNetV2 "
        'subnet, by the number and names of its units)',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs',
    )
    return parser.parse_args(argv)


def default_config(src: str, kind: str, doc: dict) -> str:
    """The reproduction config that fits an mmrazor subnet file.

    Args:
        src (str): The file, for errors.
        kind (str): Its mmrazor format.
        doc (dict): Its content.

    Returns:
        str: A config path under the repository.
    """

    if kind == MUTATOR_FORMAT:
        names = list(doc['channel_unit_cfg']['units'])
        net = (
            'mobilenet-v2' if any('.conv.' in n for n in names) else 'resnet50'
        )
        return osp.join(REPO_ROOT, CONFIGS[net])
    for net, count in NUM_UNITS.items():
        if len(doc) == count:
            return osp.join(REPO_ROOT, CONFIGS[net])
    raise ValueError(
        f'{src}: {len(doc)} units match neither ResNet-50 '
        f'({NUM_UNITS["resnet50"]}) nor MobileNetV2 '
        f'({NUM_UNITS["mobilenet-v2"]}); pass --config'
    )


def convert(src: str, out: str, cfg: Config) -> dict:
    """Resolve ``src`` on the config's architecture and write ``out``.

    Args:
        src (str): mmrazor's subnet file.
        out (str): The subnet yaml to write.
        cfg (Config): A config of this repository (its
            ``model.architecture``).

    Returns:
        dict: ``channels``, ``meta`` (as written) and ``flops``.
    """
    from mmengine.registry import init_default_scope

    spec = read_model_config(cfg)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    arch = MODELS.build(dict(spec.architecture, _scope_='mmpretrain'))
    plan = plan_subnet(arch, src, None, tensor_forward, spec.units)
    meta = dict(
        plan.meta,
        flops=plan.flops,
        input_shape=list(plan.input_shape),
        supernet=osp.relpath(cfg.filename, REPO_ROOT)
        if cfg.filename
        else None,
    )
    dump_subnet(out, plan.channels, meta)
    return dict(channels=plan.channels, meta=meta, flops=plan.flops)


@cli.entry
def main(argv: Optional[List[str]] = None) -> dict:
    """Convert and print a summary.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        dict: What :func:`convert` returned.
    """

    args = parse_args(argv)
    parsed = read_mmrazor_file(args.src) if osp.isfile(args.src) else None
    if parsed is None:
        cli.fail(
            osp.basename(__file__),
            f'{args.src}: not an mmrazor '
            'DMCP subnet file (a DMCPChannelMutator json or a unit-index '
            'yaml)',
        )
    config = args.config or default_config(args.src, *parsed)
    cfg = Config.fromfile(config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    info = convert(args.src, args.out, cfg)
    print(
        f'Wrote {args.out}: {len(info["channels"])} layers, '
        f'{format_flops(info["flops"])} FLOPs at 224x224 '
        f'(architecture of {config})',
        flush=True,
    )
    return info


if __name__ == '__main__':
    main()
