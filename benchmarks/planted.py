"""Does the search find planted redundancy? (issue 14, part 1; CPU, tiny.)

For each backbone (a CIFAR-style ResNet-18 with 8 channels in its first
stage at 8x8, mmpretrain's MobileNetV2 at widen factor 0.25 at 32x32) and
each choice of S (``--seeds``: one random non-residual unit per stage, a
block's ``conv1`` in the ResNet, a block's expansion (its 1x1 expand conv and
the depthwise conv that shares its channels) in MobileNetV2):

1. train the full network on 1024 random images with random labels
   (memorisation: every live channel carries part of it), the last half of
   each S-unit's channels held at exactly zero throughout (their batch norm
   weight and bias are 0), then freeze it;
2. search alpha only (task loss + budget, no weight update), target = the
   FLOPs of the network with every S-unit at half width, from alpha near
   the full network (``alpha_init=3.0``), with ``--optimizer`` (default
   Adam 0.3), its batch norms on the frozen network's running statistics
   (``--bn-stats running``, the default) or on the batch's, as a search
   that trains the weights has them (``--bn-stats batch``: a batch norm
   after each convolution then undoes any common scale of its input
   channels, so the task loss feels only the shape of a unit's Markov
   profile, not its level, and MobileNetV2's planted units are not found);
3. report the largest expected width ratio among the S-units (the issue
   asks <= 0.6), the smallest outside S (asks >= 0.9), and the training
   accuracy (batch statistics) of the planted network, of the Expected
   Sampling subnet fitted to the target and of the uniform-width network
   at the target, both inheriting the weights.

Units joined by a residual addition are never in S: planting one would
zero those channels in every block of the stage at once.
``--out`` writes the table as Markdown.
"""

import argparse
import os.path as osp
import platform
import random
import sys
import time
from datetime import datetime, timezone

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.helpers.trained import (  # noqa: E402
    ALPHA_OPTIMIZERS,
    BACKBONES,
    INPUT_SIZE,
    accuracy,
    random_label_task,
    search,
    tiny_dmcp,
    train_full,
)

UNIT_CFG = dict(alpha_init=3.0)
# any reachable target, for the network that only lists the units
PROBE_TARGET = dict(resnet=100_000, mobilenet_v2=300_000)
NUM_IMAGES = dict(resnet=1024, mobilenet_v2=512)
# MobileNetV2 hardly learns random labels with the ResNet's SGD: Adam, longer
TRAIN = dict(resnet=dict(), mobilenet_v2=dict(steps=1200, adam_lr=0.01))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument(
        '--backbones', nargs='+', choices=BACKBONES, default=list(BACKBONES)
    )
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument(
        '--optimizer', choices=ALPHA_OPTIMIZERS, default='adam'
    )
    parser.add_argument(
        '--lr', type=float, default=0.3, help='(step length if normalised)'
    )
    parser.add_argument('--lambda-reg', type=float, default=0.1)
    parser.add_argument(
        '--bn-stats',
        choices=('batch', 'running'),
        default='running',
        help="batch norm statistics during the search: the batch's (as a "
        "search trains) or the frozen network's running ones",
    )
    parser.add_argument('--out', help='write the table here (Markdown)')
    return parser.parse_args()


def choose_s(names: list, seed: int) -> list:
    """One non-residual unit per stage, at random: a block's ``conv1``
    (ResNet) or expansion ``conv.0.conv`` (MobileNetV2)."""
    rng = random.Random(seed)
    own = [n for n in names if n.endswith(('conv1', 'conv.0.conv'))]
    stages = sorted({n.split('.')[1] for n in own if '.layer' in n})
    return [rng.choice([n for n in own if f'.{s}.' in n]) for s in stages]


def run(args: argparse.Namespace, backbone: str, seed: int) -> dict:
    x, y = random_label_task(
        num=NUM_IMAGES[backbone], seed=seed, size=INPUT_SIZE[backbone]
    )
    probe = tiny_dmcp(
        backbone=backbone,
        target_flops=PROBE_TARGET[backbone],
        channel_unit_cfg=UNIT_CFG,
    )
    planted = choose_s(probe.mutator.unit_names, seed)
    half = {
        u.name: u.num_channels // 2 if u.name in planted else u.num_channels
        for u in probe.mutator.units
    }
    target = probe.mutator.subnet_flops(half)
    algo = tiny_dmcp(
        backbone=backbone,
        target_flops=target,
        lambda_reg=args.lambda_reg,
        channel_unit_cfg=UNIT_CFG,
        seed=seed,
    )
    train_full(algo, x, y, seed=seed, planted=planted, **TRAIN[backbone])
    planted_acc = accuracy(algo, x, y, 'max')
    search(
        algo,
        x,
        y,
        args.steps,
        args.optimizer,
        args.lr,
        record=False,
        running_stats=args.bn_stats == 'running',
    )
    m = algo.mutator
    with torch.no_grad():
        expected = m.expected_channels()
        ratios = expected / torch.tensor([u.num_channels for u in m.units])
    widths = dict(zip(m.unit_names, ratios.tolist()))
    es, _ = m.fit_widths(expected.tolist(), target)
    uniform, _ = m.uniform_choices(target)
    return dict(
        backbone=backbone,
        seed=seed,
        S=planted,
        target=target / algo.full_flops,
        s_max=max(widths[n] for n in planted),
        s_mean=sum(widths[n] for n in planted) / len(planted),
        out_min=min(w for n, w in widths.items() if n not in planted),
        out_mean=sum(w for n, w in widths.items() if n not in planted)
        / (len(widths) - len(planted)),
        planted=planted_acc,
        es=accuracy(algo, x, y, es),
        uniform=accuracy(algo, x, y, uniform),
    )


def table(rows: list) -> str:
    lines = [
        '| backbone | seed | S (first stage to last) | T / full '
        '| width in S: max, mean | outside S: min, mean '
        '| acc planted | acc ES | acc uniform |',
        '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ]
    for r in rows:
        short = ', '.join(n.replace('backbone.', '') for n in r['S'])
        lines.append(
            f'| {r["backbone"]} | {r["seed"]} | {short} | {r["target"]:.2f} | '
            f'{r["s_max"]:.2f}, {r["s_mean"]:.2f} | '
            f'{r["out_min"]:.2f}, {r["out_mean"]:.2f} | '
            f'{100 * r["planted"]:.1f} | {100 * r["es"]:.1f} | '
            f'{100 * r["uniform"]:.1f} |'
        )
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    start = time.time()
    rows = []
    for backbone in args.backbones:
        for seed in args.seeds:
            rows.append(run(args, backbone, seed))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    print(f'{time.time() - start:.0f} s')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(
                '# Planted redundancy (random labels)\n\n'
                f'`python {" ".join(sys.argv)}`, '
                f'{datetime.now(timezone.utc):%Y-%m-%d}, '
                f'{platform.processor() or platform.machine()}, '
                f'{time.time() - start:.0f} s.\n\n{text}\n'
            )


if __name__ == '__main__':
    main()
