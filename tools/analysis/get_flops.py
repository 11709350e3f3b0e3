"""Count the FLOPs and parameters of the model a config builds.

Usage::

    python tools/analysis/get_flops.py CONFIG [--subnet YAML] [--shape H [W]]
        [--json] [--cfg-options KEY=VALUE ...]

FLOPs follow the project's convention: multiply-accumulates of the
convolution and linear layers for one input (the full ResNet-50 at 224x224 is
4.09G). What is counted:

* a DMCP search config (``model.type='mmrazor.DMCP'``): the full network,
  i.e. ``model.architecture`` with plain layers; with ``--subnet`` the
  architecture pruned to that yaml;
* a subnet config (``model.type='mmrazor.DMCPSubnet'``): the pruned model of
  ``model.subnet`` (or of ``--subnet``);
* any other classifier config: its model, pruned if ``--subnet`` is given.

The input is ``--shape``, else the config's ``model.input_shape``, else the
subnet yaml's ``meta.input_shape``, else 224x224. ``--json`` prints one JSON
object ``{"flops": ..., "params": ..., "input_shape": [...]}`` on the last
line.
"""

import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import argparse
import json
from typing import List, Optional

from mmengine.config import Config, DictAction

from projects.dmcp import cli
from projects.dmcp.model_config import read_model_config
from projects.dmcp.models import (
    build_subnet,
    count_flops,
    count_params,
    format_flops,
    load_subnet,
    tensor_forward,
)
from projects.dmcp.models.mmrazor_subnet import read_mmrazor_file
from projects.dmcp.registry import MODELS


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = cli.parser(
        description='Count FLOPs (conv + linear MACs) and parameters'
    )
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--subnet',
        help='subnet yaml to prune the architecture to (replaces '
        'model.subnet of a subnet config)',
    )
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='input height and width (one value: a square)',
    )
    parser.add_argument(
        '--json',
        action='store_true',
        help='print a JSON object with flops, params and input_shape on '
        'the last line',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs',
    )
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error('--shape takes H and W, or one value for a square')
    return args


def count(cfg: Config, subnet: Optional[str] = None, shape=None) -> dict:
    """Build the model a config describes and count it.

    Args:
        cfg (Config): The config.
        subnet (str, optional): A subnet yaml (or an mmrazor subnet file)
            to prune to. Defaults to None.
        shape (list[int], optional): ``[H, W]`` or ``[S]``. Defaults to
            None.

    Returns:
        dict: ``flops``, ``params``, ``input_shape`` and ``subnet`` (the
        yaml counted, or None).
    """

    spec = read_model_config(cfg)
    subnet = subnet or spec.subnet
    cfg_shape, units, arch = spec.input_shape, spec.units, spec.architecture

    meta_shape = None
    if subnet is not None and read_mmrazor_file(subnet) is None:
        # (mmrazor's subnet files are for 224x224, the default)
        meta_shape = load_subnet(subnet)['meta'].get('input_shape')
    base = cfg_shape or meta_shape or (3, 224, 224)
    if shape:
        h, w = (shape[0], shape[0]) if len(shape) == 1 else shape
        input_shape = (base[0], h, w)
    else:
        input_shape = tuple(base)

    model = MODELS.build(arch)
    if subnet is not None:
        model = build_subnet(model, subnet, input_shape, units)
    return dict(
        flops=count_flops(model, input_shape, tensor_forward),
        params=count_params(model),
        input_shape=list(input_shape),
        subnet=subnet,
    )


@cli.entry
def main(argv: Optional[List[str]] = None) -> dict:
    """Count and print.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        dict: What :func:`count` returned.
    """

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    result = count(cfg, args.subnet, args.shape)
    what = (
        f'pruned to {result["subnet"]}' if result['subnet'] else 'full network'
    )
    line = '=' * 60
    print(
        f'{line}\n'
        f'Config: {args.config} ({what})\n'
        f'Input shape: {tuple(result["input_shape"])}\n'
        f'FLOPs: {format_flops(result["flops"])} '
        f'({result["flops"]} MACs of convolution and linear layers)\n'
        f'Params: {result["params"] / 1e6:.2f}M ({result["params"]})\n'
        f'{line}',
        flush=True,
    )
    if args.json:
        keys = ('flops', 'params', 'input_shape')
        print(json.dumps({k: result[k] for k in keys}), flush=True)
    return result


if __name__ == '__main__':
    main()
