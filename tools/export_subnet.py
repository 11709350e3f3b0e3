"""Export a retrained DMCP subnet: its weights and its subnet yaml.

Usage::

    python tools/export_subnet.py CONFIG CHECKPOINT OUT
        [--pickle-module] [--cfg-options KEY=VALUE ...]

``CONFIG`` is a subnet config (``model.type='mmrazor.DMCPSubnet'``, with the
same ``model.subnet`` as for training) and ``CHECKPOINT`` a checkpoint of its
training. By default ``OUT`` gets (atomically) a ``torch.save`` of plain
data that loads with ``torch.load(OUT, weights_only=True)``:

* ``state_dict``: the pruned classifier's weights (mmpretrain's keys);
* ``meta``: ``channels`` and ``subnet_meta`` (the subnet yaml),
  ``architecture`` (the unpruned classifier config), ``flops``, ``params``,
  ``input_shape`` and ``checkpoint`` (where the weights came from);

and ``OUT`` with the suffix ``.yaml`` gets the subnet yaml. The config with
``model.subnet=<that yaml>`` and ``load_from=OUT`` rebuilds the model.

``--pickle-module`` writes instead the pickled pruned mmpretrain
``ImageClassifier`` module (``model``) beside the same information: it
loads without this repository, but only with ``weights_only=False``, that
is, by running the pickle (trust the file)::

    model = torch.load(OUT, map_location='cpu', weights_only=False)['model']

The tool then checks that the pickle refers to no module of this repository
and prints the packages it does refer to.
"""

import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import argparse
import copy
import io
import pickletools
import zipfile
from typing import List, Optional, Set

import torch
from mmengine.config import Config, ConfigDict, DictAction

from projects.dmcp import cli
from projects.dmcp.fileio import atomic_write
from projects.dmcp.model_config import read_model_config
from projects.dmcp.models import (
    count_flops,
    count_params,
    dump_subnet,
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
        description='Export a retrained DMCP subnet as a file that loads '
        'with torch and mmpretrain alone'
    )
    parser.add_argument('config', help='subnet config file path')
    parser.add_argument('checkpoint', help='checkpoint of its training')
    parser.add_argument('out', help='output file (e.g. dmcp_subnet.pth)')
    parser.add_argument(
        '--pickle-module',
        action='store_true',
        help='save the pickled pruned model (loads without this repository, '
        'but only with weights_only=False) instead of its state dict',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs (e.g. '
        'model.subnet=work_dirs/search/DMCP_SUBNET_IMAGENET.yaml)',
    )
    return parser.parse_args(argv)


def _plain(obj):
    """ConfigDicts (and their lists/tuples) as plain Python objects."""
    if isinstance(obj, (dict, ConfigDict)):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def pickled_modules(data: bytes) -> Set[str]:
    """Modules whose globals a ``torch.save`` file refers to.

    Args:
        data (bytes): The file's content.

    Returns:
        set[str]: Module names (``mmpretrain.models.classifiers.image``...).
    """
    modules = set()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            if not name.endswith('.pkl'):
                continue
            strings: List[str] = []
            for op, arg, _ in pickletools.genops(zf.read(name)):
                if op.name == 'GLOBAL':
                    modules.add(str(arg).split(' ')[0])
                elif op.name == 'STACK_GLOBAL' and len(strings) >= 2:
                    modules.add(strings[-2])
                if isinstance(arg, str):
                    strings.append(arg)
    return modules


def build_exported_model(cfg: Config, checkpoint: str) -> tuple:
    """Build the config's pruned model and load the checkpoint strictly.

    Args:
        cfg (Config): A subnet config.
        checkpoint (str): The checkpoint.

    Returns:
        tuple: ``(model, info)``; ``info`` holds ``channels``, ``meta``
        (the subnet yaml's), ``architecture``, ``flops``, ``params``,
        ``input_shape`` and ``checkpoint``.
    """
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    spec = read_model_config(cfg)
    if spec.kind != 'DMCPSubnet':
        raise ValueError(
            f'{cfg.filename}: model.type is {cfg.model.get("type")!r}; '
            "export_subnet.py needs a subnet config (type='mmrazor."
            "DMCPSubnet')"
        )
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.subnet = spec.subnet
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(model_cfg)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    model.eval()
    architecture = None
    if read_mmrazor_file(model_cfg.subnet) is not None:  # resolved on it
        architecture = MODELS.build(
            dict(model_cfg.architecture, _scope_='mmpretrain')
        )
    subnet = load_subnet(model_cfg.subnet, architecture)
    input_shape = tuple(
        spec.input_shape or subnet['meta'].get('input_shape') or (3, 224, 224)
    )
    info = dict(
        channels=subnet['channels'],
        meta=subnet['meta'],
        architecture=_plain(model_cfg.architecture),
        flops=count_flops(model, input_shape, tensor_forward),
        params=count_params(model),
        input_shape=list(input_shape),
        checkpoint=osp.abspath(checkpoint),
    )
    return model, info


def export(cfg: Config, checkpoint: str, out: str) -> dict:
    """Write the weights (a state dict, loadable with
    ``weights_only=True``) to ``out`` and the subnet yaml beside it.

    Args:
        cfg (Config): A subnet config.
        checkpoint (str): The checkpoint.
        out (str): The output file.

    Returns:
        dict: What was saved besides the weights, and ``yaml``: the subnet
        yaml written.
    """

    model, info = build_exported_model(cfg, checkpoint)
    meta = dict(info, subnet_meta=info['meta'])
    del meta['meta']
    buf = io.BytesIO()
    torch.save(dict(state_dict=model.state_dict(), meta=meta), buf)
    yaml_path = osp.splitext(out)[0] + '.yaml'
    subnet_meta = dict(
        info['meta'], flops=info['flops'], input_shape=info['input_shape']
    )
    dump_subnet(yaml_path, info['channels'], subnet_meta)
    atomic_write(out, buf.getvalue())
    return dict(info, yaml=yaml_path)


def export_module(cfg: Config, checkpoint: str, out: str) -> dict:
    """Write the pickled pruned model to ``out`` (``--pickle-module``).

    Args:
        cfg (Config): A subnet config.
        checkpoint (str): The checkpoint.
        out (str): The output file.

    Returns:
        dict: What was saved, without the model, and ``requires``: the
        non-standard top-level packages the file refers to.
    """
    model, info = build_exported_model(cfg, checkpoint)
    model._load_state_dict_pre_hooks.clear()  # hooks of this repository
    buf = io.BytesIO()
    torch.save(dict(info, model=model), buf)
    modules = pickled_modules(buf.getvalue())
    ours = sorted(m for m in modules if m.split('.')[0] == 'projects')
    if ours:
        raise RuntimeError(
            f'the exported model refers to {ours}: it would not load '
            'without this repository'
        )
    atomic_write(out, buf.getvalue())
    stdlib = set(getattr(sys, 'stdlib_module_names', ())) | {'__builtin__'}
    packages = {m.split('.')[0] for m in modules} - stdlib
    return dict(info, requires=sorted(packages))


@cli.entry
def main(argv: Optional[List[str]] = None) -> dict:
    """Export and print a summary.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        dict: What :func:`export` (or :func:`export_module`) returned.
    """

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.pickle_module:
        info = export_module(cfg, args.checkpoint, args.out)
        how = (
            f'loads with {", ".join(info["requires"])} (torch.load(..., '
            "weights_only=False)['model']: trust the file)"
        )
    else:
        info = export(cfg, args.checkpoint, args.out)
        how = (
            f'subnet yaml {info["yaml"]}; the state dict loads with '
            'torch.load(..., weights_only=True)'
        )
    print(
        f'Exported {args.out}: {format_flops(info["flops"])} FLOPs at '
        f'{tuple(info["input_shape"])}, {info["params"]} parameters; {how}',
        flush=True,
    )
    return info


if __name__ == '__main__':
    main()
