"""Run the ImageNet search and retraining on a CUDA GPU, briefly, end to end.

For a GPU owner, from a fresh clone after ``make install``::

    .venv/bin/python benchmarks/device_check.py

For each of the ResNet-50 and MobileNetV2-1.5x configs it runs, on one GPU
with synthetic ImageNet-shaped data (random 256x256 images in the ImageNet
layout, batch 64, the configs' own pipelines at 224x224):

1. ``tools/train.py`` on the supernet config: one epoch of warmup and one
   with the architecture step (3 iterations each), then the export of
   ``DMCP_SUBNET_IMAGENET.yaml``;
2. ``tools/train.py`` on the matching subnet config with that yaml (3
   iterations);

each without and with ``--amp``. It prints seconds per iteration, peak GPU
memory, the final E[FLOPs] and the exported subnet's FLOPs, and exits
non-zero on the first failure, with the failing run's log tail. Without CUDA
it says so in one line and exits 0 (``--cpu`` runs the same flow on the CPU,
without ``--amp``, to check the script itself).
"""

import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
from glob import glob
from typing import Dict, List, Optional, Sequence

import numpy as np
import yaml
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'pruning', 'dmcp')
PAIRS = {
    'resnet50': (
        'dmcp_resnet50_supernet_8xb64_in1k.py',
        'dmcp_resnet50_subnet_32xb64_in1k.py',
    ),
    'mobilenet-v2-1.5x': (
        'dmcp_mobilenet-v2-1.5x_supernet_8xb64_in1k.py',
        'dmcp_mobilenet-v2-1.5x_subnet_32xb64_in1k.py',
    ),
    'resnet18': (
        'dmcp_resnet18_supernet_8xb64_in1k.py',
        'dmcp_resnet18_subnet_32xb64_in1k.py',
    ),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line.

    Args:
        argv (Sequence[str], optional): Arguments. Defaults to None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--configs',
        nargs='+',
        default=['resnet50', 'mobilenet-v2-1.5x'],
        choices=list(PAIRS),
    )
    p.add_argument('--batch', type=int, default=64, help='per-GPU batch')
    p.add_argument('--iters', type=int, default=3, help='iterations per epoch')
    p.add_argument(
        '--cpu',
        action='store_true',
        help='run on the CPU (no --amp): checks the script, not the GPU',
    )
    p.add_argument('--work-dir', help='keep the runs here (default: temp)')
    return p.parse_args(argv)


def has_cuda() -> bool:
    """Whether torch sees a CUDA device (asked in a child process, so that
    this script imports no torch of its own)."""
    code = 'import torch; print(int(torch.cuda.is_available()))'
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True
    )
    return out.stdout.strip() == '1'


def make_data(root: str, images: int, classes: int = 4) -> str:
    """Random 256x256 RGB images in the ImageNet layout, with the
    ``meta/{train,val}.txt`` annotation files mmpretrain's ``ImageNet``
    reads.

    Args:
        root (str): Folder to write.
        images (int): Training images (validation gets a quarter).
        classes (int): Classes (labels 0..classes-1 of the 1,000).

    Returns:
        str: ``root``.
    """
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, count in (('train', images), ('val', max(images // 4, 1))):
        lines = []
        for i in range(count):
            c = i % classes
            rel = f'class_{c}/{split}_{i}.JPEG'
            path = osp.join(root, split, rel)
            os.makedirs(osp.dirname(path), exist_ok=True)
            pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, format='JPEG')
            lines.append(f'{rel} {c}')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return root


def data_options(root: str, batch: int) -> List[str]:
    """``--cfg-options`` pointing the ImageNet loaders at ``root``."""
    opts = []
    for loader in ('train', 'val', 'test'):
        opts += [
            f'{loader}_dataloader.dataset.data_root={root}',
            f'{loader}_dataloader.batch_size={batch}',
            f'{loader}_dataloader.num_workers=2',
        ]
    return opts + ['default_hooks.logger.interval=1']


def train(
    config: str, work_dir: str, options: List[str], amp: bool
) -> Dict[str, float]:
    """Run ``tools/train.py`` and read its figures.

    Args:
        config (str): Config file.
        work_dir (str): Its work dir.
        options (list[str]): ``--cfg-options``.
        amp (bool): Pass ``--amp``.

    Returns:
        dict[str, float]: Seconds per iteration (median after the first),
        peak memory in MB (0 where not logged) and the last E[FLOPs] in M.
    """
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'),
        config,
        '--work-dir',
        work_dir,
        '--cfg-options',
        *options,
    ] + (['--amp'] if amp else [])
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if run.returncode != 0:
        tail = (run.stdout + run.stderr)[-3000:]
        raise RuntimeError(
            f'{" ".join(cmd[1:3])} exited {run.returncode}:\n{tail}'
        )
    rows = []
    for path in glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    times = [r['time'] for r in rows if 'time' in r]
    return dict(
        sec_per_iter=statistics.median(times[1:] or times),
        memory_mb=max((r.get('memory', 0) for r in rows), default=0),
        expected_mflops=next(
            (
                r['expected_mflops']
                for r in reversed(rows)
                if 'expected_mflops' in r
            ),
            float('nan'),
        ),
    )


def check(name: str, root: str, args, amp: bool) -> List[str]:
    """Search, export and retrain one config pair; table rows."""
    supernet, subnet = (osp.join(CONFIGS, c) for c in PAIRS[name])
    tag = f'{name}{"-amp" if amp else ""}'
    base = osp.join(args.work_dir, tag)
    data = data_options(root, args.batch)
    search = train(
        supernet,
        osp.join(base, 'search'),
        data + ['train_cfg.max_epochs=2', 'train_cfg.warmup_epochs=1'],
        amp,
    )
    yaml_path = osp.join(base, 'search', 'DMCP_SUBNET_IMAGENET.yaml')
    with open(yaml_path) as f:
        meta = yaml.safe_load(f)['meta']
    retrain = train(
        subnet,
        osp.join(base, 'subnet'),
        data + [f'model.subnet={yaml_path}', 'train_cfg.max_epochs=1'],
        amp,
    )
    return [
        f'| {tag} | search | {search["sec_per_iter"]:.3f} '
        f'| {search["memory_mb"]:.0f} | {search["expected_mflops"]:.1f} '
        f'| {meta["flops"] / 1e6:.1f} (target '
        f'{meta["target_flops"] / 1e6:.1f}) |',
        f'| {tag} | subnet | {retrain["sec_per_iter"]:.3f} '
        f'| {retrain["memory_mb"]:.0f} | | |',
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the checks; 0 when all pass or without CUDA."""
    args = parse_args(argv)
    if not args.cpu and not has_cuda():
        print(
            'device_check: no CUDA device here (torch.cuda.is_available() '
            'is False); nothing checked. Run it on a GPU machine.'
        )
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        args.work_dir = args.work_dir or tmp
        root = make_data(
            osp.join(args.work_dir, 'imagenet'), args.batch * args.iters
        )
        rows = [
            '| run | stage | s/iter | peak memory (MB) | E[FLOPs] (M) '
            '| exported FLOPs (M) |',
            '| --- | --- | ---: | ---: | ---: | --- |',
        ]
        for name in args.configs:
            for amp in (False,) if args.cpu else (False, True):
                try:
                    rows += check(name, root, args, amp)
                except RuntimeError as e:
                    print('\n'.join(rows))
                    print(f'device_check: FAILED: {e}', file=sys.stderr)
                    return 1
                print(rows[-2] + '\n' + rows[-1], flush=True)
        print('\n'.join(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
