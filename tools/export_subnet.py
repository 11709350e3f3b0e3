"""Export a retrained DMCP subnet: its weights and its subnet yaml.

Usage::

    python tools/export_subnet.py CONFIG CHECKPOINT OUT
        [--format {torch,onnx}] [--opset N] [--pickle-module]
        [--cfg-options KEY=VALUE ...]

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

``--format onnx`` writes ``OUT`` as an ONNX model (opset ``--opset``, 17 by
default) of the pruned classifier's logits: input ``input`` ``(N, C, H, W)``
(normalised images: the data preprocessor is not part of it; its ``mean``
and ``std`` are in the model's metadata with the channels, FLOPs and
parameters), output ``logits``. Before writing, the tool runs the ONNX model
in onnxruntime on the CPU and torch on 8 random inputs and refuses a
difference of logits above 1e-4. The subnet yaml is written beside it as
for the torch format.
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
from projects.dmcp.deploy import MIN_OPSET, onnx_bytes, onnx_max_diff
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
        '--format',
        choices=['torch', 'onnx'],
        default='torch',
        help='torch: a torch.save file (default); onnx: an ONNX model '
        'checked with onnxruntime',
    )
    parser.add_argument(
        '--opset',
        type=int,
        default=MIN_OPSET,
        help=f'ONNX opset of --format onnx (default {MIN_OPSET}, at least '
        f'{MIN_OPSET})',
    )
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
    yaml_path = write_yaml(out, info)
    atomic_write(out, buf.getvalue())
    return dict(info, yaml=yaml_path)


def write_yaml(out: str, info: dict) -> str:
    """Write the exported model's subnet yaml beside ``out``.

    Args:
        out (str): The exported file.
        info (dict): From :func:`build_exported_model`.

    Returns:
        str: The yaml's path (``out`` with the suffix ``.yaml``).
    """
    yaml_path = osp.splitext(out)[0] + '.yaml'
    subnet_meta = dict(
        info['meta'], flops=info['flops'], input_shape=info['input_shape']
    )
    dump_subnet(yaml_path, info['channels'], subnet_meta)
    return yaml_path


def check_subnet_file(cfg: Config) -> None:
    """Refuse a config whose ``model.subnet`` yaml does not exist.

    Args:
        cfg (Config): A subnet config.

    Raises:
        FileNotFoundError: The yaml is missing (the message names
            ``model.subnet`` and the file).
    """
    spec = read_model_config(cfg)
    if spec.kind != 'DMCPSubnet' or osp.isfile(str(spec.subnet)):
        return  # build_exported_model names a config of another kind
    raise FileNotFoundError(
        f'{cfg.filename}: model.subnet={spec.subnet}: no such file; the '
        "ONNX export needs the pruned model's subnet yaml (--cfg-options "
        'model.subnet=<work_dir>/DMCP_SUBNET_IMAGENET.yaml)'
    )


#: Random inputs the ONNX model is checked on, and the largest difference
#: of logits accepted.
ONNX_CHECK_IMAGES = 8
ONNX_TOLERANCE = 1e-4


def export_onnx(
    cfg: Config, checkpoint: str, out: str, opset: int = MIN_OPSET
) -> dict:
    """Write the pruned classifier as ONNX to ``out`` after checking it
    with onnxruntime against torch (``--format onnx``).

    Args:
        cfg (Config): A subnet config.
        checkpoint (str): The checkpoint.
        out (str): The output file (e.g. ``dmcp_subnet.onnx``).
        opset (int): The ONNX opset. Defaults to 17.

    Returns:
        dict: What :func:`build_exported_model` returned, ``yaml`` (the
        subnet yaml written), ``max_diff`` (the check's largest difference
        of logits) and ``size`` (bytes of the ONNX file).

    Raises:
        FileNotFoundError: ``model.subnet`` names no file.
        RuntimeError: onnxruntime's logits differ from torch's by more than
            1e-4.
    """
    check_subnet_file(cfg)
    model, info = build_exported_model(cfg, checkpoint)
    preprocessor = cfg.get('data_preprocessor') or {}
    metadata = dict(
        channels=info['channels'],
        flops=info['flops'],
        params=info['params'],
        input_shape=info['input_shape'],
        mean=_plain(preprocessor.get('mean')),
        std=_plain(preprocessor.get('std')),
    )
    data = onnx_bytes(model, info['input_shape'], opset, metadata)
    inputs = torch.randn(
        ONNX_CHECK_IMAGES,
        *info['input_shape'],
        generator=torch.Generator().manual_seed(0),
    )
    max_diff = onnx_max_diff(data, model, inputs)
    if not max_diff <= ONNX_TOLERANCE:
        raise RuntimeError(
            f"{out}: onnxruntime's logits differ from torch's by "
            f'{max_diff:.3g} (> {ONNX_TOLERANCE}) on '
            f'{ONNX_CHECK_IMAGES} images; not written'
        )
    yaml_path = write_yaml(out, info)
    atomic_write(out, data)
    return dict(info, yaml=yaml_path, max_diff=max_diff, size=len(data))


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
        dict: What :func:`export` (or :func:`export_module`,
        :func:`export_onnx`) returned.
    """

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.format == 'onnx':
        if args.pickle_module:
            raise ValueError('--pickle-module: only with --format torch')
        info = export_onnx(cfg, args.checkpoint, args.out, args.opset)
        how = (
            f'ONNX opset {args.opset}, {info["size"]} bytes; onnxruntime '
            f'matches torch within {info["max_diff"]:.2g} on '
            f'{ONNX_CHECK_IMAGES} images; subnet yaml {info["yaml"]}'
        )
    elif args.pickle_module:
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
