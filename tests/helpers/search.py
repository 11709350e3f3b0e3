"""Helpers to run DMCP's real supernet configs on a tiny generated dataset.

:func:`make_tiny_imagenet` writes an ImageNet-layout folder (``train/``,
``val/`` and ``meta/{train,val}.txt``) so that the configs' own ``ImageNet``
dataset reads it unchanged; :func:`tiny_search_options` returns the
``--cfg-options`` that shrink a supernet config onto it: 32x32 inputs, batch
8, no worker processes, deterministic transforms, a target that a 32x32
ResNet-18 can reach, and a few epochs with warmup.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Union

from tests.helpers import (
    DMCP_CONFIGS,
    REPO_ROOT,
    failure_excerpt,
    make_tiny_imagefolder,
)

RESNET18_SUPERNET = DMCP_CONFIGS / 'dmcp_resnet18_supernet_8xb64_in1k.py'


def make_tiny_imagenet(
    root: Union[str, os.PathLike],
    num_classes: int = 3,
    num_train: int = 8,
    num_val: int = 2,
    size: int = 32,
) -> Path:
    """Write a tiny ImageNet-layout dataset with ``meta/*.txt`` lists.

    Args:
        root (str | PathLike): The ``data_root`` to create.
        num_classes (int): Classes (labels ``0..num_classes-1``). Defaults
            to 3.
        num_train (int): Training images per class. Defaults to 8.
        num_val (int): Validation images per class. Defaults to 2.
        size (int): Image side in pixels. Defaults to 32.

    Returns:
        Path: ``root``.
    """
    root = make_tiny_imagefolder(root, num_classes, num_train, num_val, size)
    (root / 'meta').mkdir(exist_ok=True)
    for split in ('train', 'val'):
        lines = [
            f'{p.relative_to(root / split).as_posix()} '
            f'{int(p.parent.name.split("_")[1])}'
            for p in sorted((root / split).rglob('*.png'))
        ]
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return root


def tiny_search_options(
    data_root: Union[str, os.PathLike],
    max_epochs: int = 4,
    warmup_epochs: int = 2,
    target_flops: str = '10M',
    extra: Optional[List[str]] = None,
) -> List[str]:
    """``--cfg-options`` shrinking a supernet config onto a tiny dataset.

    Args:
        data_root (str | PathLike): Folder from :func:`make_tiny_imagenet`.
        max_epochs (int): Search epochs. Defaults to 4.
        warmup_epochs (int): Warmup epochs. Defaults to 2.
        target_flops (str): Target at 32x32. Defaults to ``'10M'``.
        extra (list[str], optional): More ``key=value`` options. Defaults
            to None.

    Returns:
        list[str]: ``key=value`` strings.
    """
    opts = [
        'model.input_shape=(3,32,32)',
        f'model.target_flops={target_flops}',
        f'train_cfg.max_epochs={max_epochs}',
        f'train_cfg.warmup_epochs={warmup_epochs}',
        # deterministic transforms, so that a resumed run equals a straight
        # one: a plain resize instead of RandomResizedCrop, and no flip
        'train_dataloader.dataset.pipeline.1.type=Resize',
        'train_dataloader.dataset.pipeline.1.scale=32',
        'train_dataloader.dataset.pipeline.2.prob=0.0',
        'val_dataloader.dataset.pipeline.1.scale=32',
        'val_dataloader.dataset.pipeline.2.crop_size=32',
        'optim_wrapper.mutator.optimizer.lr=2.0',
        'default_hooks.logger.interval=1',
        'randomness.seed=0',
    ]
    for loader in ('train', 'val', 'test'):
        opts += [
            f'{loader}_dataloader.dataset.data_root={data_root}',
            f'{loader}_dataloader.batch_size=8',
            f'{loader}_dataloader.num_workers=0',
            f'{loader}_dataloader.persistent_workers=False',
        ]
    return opts + list(extra or [])


def tiny_config(
    data_root: Union[str, os.PathLike],
    config: Union[str, os.PathLike] = RESNET18_SUPERNET,
    **kwargs,
):
    """Load a supernet config shrunk by :func:`tiny_search_options`, for
    in-process runners.

    Args:
        data_root (str | PathLike): Folder from :func:`make_tiny_imagenet`.
        config (str | PathLike): The config. Defaults to the ResNet-18
            supernet.
        **kwargs: Passed to :func:`tiny_search_options`.

    Returns:
        Config: The merged config.
    """
    from mmengine.config import Config, DictAction

    cfg = Config.fromfile(str(config))
    opts = {}
    for opt in tiny_search_options(data_root, **kwargs):
        key, value = opt.split('=', 1)
        opts[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(opts, allow_list_keys=True)
    return cfg


def run_tool(
    args: List[str], env: Optional[Dict[str, str]] = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run a command from the repository root and fail loudly on error.

    Args:
        args (list[str]): Command; a leading ``'python'`` is replaced by this
            interpreter.
        env (dict, optional): Extra environment variables. Defaults to None.
        timeout (float): Seconds. Defaults to 600.

    Returns:
        subprocess.CompletedProcess: The finished process (text output).
    """
    if args and args[0] == 'python':
        args = [sys.executable] + args[1:]
    # this interpreter's bin dir first: the shell scripts call a bare
    # `python`, and `make test` runs without an activated virtualenv
    path = os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get('PATH', '')]
    )
    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PATH=path)
    full_env.update(env or {})
    proc = subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=full_env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(map(str, args))} failed ({proc.returncode}):\n'
            f'{failure_excerpt(proc.stdout + proc.stderr, 6000)}'
        )
    return proc
