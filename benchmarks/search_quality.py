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

``--variant NAME KEY=VALUE ...`` (repeatable) adds a search setting: each
variant searches with those ``--cfg-options`` on top of the config, and its
subnet and its own FLOPs-matched uniform network are retrained beside the
others, sharing the uniform network at the budget. This compares settings in
one run (retraining is deterministic: one thread, fixed seed), e.g. the
paper's literal budget loss against the default::

    python benchmarks/search_quality.py --variant dmcp \
        --variant paper model.budget_mode=paper \
        param_scheduler.mutator.0.eta_min=100.0

A variant named ``dmcp`` (the default, with no options) keeps the work
directory names of earlier runs, so their finished runs are reused.

``--ablations`` adds one variant per ablation switch of
docs/how_it_works.md ("Ablation switches"), after the ``--variant`` ones,
each named after what it changes (``ablation_variants``; the results file
says which paper table each row stands for): ``bernoulli`` (supplement D),
``original_sandwich`` (Table 4), ``no_warmup`` (Table 3: every search epoch
iterative, so the iterative phase doubles at the same length),
``flops_only`` (Table 5, row 1: alpha on the budget loss alone, no weight
update after warmup; the searched widths would be the same with weight
updates, which reach alpha only through the task loss),
``no_weight_update`` (Table 5, row 2), ``inplace_distill`` (the official
code) and ``label_smooth`` (label smoothing 0.1 in the search, the official
MobileNetV2 setting; the retraining is the same for every row).
``--supernet`` and ``--subnet`` choose the search and retraining configs
(both default to the demo's); the uniform and full networks are cut from
``--supernet``. ``--records FILE`` keeps what each finished run left (a
search's yaml, a retraining's top-1) in a JSON-lines file that outlives the
work directory: a later call with that file, in a new clone or on another
machine, restores those runs instead of rerunning them (see
:class:`RunRecords`). Issue 14, part 4 (MobileNetV2 at 15% of its FLOPs;
24 searches on 10,000 images, about 11 min each with two at a time, then
the retrainings; longer than one stay on a machine, so its runs are kept in
the results folder)::

    C=configs/pruning/dmcp
    python benchmarks/search_quality.py \
        --supernet $C/dmcp_mobilenet-v2_supernet_fashion-mnist.py \
        --subnet $C/dmcp_mobilenet-v2_subnet_fashion-mnist.py \
        --budgets 0.15 --ablations --search-subset 10000 \
        --work-dir work_dirs/search_quality_mobilenet-v2 \
        --records benchmarks/results/search_quality_mobilenet-v2_runs.jsonl \
        --out benchmarks/results/search_quality_mobilenet-v2.md --json

The search and retraining schedules are shortened to fit a CPU (see the
options); runs go two at a time, one thread each.
"""

import argparse
import json
import os
import os.path as osp
import platform
import re
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

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
        '--subnet',
        default=SUBNET,
        help="retraining config of the same network (default: the demo's)",
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
    parser.add_argument(
        '--variant',
        nargs='+',
        action='append',
        metavar='NAME [KEY=VALUE]',
        help='a search setting: a name, then --cfg-options for the search '
        "(repeatable; default: one variant 'dmcp' with the config as is)",
    )
    parser.add_argument(
        '--ablations',
        action='store_true',
        help='add one variant per ablation switch (after the --variant ones)',
    )
    parser.add_argument(
        '--records',
        default=None,
        help='a JSON-lines file of finished runs: added to as runs finish, '
        'restored from in a new work dir (see RunRecords)',
    )
    parser.add_argument('--json', action='store_true')
    parser.add_argument(
        '--out', default=None, help='write the results as Markdown here'
    )
    args = parser.parse_args()
    if args.retrain_epochs < 2:
        # retrain_opts: the schedule's cosine part runs from epoch 1 on
        parser.error(
            '--retrain-epochs must be at least 2 (the first is '
            "the retraining's learning-rate warmup)"
        )
    specs = args.variant or [['dmcp']]
    if args.ablations:
        specs = specs + [
            [name] + options
            for name, options in ablation_variants(args.search_epochs).items()
        ]
    args.variants = parse_variants(specs)
    return args


# name -> the paper's experiment it stands for (docs/how_it_works.md)
ABLATION_PAPER = {
    'bernoulli': 'supplement D (Bernoulli instead of Markov)',
    'original_sandwich': 'Table 4 (original sandwich rule)',
    'no_warmup': 'Table 3 (no warmup, iterative phase doubled)',
    'flops_only': 'Table 5, row 1 (FLOPs loss only, no weight update)',
    'no_weight_update': 'Table 5, row 2 (no weight update after warmup)',
    'inplace_distill': 'official code (in-place distillation, KL, T = 1)',
    'label_smooth': 'official MobileNetV2 code (label smoothing 0.1)',
}


def ablation_variants(search_epochs: int) -> Dict[str, List[str]]:
    """One search variant per ablation switch: name -> cfg-options.

    They come after :func:`search_opts` on the command line, so they
    override it; ``no_warmup`` therefore restates the alpha schedule that
    ``search_opts`` starts after warmup: from epoch 0 over every epoch.

    Args:
        search_epochs (int): ``--search-epochs``.

    Returns:
        dict: In the order of :data:`ABLATION_PAPER`.
    """
    return {
        'bernoulli': ['model.mutator.channel_unit_cfg.process=bernoulli'],
        'original_sandwich': ['model.sandwich=original'],
        'no_warmup': [
            'train_cfg.warmup_epochs=0',
            'param_scheduler.mutator.0.begin=0',
            f'param_scheduler.mutator.0.T_max={search_epochs}',
            f'param_scheduler.mutator.0.end={search_epochs}',
        ],
        'flops_only': [
            'model.arch_loss=flops_only',
            'model.update_weights_after_warmup=False',
        ],
        'no_weight_update': ['model.update_weights_after_warmup=False'],
        'inplace_distill': ['model.distill=inplace'],
        'label_smooth': [
            'model.architecture.head.loss.type=LabelSmoothLoss',
            'model.architecture.head.loss.label_smooth_val=0.1',
        ],
    }


def parse_variants(specs: list) -> Dict[str, List[str]]:
    """``--variant`` lists -> {name: search cfg-options}, in order.

    Raises:
        SystemExit: a repeated name, a name that is not a word, or an
            option without ``=``.
    """
    variants: Dict[str, List[str]] = {}
    for name, *options in specs:
        if not re.fullmatch(r'[A-Za-z0-9_-]+', name) or name in variants:
            raise SystemExit(f'--variant: bad or repeated name {name!r}')
        bad = [o for o in options if '=' not in o]
        if bad:
            raise SystemExit(f'--variant {name}: not KEY=VALUE: {bad[0]!r}')
        variants[name] = options
    return variants


def arm_dirs(name: str) -> Tuple[str, str, str, str]:
    """Result key of the variant's DMCP arm and its matched-uniform arm, and
    the folder names of its search and matched yaml (``dmcp`` keeps the
    names of runs made before variants existed)."""
    if name == 'dmcp':
        return 'dmcp', 'uniform_matched', 'search', 'matched'
    return (
        f'dmcp_{name}',
        f'uniform_matched_{name}',
        f'search_{name}',
        f'matched_{name}',
    )


class RunRecords:
    """What each finished run left, kept in a JSON-lines file that outlives
    its work directory (``--records``).

    The MobileNetV2 benchmark (24 searches, 51 retrainings) takes longer
    than one stay on a machine, and a work directory does not move with the
    code. Each finished run adds one line: its folder under ``--work-dir``,
    its config and options (the work directory and the repository written
    as ``{work_dir}`` and ``{repo}``), the commit of the code that decides a
    run (:func:`code_commit`), and
    what the benchmark reads of it: a search's yaml, a retraining's final
    top-1. A later call with the same file restores those runs into its
    work directory instead of running them; a record of the same folder
    made with another config or other options stops the benchmark.

    Args:
        path (str, optional): The JSON-lines file; None keeps no records.
        work_dir (str): The absolute ``--work-dir``.
    """

    def __init__(self, path: Optional[str], work_dir: str) -> None:
        self.path = path
        self.work_dir = work_dir
        self.lock = threading.Lock()
        self.records: Dict[str, dict] = {}
        self.restored: List[str] = []
        if path and osp.exists(path):
            with open(path) as f:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        self.records[record['run']] = record

    def _portable(self, text: str) -> str:
        return text.replace(self.work_dir, '{work_dir}').replace(
            REPO, '{repo}'
        )

    def _key(self, config: str, work_dir: str, options: list) -> tuple:
        run = osp.relpath(work_dir, self.work_dir)
        return (
            run,
            self._portable(config),
            [self._portable(o) for o in options],
        )

    def restore(self, config: str, work_dir: str, options: list) -> bool:
        """Write the recorded run's results into ``work_dir``.

        Returns:
            bool: False when the run has no record.

        Raises:
            SystemExit: The record was made with another config or options.
        """
        run, config, options = self._key(config, work_dir, options)
        record = self.records.get(run)
        if record is None:
            return False
        if (record['config'], record['options']) != (config, options):
            raise SystemExit(
                f'{self.path}: {run} was recorded with other settings '
                f'({record["config"]} {record["options"]}, not {config} '
                f'{options}); use another --records file'
            )
        os.makedirs(work_dir, exist_ok=True)
        if 'yaml' in record:
            with open(
                osp.join(work_dir, 'DMCP_SUBNET_IMAGENET.yaml'), 'w'
            ) as f:
                f.write(record['yaml'])
        if 'top1' in record:  # where last_top1 reads it, as mmengine logs it
            logs = osp.join(work_dir, 'restored', 'vis_data')
            os.makedirs(logs, exist_ok=True)
            with open(osp.join(logs, 'scalars.json'), 'w') as f:
                f.write(json.dumps({'accuracy/top1': record['top1']}) + '\n')
        open(osp.join(work_dir, 'done'), 'w').close()
        with self.lock:
            self.restored.append(run)
        return True

    def add(self, config: str, work_dir: str, options: list) -> None:
        """Record a finished run (no-op without a file or if recorded)."""
        run, config, options = self._key(config, work_dir, options)
        if not self.path or run in self.records:
            return
        record = dict(
            run=run, config=config, options=options, commit=code_commit()
        )
        path = osp.join(work_dir, 'DMCP_SUBNET_IMAGENET.yaml')
        if osp.exists(path):
            record['yaml'] = open(path).read()
        else:
            record['top1'] = last_top1(work_dir)
        with self.lock:
            self.records[run] = record
            with open(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')

    def commits(self) -> List[str]:
        """The commits of every record, in order of first appearance."""
        return list(dict.fromkeys(r['commit'] for r in self.records.values()))


def code_commit() -> str:
    """The last commit that changed the code that decides a run
    (``projects``, ``configs``, ``tools``), ``+dirty`` if it is changed in
    the work tree: runs with the same commit ran the same code."""
    paths = ['--', 'projects', 'configs', 'tools']
    git = ['git', '-C', REPO]
    last = subprocess.run(
        git + ['log', '-1', '--format=%h'] + paths,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dirty = subprocess.run(
        git + ['diff', '--quiet', 'HEAD'] + paths
    ).returncode
    return (last or 'unknown') + ('+dirty' if dirty else '')


def run(
    config: str,
    work_dir: str,
    options: list,
    records: Optional[RunRecords] = None,
) -> None:
    """tools/train.py in a subprocess with one thread; log in work_dir.

    A run that finished before (its ``done`` file, or its line in
    ``records``) is reused; one that was stopped part-way resumes from its
    last checkpoint. A finished run is added to ``records``.

    Args:
        config (str): The config file.
        work_dir (str): The run's work directory.
        options (list): ``--cfg-options`` for tools/train.py.
        records (RunRecords, optional): Finished runs kept beyond the work
            directory. Defaults to None.
    """
    os.makedirs(work_dir, exist_ok=True)
    done = osp.join(work_dir, 'done')
    if not osp.exists(done) and not (
        records and records.restore(config, work_dir, options)
    ):
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
    if records:
        records.add(config, work_dir, options)


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


def arms(variants: Dict[str, List[str]]) -> List[str]:
    """Result keys of every retrained network, in table order."""
    keys = ['uniform']
    for name in variants:
        dmcp, matched, _, _ = arm_dirs(name)
        keys += [dmcp, matched]
    return keys


def search_variant(
    args: argparse.Namespace,
    fraction: float,
    seed: int,
    target: int,
    name: str,
) -> dict:
    """Search with one variant, then retrain its subnet (only subprocesses:
    safe to run in a thread)."""
    import yaml

    root = osp.join(args.work_dir, f'budget{fraction:g}_seed{seed}')
    key, _, search_dir, _ = arm_dirs(name)
    search = osp.join(root, search_dir)
    run(
        args.supernet,
        search,
        search_opts(args, target, seed) + args.variants[name],
        args.run_records,
    )
    path = osp.join(search, 'DMCP_SUBNET_IMAGENET.yaml')
    meta = yaml.safe_load(open(path))['meta']
    work = osp.join(root, f'retrain_{key}')
    run(
        args.subnet,
        work,
        retrain_opts(args, seed) + [f'model.subnet={path}'],
        args.run_records,
    )
    return dict(
        yaml=path,
        top1=last_top1(work),
        expected_flops=meta['expected_flops'],
        in_band=0.99 * target <= meta['expected_flops'] <= target,
        budget_fit=meta.get('budget_fit_scale', 1.0),
    )


def retrain_uniform(
    args: argparse.Namespace, fraction: float, seed: int, uniform_yaml: str
) -> dict:
    """Retrain the uniform network at the budget (subprocess only)."""
    root = osp.join(args.work_dir, f'budget{fraction:g}_seed{seed}')
    work = osp.join(root, 'retrain_uniform')
    run(
        args.subnet,
        work,
        retrain_opts(args, seed) + [f'model.subnet={uniform_yaml}'],
        args.run_records,
    )
    return dict(yaml=uniform_yaml, top1=last_top1(work))


def matched_uniform_yaml(args: argparse.Namespace, r: dict, name: str) -> str:
    """The uniform-width network with the most FLOPs not above the variant's
    DMCP subnet's own FLOPs (built in the main thread)."""
    import yaml

    key, _, _, folder = arm_dirs(name)
    root = osp.join(args.work_dir, f'budget{r["budget"]:g}_seed{r["seed"]}')
    folder = osp.join(root, folder)
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, 'uniform.yaml')
    if not osp.exists(path):
        flops = yaml.safe_load(open(r[key]['yaml']))['meta']['flops']
        write_reference_yamls(folder, flops, args.supernet)
    return path


def retrain_matched(
    args: argparse.Namespace, r: dict, name: str, path: str
) -> dict:
    """Retrain a matched uniform network (subprocess only)."""
    _, matched, _, _ = arm_dirs(name)
    root = osp.join(args.work_dir, f'budget{r["budget"]:g}_seed{r["seed"]}')
    work = osp.join(root, f'retrain_{matched}')
    run(
        args.subnet,
        work,
        retrain_opts(args, r['seed']) + [f'model.subnet={path}'],
        args.run_records,
    )
    return dict(yaml=path, top1=last_top1(work))


def add_flops_and_params(
    results: list, keys: List[str], subnet: str = SUBNET
) -> None:
    """FLOPs and params of each retrained network, from its yaml, built by
    the retraining config ``subnet``."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from projects.dmcp.models.flops import count_flops, count_params
    from projects.dmcp.registry import MODELS

    cfg = Config.fromfile(osp.join(REPO, subnet))
    cache = {}
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        for r in results:
            for key in keys:
                path = r[key]['yaml']
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
                r[key]['flops'], r[key]['params'] = cache[path]


def add_width_ratios(results: list, keys: List[str], full_yaml: str) -> None:
    """Retained / full channels of every layer of each DMCP subnet: how far
    the search told the layers apart (a uniform network has one ratio)."""
    import yaml

    full = yaml.safe_load(open(full_yaml))['channels']
    for r in results:
        for key in keys:
            channels = yaml.safe_load(open(r[key]['yaml']))['channels']
            ratios = [channels[k] / full[k] for k in channels]
            r[key]['width_ratio_min'] = min(ratios)
            r[key]['width_ratio_max'] = max(ratios)


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


def summarise(results: list, budgets: list, keys: List[str]) -> dict:
    """Per budget and arm: top-1 mean and spread, FLOPs, params; for each
    DMCP arm also the searches in band and the spread of retained widths."""
    summary = {}
    for b in budgets:
        rows = [r for r in results if r['budget'] == b]
        entry = dict(target=rows[0]['target'], searches=len(rows))
        for key in keys:
            top1 = [r[key]['top1'] for r in rows]
            entry[key] = dict(
                top1_mean=sum(top1) / len(top1),
                top1_min=min(top1),
                top1_max=max(top1),
                top1=top1,
                flops=[r[key]['flops'] for r in rows],
                params=[r[key]['params'] for r in rows],
            )
            if 'in_band' in rows[0][key]:
                entry[key].update(
                    searches_in_band=sum(r[key]['in_band'] for r in rows),
                    expected_flops=[r[key]['expected_flops'] for r in rows],
                    width_ratio_min=min(
                        r[key]['width_ratio_min'] for r in rows
                    ),
                    width_ratio_max=max(
                        r[key]['width_ratio_max'] for r in rows
                    ),
                )
        summary[f'{b:g}'] = entry
    return summary


def row_labels(variants: Dict[str, List[str]]) -> List[Tuple[str, str]]:
    """(result key, table label) of every row, in table order: each
    variant's subnet, then the uniform network at its FLOPs (the first
    variant's followed by the uniform network at the budget)."""
    rows = []
    for name, options in variants.items():
        dmcp, matched, _, _ = arm_dirs(name)
        which = 'DMCP' if name == 'dmcp' else f'DMCP {name!r}'
        label = which + ' (Expected Sampling)'
        if options:
            label += ': ' + ', '.join(f'`{o}`' for o in options)
        rows.append((dmcp, label))
        if len(rows) == 1:
            rows.append(('uniform', 'uniform width at the budget'))
        rows.append((matched, f"uniform width at the {which} subnet's FLOPs"))
    return rows


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
        f'same schedule and seed for every network; top-1 on the 10,000 test '
        f'images; seeds {args.seeds}. Search config `{args.supernet}`, alpha '
        f'optimizer `{alpha_optimizer(args.supernet)}`.',
        *records_note(getattr(args, 'run_records', None)),
        '',
        '| budget | target | network | FLOPs | top-1 mean | top-1 min..max '
        '| final E[FLOPs] in [0.99T, T] (E/T min..max) '
        '| retained/full widths |',
        '| --- | ---: | --- | ---: | ---: | ---: | --- | --- |',
    ]
    for b, e in summary.items():
        for key, label in row_labels(args.variants):
            s = e[key]
            flops = sum(s['flops']) / len(s['flops'])
            band = widths = ''
            if 'searches_in_band' in s:
                ratios = [f / e['target'] for f in s['expected_flops']]
                band = (
                    f'{s["searches_in_band"]}/{e["searches"]} searches '
                    f'(E/T {min(ratios):.3f}..{max(ratios):.3f})'
                )
                widths = (
                    f'{s["width_ratio_min"]:.2f}..{s["width_ratio_max"]:.2f}'
                )
            lines.append(
                f'| {float(b):.0%} | {e["target"] / 1e6:.2f}M | {label} | '
                f'{flops / 1e6:.2f}M | {s["top1_mean"]:.2f} | '
                f'{s["top1_min"]:.2f}..{s["top1_max"]:.2f} | {band} | '
                f'{widths} |'
            )
    lines += ablation_notes(args.variants)
    return '\n'.join(lines)


def records_note(records: Optional[RunRecords]) -> List[str]:
    """The line saying which runs came from ``--records`` and the commits
    of every recorded run (none without records)."""
    if not records or not records.path:
        return []
    return [
        '',
        f'Runs kept in `{osp.relpath(records.path, REPO)}`: '
        f'{len(records.records)}, made at commits '
        f'{", ".join(records.commits()) or "none"}; '
        f'{len(records.restored)} of them restored from it, not rerun, in '
        'this call.',
    ]


def ablation_notes(variants: Dict[str, List[str]]) -> List[str]:
    """Lines under the table naming the paper experiment of each ablation
    row (none without ablation variants)."""
    names = [name for name in variants if name in ABLATION_PAPER]
    if not names:
        return []
    lines = ['', "Ablation rows and the paper's experiments they repeat:", '']
    for name in names:
        lines.append(f'- `{name}`: {ABLATION_PAPER[name]}')
    return lines


def run_all(
    args: argparse.Namespace, results: list, uniform: Dict[float, tuple]
) -> None:
    """Every run of the benchmark, ``args.jobs`` at a time, results into
    ``results``.

    Seed by seed: the seed's searches (each followed by its DMCP subnet's
    retraining), then its uniform network at the budget; each search's
    FLOPs-matched uniform network is retrained as soon as a worker is free
    after the search. A call stopped part-way therefore leaves whole seeds
    (and, with ``--records``, records of them).

    Args:
        args (argparse.Namespace): The options.
        results (list): One dict per (budget, seed), filled in.
        uniform (dict): Budget -> (target, uniform yaml).
    """
    queue = deque()
    for r in results:
        queue.extend(('search', r, name) for name in args.variants)
        queue.append(('uniform', r, None))
    ready = deque()  # matched retrainings, before any queued run
    running = {}

    def call(kind: str, r: dict, name: str) -> tuple:
        """The run's function, its arguments and its result key."""
        if kind == 'search':
            where = (r['budget'], r['seed'], r['target'], name)
            return search_variant, where, arm_dirs(name)[0]
        if kind == 'uniform':
            where = (r['budget'], r['seed'], uniform[r['budget']][1])
            return retrain_uniform, where, 'uniform'
        where = (r, name, matched_uniform_yaml(args, r, name))
        return retrain_matched, where, arm_dirs(name)[1]

    with ThreadPoolExecutor(args.jobs) as pool:
        while queue or ready or running:
            while len(running) < args.jobs and (ready or queue):
                kind, r, name = (ready or queue).popleft()
                fn, where, key = call(kind, r, name)
                running[pool.submit(fn, args, *where)] = (kind, r, name, key)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                kind, r, name, key = running.pop(future)
                r[key] = future.result()
                if kind == 'search':
                    ready.append(('matched', r, name))


def main() -> None:
    args = parse_args()
    start = time.time()
    prepare_data()
    args.work_dir = osp.abspath(args.work_dir)
    args.run_records = RunRecords(args.records, args.work_dir)
    import yaml

    full = write_reference_yamls(args.work_dir, None, args.supernet)['full']
    full_flops = yaml.safe_load(open(full))['meta']['flops']
    uniform = {}
    for b in args.budgets:
        target = int(full_flops * b)
        folder = osp.join(args.work_dir, f'budget{b:g}')
        os.makedirs(folder, exist_ok=True)
        yamls = write_reference_yamls(folder, target, args.supernet)
        uniform[b] = (target, yamls['uniform'])
    results = [
        dict(budget=b, seed=s, target=uniform[b][0])
        for b in args.budgets
        for s in args.seeds
    ]
    run_all(args, results, uniform)
    keys = arms(args.variants)
    add_flops_and_params(results, keys, args.subnet)
    add_width_ratios(
        results, [arm_dirs(name)[0] for name in args.variants], full
    )
    summary = summarise(results, args.budgets, keys)
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
