"""Train a model with mmengine's Runner (modelled on mmpretrain's
``tools/train.py``).

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
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
from mmengine.device import get_device

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
        'Train a model', 'train config file path', 'train_cfg.max_iters=2'
    )
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint; with no path, resume from the '
        'latest checkpoint in the work directory',
    )
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training (needs a GPU)',
    )
    return cli.parse_runner_args(parser, argv)


def enable_amp(optim_wrapper: dict) -> None:
    """Switch an ``optim_wrapper`` config to ``AmpOptimWrapper`` in place.

    A config with ``optimizer`` (or ``type``) is one wrapper; otherwise it is
    an ``OptimWrapperDict`` built by a ``constructor`` and each sub-config
    holding an ``optimizer`` is switched.

    Args:
        optim_wrapper: The ``cfg.optim_wrapper`` to change.
    """
    if 'optimizer' in optim_wrapper or 'type' in optim_wrapper:
        wrappers = [optim_wrapper]
    else:
        wrappers = [
            v
            for v in optim_wrapper.values()
            if isinstance(v, dict) and 'optimizer' in v
        ]
    for wrapper in wrappers:
        wrapper['type'] = 'AmpOptimWrapper'
        wrapper.setdefault('loss_scale', 'dynamic')


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Merge the command-line arguments into the config.

    Args:
        cfg: The config loaded from ``args.config``.
        args: The parsed command line.

    Returns:
        Config: ``cfg``, changed in place.
    """
    cli.runner_config(cfg, args)
    if args.amp:
        enable_amp(cfg.optim_wrapper)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


@cli.entry
def main(argv: Optional[List[str]] = None) -> None:
    """Build the runner from the config and train.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).
    """
    args = parse_args(argv)
    if args.amp and get_device() in ('cpu', 'mps'):
        cli.fail(
            osp.basename(__file__),
            '--amp needs a GPU (or NPU/MLU/MUSA): '
            "mmengine's AmpOptimWrapper cannot be built on "
            f'{get_device()}. Train without --amp.',
        )
    cfg = merge_args(Config.fromfile(args.config), args)
    cli.run_runner(cfg, args.config, 'train')


if __name__ == '__main__':
    main()
