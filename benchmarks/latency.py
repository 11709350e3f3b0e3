"""Are pruned networks faster on this CPU, in proportion to their FLOPs?

For each network, the full classifier, the uniform-width subnet and a
DMCP-shaped (non-uniform) subnet of the same FLOPs budget, with channel
divisor 1 and 8 (``channel_unit_cfg.divisor``), are timed in torch eager
and in onnxruntime (CPU) at batch 1 and 32; each figure is the median of
``--runs`` timed forwards (after ``--warmup`` untimed ones). The runs of
the variants of one network are interleaved (round ``r`` times every
variant once) so that the load of a shared machine hits them alike: compare
the ratios to the full network measured in one run, not absolute times
across runs.

Networks:

* ``demo``: the demo's ResNet-18 (CIFAR stem, a quarter width, 1x28x28),
  with the shipped searched subnet
  ``configs/pruning/dmcp/DMCP_SUBNET_fashion-mnist_resnet18-cifar-w16_7M.yaml``
  as the DMCP subnet (divisor 1) and its widths rounded to multiples of 8 and
  fitted to the same budget (divisor 8);
* ``resnet50``, ``mobilenetv2``: ImageNet-shaped (3x224x224) mmpretrain
  classifiers; their DMCP-shaped subnet is built, not searched: the Expected
  Sampling widths of Markov units (10 groups) whose ``alpha`` is the
  ``'uniform'`` initialisation plus seeded ``N(0, 1)`` noise, fitted to
  ``--ratio`` of the full FLOPs (one common factor, as the export fits).

Usage::

    python benchmarks/latency.py [--nets demo resnet50 mobilenetv2]
        [--batches 1 32] [--runs 20] [--threads 1] [--out FILE.md]
"""

import argparse
import os.path as osp
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
import yaml  # noqa: E402
from mmengine.config import Config  # noqa: E402
from torch import nn  # noqa: E402

from projects.dmcp.deploy import onnx_bytes, onnx_session  # noqa: E402
from projects.dmcp.models import (  # noqa: E402
    DMCPChannelMutator,
    DMCPSubnet,
    count_flops,
    count_params,
)
from projects.dmcp.registry import MODELS  # noqa: E402
from projects.dmcp.utils import tensor_forward, with_scope  # noqa: E402

DEMO_SUPERNET = osp.join(
    REPO,
    'configs/pruning/dmcp/dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py',
)
DEMO_YAML = osp.join(
    REPO,
    'configs/pruning/dmcp/DMCP_SUBNET_fashion-mnist_resnet18-cifar-w16_7M.yaml',
)
IMAGENET = (3, 224, 224)


def imagenet_arch(backbone: dict, in_channels: int) -> dict:
    """An mmpretrain ImageNet classifier config."""
    return dict(
        type='ImageClassifier',
        backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead', num_classes=1000, in_channels=in_channels
        ),
    )


def net_specs() -> Dict[str, dict]:
    """Architecture, input shape and DMCP source of every network."""
    demo = Config.fromfile(DEMO_SUPERNET)
    return dict(
        demo=dict(
            arch=demo.model.architecture.to_dict(),
            shape=tuple(demo.input_shape),
            yaml=DEMO_YAML,
        ),
        resnet50=dict(
            arch=imagenet_arch(dict(type='ResNet', depth=50), 2048),
            shape=IMAGENET,
            yaml=None,
        ),
        mobilenetv2=dict(
            arch=imagenet_arch(
                dict(type='MobileNetV2', widen_factor=1.0), 1280
            ),
            shape=IMAGENET,
            yaml=None,
        ),
    )


def build(arch: dict) -> nn.Module:
    """The unpruned classifier, in eval mode."""
    return MODELS.build(with_scope(dict(arch), 'mmpretrain')).eval()


def mutator_on(
    arch: dict, shape: Tuple[int, ...], num_groups: int, divisor: int
) -> DMCPChannelMutator:
    """A mutator prepared on a fresh classifier (to round and count)."""
    mutator = DMCPChannelMutator(
        channel_unit_cfg=dict(num_groups=num_groups, divisor=divisor)
    )
    mutator.prepare_from_supernet(build(arch), shape, tensor_forward)
    return mutator


def dmcp_widths(spec: dict, ratio: float, seed: int) -> Tuple[list, float]:
    """The DMCP subnet's unit widths (unit order of a 2-group mutator) and
    its FLOPs budget."""
    arch, shape = spec['arch'], spec['shape']
    base = mutator_on(arch, shape, 2, 1)
    if spec['yaml'] is not None:
        doc = yaml.safe_load(open(spec['yaml']))
        widths = [doc['channels'][n] for n in base.unit_names]
        return widths, doc['meta']['target_flops']
    searched = mutator_on(arch, shape, 10, 1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in searched.arch_parameters():  # 'uniform' init + N(0, 1)
            a.add_(torch.randn(a.shape, generator=g))
        expected = dict(
            zip(searched.unit_names, searched.expected_channels().tolist())
        )
    return [expected[n] for n in base.unit_names], ratio * base.flops_of('max')


def variants(spec: dict, ratio: float, seed: int) -> Dict[str, dict]:
    """Name -> ``dict(model, divisor)`` of every variant of a network."""
    arch, shape = spec['arch'], spec['shape']
    widths, target = dmcp_widths(spec, ratio, seed)
    # one factor for every width, up to all full: the fit then finds the
    # largest multiple of the profile within the budget
    full = mutator_on(arch, shape, 2, 1).sample_choices('max').values()
    searched = widths
    widths = [w * max(c / v for c, v in zip(full, widths)) for w in widths]
    out = dict(full=dict(model=build(arch), divisor=None))
    for divisor in (1, 8):
        mutator = mutator_on(arch, shape, 2, divisor)
        if spec['yaml'] is not None and divisor == 1:
            dmcp = dict(zip(mutator.unit_names, searched))  # the yaml
        else:
            dmcp, _ = mutator.fit_widths(widths, target, floor='channel')
        uniform, _ = mutator.uniform_choices(target)
        for name, choices in (('uniform', uniform), ('dmcp', dmcp)):
            channels = mutator.layer_channels(choices)
            model = DMCPSubnet(
                arch, dict(meta={}, channels=channels), shape
            ).eval()
            out[f'{name} d{divisor}'] = dict(model=model, divisor=divisor)
    return out


def timed(fn: Callable[[], object]) -> float:
    """Seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    runners: Dict[str, Callable[[], object]], runs: int, warmup: int
) -> Dict[str, float]:
    """Median seconds of every runner, the runs interleaved."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for name, fn in runners.items():
            times[name].append(timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_net(
    name: str,
    spec: dict,
    args: argparse.Namespace,
) -> List[dict]:
    """Rows of one network: FLOPs, params and the medians."""
    shape = spec['shape']
    nets = variants(spec, args.ratio, args.seed)
    rows = []
    for key, v in nets.items():
        rows.append(
            dict(
                net=name,
                variant=key,
                flops=count_flops(v['model'], shape, tensor_forward),
                params=count_params(v['model']),
                onnx=onnx_bytes(v['model'], shape),
            )
        )
    for batch in args.batches:
        x = torch.randn(
            batch, *shape, generator=torch.Generator().manual_seed(0)
        )
        feed = {'input': x.numpy()}
        eager, ort = {}, {}
        for row in rows:
            model = nets[row['variant']]['model']
            session = onnx_session(row['onnx'], args.threads)

            def run_torch(model=model, x=x):
                with torch.no_grad():
                    return tensor_forward(model, x)

            def run_ort(session=session, feed=feed):
                return session.run(['logits'], feed)

            eager[row['variant']] = run_torch
            ort[row['variant']] = run_ort
        for runtime, runners in (('torch', eager), ('ort', ort)):
            medians = measure(runners, args.runs, args.warmup)
            for row in rows:
                row[f'{runtime} b{batch}'] = medians[row['variant']]
            print(
                f'{name} batch {batch} {runtime}: '
                + ', '.join(
                    f'{k} {v * 1e3:.2f} ms' for k, v in medians.items()
                ),
                flush=True,
            )
    return rows


def table(rows: List[dict], batches: List[int]) -> List[str]:
    """Markdown table of one network's rows; ratios to the full network."""
    full = rows[0]
    cols = [f'{rt} b{b}' for b in batches for rt in ('torch', 'ort')]
    head = '| variant | MFLOPs | FLOPs ratio | params (M) | ' + ' | '.join(
        f'{c} ms (ratio)' for c in cols
    )
    lines = [head + ' |', '|' + ' --- |' * (4 + len(cols))]
    for row in rows:
        cells = [
            row['variant'],
            f'{row["flops"] / 1e6:.1f}',
            f'{row["flops"] / full["flops"]:.3f}',
            f'{row["params"] / 1e6:.3f}',
        ] + [f'{row[c] * 1e3:.2f} ({row[c] / full[c]:.3f})' for c in cols]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        '--nets',
        nargs='+',
        default=['demo', 'resnet50', 'mobilenetv2'],
        choices=['demo', 'resnet50', 'mobilenetv2'],
    )
    p.add_argument('--batches', nargs='+', type=int, default=[1, 32])
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument(
        '--threads',
        type=int,
        default=1,
        help='torch and onnxruntime threads (default 1: steadier on a '
        'shared machine)',
    )
    p.add_argument(
        '--ratio',
        type=float,
        default=0.5,
        help='FLOPs budget of the built subnets, a fraction of the full',
    )
    p.add_argument('--seed', type=int, default=0, help='seed of the alphas')
    p.add_argument('--out', help='write the tables as Markdown here')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, List[dict]]:
    """Measure and print (and write) the tables.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        dict[str, list[dict]]: Network -> its rows.
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = net_specs()
    stamp = datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    header = [
        f'<!-- {stamp}, {platform.processor() or platform.machine()}, '
        f'torch {torch.__version__}, threads {args.threads}, runs '
        f'{args.runs}, command: python benchmarks/latency.py '
        + ' '.join(sys.argv[1:])
        + ' -->',
        '',
    ]
    results, lines = {}, []
    for name in args.nets:
        rows = bench_net(name, specs[name], args)
        for row in rows:
            del row['onnx']
        results[name] = rows
        lines += [f'### {name} {specs[name]["shape"]}', '']
        lines += table(rows, args.batches) + ['']
        print('\n'.join(lines), flush=True)
        if args.out:  # after every network: a long run keeps what it has
            with open(args.out, 'w') as f:
                f.write('\n'.join(header + lines))
    return results


if __name__ == '__main__':
    main()
