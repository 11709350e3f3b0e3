"""Train a model with mmengine's Runner (modelled on mmpretrain's
``tools/train.py``).

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

Works from a clone without installing: the repository root is put on
``sys.path`` and the torch 2.x compatibility shims are applied before
anything imports mmengine, mmpretrain, mmrazor or torchvision. Without CUDA
the distributed launchers use the ``gloo`` backend
(:func:`projects.dmcp.compat.setup_cpu_distributed`).
"""

import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from projects.dmcp import compat  # noqa: E402
from projects.dmcp.checks import ConfigError, check_config  # noqa: E402

compat.apply_all()

import argparse  # noqa: E402

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.device import get_device  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Parse the command line and set ``LOCAL_RANK`` if it is unset.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
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
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs (e.g. '
        'train_cfg.max_iters=2 or key="[a,b]"); no white space allowed',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    # torch.distributed.run passes --local-rank (torch.distributed.launch
    # used --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


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
    cfg.launcher = args.launcher
    # work_dir: CLI > config > ./work_dirs/<config stem>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        stem = osp.splitext(osp.basename(args.config))[0]
        cfg.work_dir = osp.join('./work_dirs', stem)
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


def main() -> None:
    """Build the runner from the config and train."""
    args = parse_args()
    if args.amp and get_device() in ('cpu', 'mps'):
        sys.exit(
            'tools/train.py: error: --amp needs a GPU (or NPU/MLU/MUSA): '
            "mmengine's AmpOptimWrapper cannot be built on "
            f'{get_device()}. Train without --amp.'
        )
    cfg = merge_args(Config.fromfile(args.config), args)
    try:
        check_config(cfg)
    except ConfigError as e:
        sys.exit(f'{osp.basename(__file__)}: error: {args.config}: {e}')
    compat.setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)
    try:
        runner.train()
    except compat.CheckpointLoadError as e:  # refused, truncated, 404...
        sys.exit(f'{osp.basename(__file__)}: error: {e}')
    compat.teardown_distributed()


if __name__ == '__main__':
    main()
