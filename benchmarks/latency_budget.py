"""Does a latency-budget search export a subnet that runs at its target?

1. A DMCP search on Fashion-MNIST with ``model.budget='latency'`` (the
   config ``dmcp_resnet18-cifar-w16_supernet-latency_fashion-mnist.py``: the
   demo's supernet, the shipped latency table of this CPU), its schedule
   shortened as ``benchmarks/search_quality.py`` shortens it, in a
   subprocess with one thread -> the Expected Sampling yaml, whose meta
   holds the table's estimate of the subnet (``latency_ms``) and the
   target.
2. The exported subnet (physically pruned, :func:`DMCPSubnet`), the full
   network and the uniform-width subnet that the table fits to the same
   target are timed in torch eager at the table's batch and threads,
   interleaved (round ``r`` runs each once, so that the load of a shared
   machine hits them alike); each figure is the median of ``--runs`` runs.

It prints the target, the table's estimate, the measured latency and their
ratio, twice: as measured, and scaled to the table's load by the full
network (``measured subnet / measured full * table's full``): the target is
in the table's milliseconds, measured at another time, so on a loaded
machine only the figure relative to the full network measured in the same
run is comparable. ``--out`` writes them as Markdown with the command, the
date and the load average.

Usage::

    python benchmarks/latency_budget.py [--search-epochs 6]
        [--search-subset 10000] [--runs 50] [--repeats 5] [--target 3.6]
        [--out benchmarks/results/latency_budget.md]
"""

import argparse
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402
import yaml  # noqa: E402
from mmengine.config import Config  # noqa: E402

from demo.fashion_mnist_demo import prepare_data  # noqa: E402
from projects.dmcp.model_config import read_model_config  # noqa: E402
from projects.dmcp.models import DMCPSubnet, count_flops  # noqa: E402
from projects.dmcp.registry import build_model  # noqa: E402
from projects.dmcp.utils import tensor_forward  # noqa: E402

CONFIG = (
    'configs/pruning/dmcp/'
    'dmcp_resnet18-cifar-w16_supernet-latency_fashion-mnist.py'
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', default=CONFIG, help='the search config')
    p.add_argument('--work-dir', default='work_dirs/latency_budget')
    p.add_argument(
        '--target',
        type=float,
        default=None,
        help="target latency in ms (default: the config's)",
    )
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--search-epochs', type=int, default=6)
    p.add_argument('--search-subset', type=int, default=10000)
    p.add_argument('--runs', type=int, default=50)
    p.add_argument(
        '--repeats',
        type=int,
        default=5,
        help='independent timings of --runs runs each (the figures are '
        'their medians; the spread of the ratio is reported)',
    )
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--out', help='write the results as Markdown here')
    return p.parse_args(argv)


def search_opts(args: argparse.Namespace) -> List[str]:
    """``--cfg-options`` of the shortened search."""
    epochs, warmup = args.search_epochs, args.search_epochs // 2
    opts = [
        f'randomness.seed={args.seed}',
        f'train_cfg.max_epochs={epochs}',
        f'train_cfg.warmup_epochs={warmup}',
        f'train_cfg.val_interval={epochs}',
        f'train_dataloader.dataset.indices={args.search_subset}',
        f'param_scheduler.architecture.0.T_max={epochs}',
        f'param_scheduler.architecture.0.end={epochs}',
        f'param_scheduler.mutator.0.T_max={epochs - warmup}',
        f'param_scheduler.mutator.0.begin={warmup}',
        f'param_scheduler.mutator.0.end={epochs}',
    ]
    if args.target is not None:
        opts.append(f'model.target_latency={args.target}')
    return opts


def search(args: argparse.Namespace) -> str:
    """Run the search (once: a rerun reuses it); the exported yaml."""
    work = osp.join(args.work_dir, 'search')
    path = osp.join(work, 'DMCP_SUBNET_IMAGENET.yaml')
    if osp.exists(path):
        return path
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'),
        args.config,
        '--work-dir',
        work,
        '--cfg-options',
    ] + search_opts(args)
    start = time.time()
    with open(osp.join(work, 'train.log'), 'w') as log:
        code = subprocess.call(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if code:
        raise RuntimeError(f'the search failed; see {work}/train.log')
    print(f'search: {time.time() - start:.0f} s -> {path}', flush=True)
    return path


def measure(
    runners: Dict[str, Callable[[], object]], runs: int, warmup: int
) -> Dict[str, float]:
    """Median milliseconds of every runner, the runs interleaved."""
    with torch.no_grad():
        for fn in runners.values():
            for _ in range(warmup):
                fn()
        times: Dict[str, List[float]] = {k: [] for k in runners}
        for _ in range(runs):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main(argv: Optional[List[str]] = None) -> dict:
    """Search, measure, print (and write) the figures.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        dict: The figures.
    """
    args = parse_args(argv)
    os.chdir(REPO)
    prepare_data()
    subnet_yaml = search(args)
    doc = yaml.safe_load(open(subnet_yaml))
    meta = doc['meta']

    cfg = Config.fromfile(args.config)
    if args.target is not None:
        cfg.model.target_latency = args.target
    spec = read_model_config(cfg)
    cfg.model.architecture = spec.architecture
    algo = build_model(cfg.model)  # the table, the target, the mutator
    mutator, cost = algo.mutator, algo.cost
    table = mutator.latency_table
    shape = tuple(algo.input_shape)
    arch = spec.architecture
    threads, batch = table.meta['threads'], table.meta['batch']
    torch.set_num_threads(threads)

    uniform, ratio = mutator.uniform_choices(cost.target, cost.of_choices)
    models = {
        'full': DMCPSubnet(
            arch,
            dict(meta={}, channels=mutator.layer_channels()),
            shape,
        ).eval(),
        'DMCP (latency budget)': DMCPSubnet(arch, subnet_yaml, shape).eval(),
        'uniform (table-fitted)': DMCPSubnet(
            arch,
            dict(meta={}, channels=mutator.layer_channels(uniform)),
            shape,
        ).eval(),
    }
    table_ms = {
        'full': cost.of_choices(mutator.sample_choices('max')),
        'DMCP (latency budget)': meta['latency_ms'],
        'uniform (table-fitted)': cost.of_choices(uniform),
    }
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    runners = {
        k: (lambda m=m: tensor_forward(m, x))  # noqa: B023
        for k, m in models.items()
    }
    load_before = os.getloadavg()
    repeats = []
    for _ in range(args.repeats):
        repeats.append(measure(runners, args.runs, args.warmup))
        time.sleep(1.0)  # apart in time: other moments of the load
    load_after = os.getloadavg()
    measured = {k: statistics.median(r[k] for r in repeats) for k in runners}
    dmcp_name = 'DMCP (latency budget)'
    scaled_ratios = [
        r[dmcp_name] / r['full'] * table_ms['full'] / cost.target
        for r in repeats
    ]
    scale = table_ms['full'] / measured['full']
    rows = []
    for name, model in models.items():
        rows.append(
            dict(
                net=name,
                mflops=count_flops(model, shape, tensor_forward) / 1e6,
                table_ms=table_ms[name],
                measured_ms=measured[name],
                scaled_ms=measured[name] * scale,
            )
        )
    target = cost.target
    dmcp = rows[1]
    result = dict(
        target_ms=target,
        table_ms=dmcp['table_ms'],
        expected_ms=meta['expected_latency_ms'],
        measured_ms=dmcp['measured_ms'],
        scaled_ms=dmcp['scaled_ms'],
        ratio_measured=dmcp['measured_ms'] / target,
        ratio_scaled=dmcp['scaled_ms'] / target,
        budget_fit_scale=meta.get('budget_fit_scale', 1.0),
        scaled_ratios=scaled_ratios,
        load_before=load_before,
        load_after=load_after,
        rows=rows,
    )
    lines = report(args, result, meta, table.meta)
    print('\n'.join(lines), flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return result


def report(
    args: argparse.Namespace, r: dict, meta: dict, table: dict
) -> List[str]:
    """The results as Markdown."""
    stamp = datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    cmd = 'python benchmarks/latency_budget.py ' + ' '.join(
        a for a in sys.argv[1:]
    )
    within = abs(r['ratio_scaled'] - 1) <= 0.10
    lines = [
        '# Latency as the budget: a search on Fashion-MNIST',
        '',
        f'{stamp}; {platform.machine()} {table["device"]}, '
        f'{table["backend"]}, {table["threads"]} thread(s), batch '
        f'{table["batch"]}; each figure the median of {args.repeats} '
        f'timings, each the median of {args.runs} interleaved runs (after '
        f'{args.warmup}); load average (1, 5, 15 min) '
        f'{_load(r["load_before"])} before the timing, '
        f'{_load(r["load_after"])} after.',
        '',
        '```bash',
        cmd.strip(),
        '```',
        '',
        f'Search: `{args.config}`, {args.search_epochs} epochs '
        f'({args.search_epochs // 2} warmup) on {args.search_subset} '
        f'images, seed {args.seed}; the table: '
        f'`{meta["latency_table"]["file"]}`.',
        '',
        '| network | MFLOPs | table ms | measured ms | scaled to the '
        "table's load, ms |",
        '| --- | --- | --- | --- | --- |',
    ]
    for row in r['rows']:
        lines.append(
            f'| {row["net"]} | {row["mflops"]:.2f} | '
            f'{row["table_ms"]:.3f} | {row["measured_ms"]:.3f} | '
            f'{row["scaled_ms"]:.3f} |'
        )
    lines += [
        '',
        f'- target: **{r["target_ms"]:.3f} ms**; the search ended at '
        f'E[latency] {r["expected_ms"]:.3f} ms; the exported subnet is '
        f'{r["table_ms"]:.3f} ms by the table'
        + (
            f' (widths fitted by {r["budget_fit_scale"]})'
            if r['budget_fit_scale'] != 1.0
            else ''
        )
        + '.',
        f'- measured: {r["measured_ms"]:.3f} ms, **{r["ratio_measured"]:.3f}'
        "** x the target as measured; scaled to the table's load by the "
        f'full network measured in the same run: {r["scaled_ms"]:.3f} ms, '
        f'**{r["ratio_scaled"]:.3f}** x the target (the '
        f'{len(r["scaled_ratios"])} timings: {min(r["scaled_ratios"]):.3f} to '
        f'{max(r["scaled_ratios"]):.3f}).',
        f'- within 10% of the target (scaled): **{"yes" if within else "no"}'
        '**.',
    ]
    return lines


def _load(values) -> str:
    return ', '.join(f'{v:.2f}' for v in values)


if __name__ == '__main__':
    main()
