"""Test (evaluate) a checkpoint with mmengine's Runner (modelled on
mmpretrain's ``tools/test.py``).

Usage::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
        [--debug]

Works from a clone without installing: the repository root is put on
``sys.path`` and the torch 2.x compatibility shims are applied before
anything imports mmengine, mmpretrain, mmrazor or torchvision. Without CUDA
the distributed launchers use the ``gloo`` backend
(:func:`projects.dmcp.dist.setup_cpu_distributed`).
"""

import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config

from projects.dmcp import cli


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line and set ``LOCAL_RANK`` if it is unset.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = cli.runner_parser(
        'Test (and eval) a model',
        'test config file path',
        'test_dataloader.batch_size=2',
    )
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision test (bfloat16 on CPU)',
    )
    return cli.parse_runner_args(parser, argv)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line arguments into the config.

    Args:
        cfg: The config loaded from ``args.config``.
        args: The parsed command line.

    Returns:
        Config: ``cfg``, changed in place.
    """
    cli.runner_config(cfg, args)
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg.fp16 = True
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


@cli.entry
def main(argv: Optional[List[str]] = None) -> None:
    """Build the runner from the config and evaluate the checkpoint.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).
    """
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(args.config), args)
    cli.run_runner(cfg, args.config, 'test')


if __name__ == '__main__':
    main()
