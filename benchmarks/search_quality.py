"""Does DMCP find better subnets than uniform width? Fashion-MNIST, CPU.

For each budget (default 50% and 25% of the full network's FLOPs) and seed
(default 0, 1, 2):

1. a DMCP search (the demo's supernet config, ResNet-18 with CIFAR stem at a
   quarter width, one input channel) at that budget -> Expected Sampling yaml;
2. three networks, each trained from scratch with the same schedule and
   seed (the demo's subnet config) and tested on the 10,000 test images:
   the DMCP subnet; the uniform-width network with the most FLOPs not above
   the budget; and the uniform-width network with the most FLOPs not above
   the DMCP subnet's own FLOPs (the comparison at equal cost, since a short
   search can end below its target).

It prints, per budget, the mean and spread (min..max) of top-1 of each, their
FLOPs, and whether each search's final E[FLOPs] lay in
``[gamma * T, T]``; ``--json`` adds one JSON object on the last line, and
``--out`` writes the table (with date and machine) as Markdown.

The search and retraining schedules are shortened to fit a CPU (see the
options); runs go two at a time, one thread each.
"""

import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from demo.fashion_mnist_demo import (  # noqa: E402
    SUBNET,
    SUPERNET,
    prepare_data,
    write_reference_yamls,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/search_quality')
    parser.add_argument(
        '--supernet',
        default=SUPERNET,
        help="search config (default: the demo's)",
    )
    parser.add_argument(
        '--budgets',
        type=float,
        nargs='+',
        default=[0.5, 0.25],
        help='targets as fractions of the full FLOPs',
    )
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--search-epochs', type=int, default=6)
    parser.add_argument('--search-subset', type=int, default=20000)
    parser.add_argument('--retrain-epochs', type=int, default=3)
    parser.add_argument('--retrain-subset', type=int, default=15000)
    parser.add_argument(
        '--jobs', type=int, default=2, help='runs at once (one thread each)'
    )
    parser.add_argument('--json', action='store_true')
    parser.add_argument(
        '--out', default=None, help='write the results as Markdown here'
    )
    return parser.parse_args()


def run(config: str, work_dir: str, options: list) -> None:
    """tools/train.py in a subprocess with one thread; log in work_dir.

    A run that finished before (its ``done`` file) is reused; one that was
    stopped part-way resumes from its last checkpoint."""
    os.makedirs(work_dir, exist_ok=True)
    done = osp.join(work_dir, 'done')
    if osp.exists(done):
        return
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), config]
    cmd += ['--work-dir', work_dir]
    if osp.exists(osp.join(work_dir, 'last_checkpoint')):
        cmd.append('--resume')
    cmd += ['--cfg-options'] + options
    with open(osp.join(work_dir, 'train.log'), 'a') as log:
        code = subprocess.call(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if code:
        raise RuntimeError(f'{config} failed; see {work_dir}/train.log')
    open(done, 'w').close()


ARMS = ('dmcp', 'uniform', 'uniform_matched')


def last_top1(work_dir: str) -> float:
    """Top-1 of the run's final validation, from mmengine's scalars.json."""
    import glob

    top1 = None
    for path in sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    ):
        for line in open(path):
            row = json.loads(line)
            if 'accuracy/top1' in row:
                top1 = float(row['accuracy/top1'])
    if top1 is None:
        raise RuntimeError(f'no accuracy/top1 logged in {work_dir}')
    return top1


def search_opts(args: argparse.Namespace, target: int, seed: int) -> list:
    warmup = args.search_epochs // 2
    return [
        f'model.target_flops={target}',
        f'randomness.seed={seed}',
        f'train_cfg.max_epochs={args.search_epochs}',
        f'train_cfg.warmup_epochs={warmup}',
        f'train_cfg.val_interval={args.search_epochs}',
        f'train_dataloader.dataset.indices={args.search_subset}',
        f'param_scheduler.architecture.0.T_max={args.search_epochs}',
        f'param_scheduler.architecture.0.end={args.search_epochs}',
        f'param_scheduler.mutator.0.T_max={args.search_epochs - warmup}',
        f'param_scheduler.mutator.0.begin={warmup}',
        f'param_scheduler.mutator.0.end={args.search_epochs}',
    ]


def retrain_opts(args: argparse.Namespace, seed: int) -> list:
    return [
        f'randomness.seed={seed}',
        f'train_cfg.max_epochs={args.retrain_epochs}',
        f'train_cfg.val_interval={args.retrain_epochs}',
        f'train_dataloader.dataset.indices={args.retrain_subset}',
        f'param_scheduler.1.T_max={args.retrain_epochs - 1}',
        f'param_scheduler.1.end={args.retrain_epochs}',
        f'default_hooks.checkpoint.interval={args.retrain_epochs}',
    ]


def one_seed(
    args: argparse.Namespace,
    fraction: float,
    seed: int,
    target: int,
    uniform_yaml: str,
) -> dict:
    """Search, then retrain DMCP and uniform, for one budget and seed (only
    subprocesses: safe to run in a thread)."""
    import yaml

    root = osp.join(args.work_dir, f'budget{fraction:g}_seed{seed}')
    run(
        args.supernet,
        osp.join(root, 'search'),
        search_opts(args, target, seed),
    )
    dmcp_yaml = osp.join(root, 'search', 'DMCP_SUBNET_IMAGENET.yaml')
    meta = yaml.safe_load(open(dmcp_yaml))['meta']
    out = dict(
        budget=fraction,
        seed=seed,
        target=target,
        expected_flops=meta['expected_flops'],
        in_band=0.99 * target <= meta['expected_flops'] <= target,
        budget_fit=meta.get('budget_fit_scale', 1.0),
        yamls=dict(dmcp=dmcp_yaml, uniform=uniform_yaml),
    )
    for name in ('dmcp', 'uniform'):
        work = osp.join(root, f'retrain_{name}')
        run(
            SUBNET,
            work,
            retrain_opts(args, seed) + [f'model.subnet={out["yamls"][name]}'],
        )
        out[name] = dict(top1=last_top1(work))
    return out


def matched_uniform_yamls(args: argparse.Namespace, results: list) -> None:
    """For each search, the uniform-width network with the most FLOPs not
    above the DMCP subnet's own FLOPs (built in the main thread)."""
    for r in results:
        root = osp.join(
            args.work_dir, f'budget{r["budget"]:g}_seed{r["seed"]}'
        )
        folder = osp.join(root, 'matched')
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, 'uniform.yaml')
        if not osp.exists(path):
            import yaml

            flops = yaml.safe_load(open(r['yamls']['dmcp']))['meta']['flops']
            write_reference_yamls(folder, flops)
        r['yamls']['uniform_matched'] = path


def retrain_matched(args: argparse.Namespace, r: dict) -> None:
    """Retrain the matched uniform network (subprocess only)."""
    root = osp.join(args.work_dir, f'budget{r["budget"]:g}_seed{r["seed"]}')
    work = osp.join(root, 'retrain_uniform_matched')
    run(
        SUBNET,
        work,
        retrain_opts(args, r['seed'])
        + [f'model.subnet={r["yamls"]["uniform_matched"]}'],
    )
    r['uniform_matched'] = dict(top1=last_top1(work))


def add_flops_and_params(results: list) -> None:
    """FLOPs and params of each retrained network, from its yaml."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from projects.dmcp.models.flops import count_flops, count_params
    from projects.dmcp.registry import MODELS

    cfg = Config.fromfile(osp.join(REPO, SUBNET))
    cache = {}
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for r in results:
            for name in ARMS:
                path = r['yamls'][name]
                if path not in cache:
                    model = MODELS.build(dict(cfg.model, subnet=path))
                    cache[path] = (
                        count_flops(
                            model,
                            cfg.input_shape,
                            lambda m, x: m(x, mode='tensor'),
                        ),
                        count_params(model),
                    )
                r[name]['flops'], r[name]['params'] = cache[path]


def add_width_ratios(results: list, full_yaml: str) -> None:
    """Retained / full channels of every layer of each DMCP subnet: how far
    the search told the layers apart (a uniform network has one ratio)."""
    import yaml

    full = yaml.safe_load(open(full_yaml))['channels']
    for r in results:
        channels = yaml.safe_load(open(r['yamls']['dmcp']))['channels']
        ratios = [channels[k] / full[k] for k in channels]
        r['dmcp']['width_ratio_min'] = min(ratios)
        r['dmcp']['width_ratio_max'] = max(ratios)


def alpha_optimizer(config: str) -> str:
    """The search config's alpha optimizer, in words."""
    from mmengine.config import Config

    wrapper = Config.fromfile(config).optim_wrapper.mutator
    opt = dict(wrapper.optimizer)
    text = (
        f'{opt.pop("type")}({", ".join(f"{k}={v}" for k, v in opt.items())})'
    )
    if wrapper.get('clip_grad'):
        text += f', clip_grad={dict(wrapper.clip_grad)}'
    return text


def summarise(results: list, budgets: list) -> dict:
    summary = {}
    for b in budgets:
        rows = [r for r in results if r['budget'] == b]
        entry = {}
        for name in ARMS:
            top1 = [r[name]['top1'] for r in rows]
            entry[name] = dict(
                top1_mean=sum(top1) / len(top1),
                top1_min=min(top1),
                top1_max=max(top1),
                top1=top1,
                flops=[r[name]['flops'] for r in rows],
                params=[r[name]['params'] for r in rows],
            )
        entry['dmcp']['width_ratio_min'] = min(
            r['dmcp']['width_ratio_min'] for r in rows
        )
        entry['dmcp']['width_ratio_max'] = max(
            r['dmcp']['width_ratio_max'] for r in rows
        )
        entry['searches_in_band'] = sum(r['in_band'] for r in rows)
        entry['searches'] = len(rows)
        entry['expected_flops'] = [r['expected_flops'] for r in rows]
        entry['target'] = rows[0]['target']
        summary[f'{b:g}'] = entry
    return summary


def table(summary: dict, args: argparse.Namespace, minutes: float) -> str:
    lines = [
        '# DMCP vs uniform width on Fashion-MNIST',
        '',
        f'Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on '
        f'{platform.machine()} ({os.cpu_count()} cores, '
        f'{platform.processor() or platform.platform()}), '
        f'{minutes:.0f} min, by `python {" ".join(sys.argv)}`.',
        '',
        f'Search: {args.search_epochs} epochs ({args.search_epochs // 2} '
        f'warmup) on {args.search_subset} training images; retraining: '
        f'{args.retrain_epochs} epochs on {args.retrain_subset} images, the '
        f'same schedule and seed for both; top-1 on the 10,000 test images; '
        f'seeds {args.seeds}. Search config `{args.supernet}`, alpha '
        f'optimizer `{alpha_optimizer(args.supernet)}`.',
        '',
        '| budget | target | network | FLOPs | top-1 mean | top-1 min..max '
        '| final E[FLOPs] in [0.99T, T] | retained/full widths |',
        '| --- | ---: | --- | ---: | ---: | ---: | --- | --- |',
    ]
    for b, e in summary.items():
        for name, label in (
            ('dmcp', 'DMCP (Expected Sampling)'),
            ('uniform', 'uniform width at the budget'),
            ('uniform_matched', "uniform width at the DMCP subnet's FLOPs"),
        ):
            s = e[name]
            flops = sum(s['flops']) / len(s['flops'])
            band = widths = ''
            if name == 'dmcp':
                band = f'{e["searches_in_band"]}/{e["searches"]} searches'
                widths = (
                    f'{s["width_ratio_min"]:.2f}..{s["width_ratio_max"]:.2f}'
                )
            lines.append(
                f'| {float(b):.0%} | {e["target"] / 1e6:.2f}M | {label} | '
                f'{flops / 1e6:.2f}M | {s["top1_mean"]:.2f} | '
                f'{s["top1_min"]:.2f}..{s["top1_max"]:.2f} | {band} | '
                f'{widths} |'
            )
    return '\n'.join(lines)


def main() -> None:
    args = parse_args()
    start = time.time()
    prepare_data()
    args.work_dir = osp.abspath(args.work_dir)
    import yaml

    full = write_reference_yamls(args.work_dir, None)['full']
    full_flops = yaml.safe_load(open(full))['meta']['flops']
    uniform = {}
    for b in args.budgets:
        target = int(full_flops * b)
        folder = osp.join(args.work_dir, f'budget{b:g}')
        os.makedirs(folder, exist_ok=True)
        uniform[b] = (target, write_reference_yamls(folder, target)['uniform'])
    jobs = [(b, s) for b in args.budgets for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(
            pool.map(
                lambda job: one_seed(args, job[0], job[1], *uniform[job[0]]),
                jobs,
            )
        )
        matched_uniform_yamls(args, results)
        list(pool.map(lambda r: retrain_matched(args, r), results))
    add_flops_and_params(results)
    add_width_ratios(results, full)
    summary = summarise(results, args.budgets)
    text = table(summary, args, (time.time() - start) / 60)
    print(text)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text + '\n')
        with open(osp.splitext(args.out)[0] + '.json', 'w') as f:
            json.dump(dict(summary=summary, runs=results), f, indent=2)
    if args.json:
        print(json.dumps(summary))


if __name__ == '__main__':
    main()
