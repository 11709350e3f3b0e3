"""DMCP end to end on real data, on the CPU: ``make demo``.

1. Fashion-MNIST: Debian's ``dataset-fashion-mnist`` (installed when missing
   and running as root; otherwise the command to run is printed), its gzipped
   idx files extracted once into ``data/fashion-mnist`` for mmpretrain's own
   ``FashionMNIST`` dataset.
2. DMCP search (``tools/train.py`` on
   ``configs/pruning/dmcp/dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py``)
   at a quarter of the full network's FLOPs -> ``DMCP_SUBNET_IMAGENET.yaml``
   (Expected Sampling).
3. The uniform-width network with the most FLOPs not above the same target,
   and the full network, written as yamls of the same format.
4. The three retrained from scratch with one schedule (``tools/train.py`` on
   ``..._subnet_fashion-mnist.py``), then evaluated on the 10,000 test images.
   ``--jobs`` runs go side by side, one core each by default: the full and
   the uniform network do not wait for the search.
5. A table (FLOPs, params, top-1) printed and written, with the yamls and the
   logs, into the work dir (default ``work_dirs/demo_fashion_mnist``).
"""

import argparse
import gzip
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.dmcp.utils import REPO_ROOT as REPO

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
DATA_DIR = osp.join(REPO, 'data', 'fashion-mnist')
IDX_FILES = (
    'train-images-idx3-ubyte',
    'train-labels-idx1-ubyte',
    't10k-images-idx3-ubyte',
    't10k-labels-idx1-ubyte',
)
SUPERNET = (
    'configs/pruning/dmcp/dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py'
)
SUBNET = 'configs/pruning/dmcp/dmcp_resnet18-cifar-w16_subnet_fashion-mnist.py'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo_fashion_mnist')
    parser.add_argument(
        '--data-dir',
        default=DATA_DIR,
        help="where the idx files are (extracted there from Debian's "
        'package when missing; default: data/fashion-mnist)',
    )
    parser.add_argument(
        '--search-epochs',
        type=int,
        default=None,
        help='override the search epochs (half are warmup)',
    )
    parser.add_argument(
        '--retrain-epochs',
        type=int,
        default=None,
        help='override the retraining epochs',
    )
    parser.add_argument(
        '--train-subset',
        type=int,
        default=None,
        help='retrain on the first N training images',
    )
    parser.add_argument(
        '--target',
        default=None,
        help='target FLOPs (default: the config, 7M)',
    )
    parser.add_argument(
        '--jobs',
        type=int,
        default=min(2, os.cpu_count() or 1),
        help='trainings run side by side, each with cpu_count/jobs threads '
        '(default: 2, or 1 on a single core)',
    )
    return parser.parse_args()


def prepare_data(data_dir: str = DATA_DIR) -> None:
    """Extract Debian's Fashion-MNIST idx files into ``data_dir``."""
    if all(osp.exists(osp.join(data_dir, f)) for f in IDX_FILES):
        return
    if not all(osp.exists(osp.join(DEBIAN_DIR, f + '.gz')) for f in IDX_FILES):
        if os.geteuid() == 0 and shutil.which('apt-get'):
            print("Installing Debian's dataset-fashion-mnist ...", flush=True)
            env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
            subprocess.run(['apt-get', 'update', '-qq'], check=True, env=env)
            subprocess.run(
                ['apt-get', 'install', '-y', '-qq', 'dataset-fashion-mnist'],
                check=True,
                env=env,
            )
        else:
            sys.exit(
                'Fashion-MNIST is missing. Install it with:\n'
                '    sudo apt-get install dataset-fashion-mnist\n'
                'then run `make demo` again.'
            )
    os.makedirs(data_dir, exist_ok=True)
    for name in IDX_FILES:
        with (
            gzip.open(osp.join(DEBIAN_DIR, name + '.gz')) as src,
            open(osp.join(data_dir, name), 'wb') as dst,
        ):
            shutil.copyfileobj(src, dst)
    print(f'Fashion-MNIST extracted into {data_dir}', flush=True)


def train(
    name: str, config: str, work_dir: str, options: list, threads: int
) -> float:
    """Run tools/train.py with ``threads`` threads, its log into
    work_dir/train.log; progress lines are echoed prefixed with ``[name]``.

    Returns:
        float: The wall time in seconds.

    Raises:
        RuntimeError: If the training fails.
    """
    os.makedirs(work_dir, exist_ok=True)
    cmd = [
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'),
        config,
        '--work-dir',
        work_dir,
    ]
    if options:
        cmd += ['--cfg-options'] + options
    print(f'[{name}] $ ' + ' '.join(cmd), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env.setdefault('OMP_NUM_THREADS', str(threads))
    start = time.time()
    with open(osp.join(work_dir, 'train.log'), 'w') as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in proc.stdout:
            log.write(line)
            if 'mmengine - INFO - Epoch' in line or 'Error' in line:
                msg = line.rstrip().split(' - INFO - ')[-1]
                if len(msg) > 150:  # the search's lines: start and end
                    msg = msg[:90] + ' ... ' + msg[-55:]
                print(f'[{name}] {msg}', flush=True)
        if proc.wait():
            raise RuntimeError(f'{config} failed; see {work_dir}/train.log')
    seconds = time.time() - start
    print(f'[{name}] done in {seconds:.0f} s', flush=True)
    return seconds


def write_reference_yamls(
    work_dir: str, target, supernet: str = SUPERNET
) -> dict:
    """The uniform-width and the full network as subnet yamls.

    Args:
        work_dir (str): Folder of ``uniform.yaml`` and ``full.yaml``.
        target (int | str, optional): FLOPs budget of the uniform network;
            None for the supernet config's own target.
        supernet (str): The search config whose supernet they cut. Defaults
            to the demo's.

    Returns:
        dict: ``{'uniform': path, 'full': path}``.
    """
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from projects.dmcp.models.subnet_file import dump_subnet
    from projects.dmcp.registry import MODELS

    cfg = Config.fromfile(osp.join(REPO, supernet))
    if target is not None:
        cfg.model.target_flops = target
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        algo = MODELS.build(cfg.model)
    mutator = algo.mutator
    paths = {}
    for name, (choices, ratio) in {
        'uniform': mutator.uniform_choices(algo.target_flops),
        'full': (mutator.sample_choices('max'), 1.0),
    }.items():
        path = osp.join(work_dir, f'{name}.yaml')
        dump_subnet(
            path,
            mutator.layer_channels(choices),
            dict(
                algorithm=name,
                sampling=name,
                width_ratio=round(ratio, 4),
                target_flops=int(algo.target_flops),
                flops=mutator.subnet_flops(choices),
                input_shape=list(algo.input_shape),
                supernet=supernet,
            ),
        )
        paths[name] = path
    return paths


def evaluate(config: str, work_dir: str, subnet: str, data_dir: str) -> dict:
    """Test the last checkpoint of a retraining; FLOPs, params, top-1."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from projects.dmcp.models.flops import count_flops, count_params
    from projects.dmcp.models.subnet_file import load_subnet

    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.model.subnet = subnet
    cfg.test_dataloader.dataset.data_root = data_dir
    cfg.work_dir = osp.join(work_dir, 'test')
    cfg.log_level = 'WARNING'
    cfg.load_from = osp.join(
        work_dir, open(osp.join(work_dir, 'last_checkpoint')).read().strip()
    )
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    model = runner.model
    return dict(
        flops=count_flops(
            model, cfg.input_shape, lambda m, x: m(x, mode='tensor')
        ),
        yaml_flops=load_subnet(subnet)['meta']['flops'],
        params=count_params(model),
        top1=float(metrics['accuracy/top1']),
    )


def main() -> None:
    args = parse_args()
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()
    data_dir = osp.abspath(args.data_dir)
    prepare_data(data_dir)
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)

    data_opts = [
        f'{loader}.dataset.data_root={data_dir}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]
    search_opts = list(data_opts)
    if args.search_epochs:
        warmup = args.search_epochs // 2
        search_opts += [
            f'train_cfg.max_epochs={args.search_epochs}',
            f'train_cfg.warmup_epochs={warmup}',
            f'train_cfg.val_interval={args.search_epochs}',
        ]
    if args.target:
        search_opts.append(f'model.target_flops={args.target}')
    retrain_opts = list(data_opts)
    if args.retrain_epochs:
        retrain_opts += [
            f'train_cfg.max_epochs={args.retrain_epochs}',
            f'train_cfg.val_interval={args.retrain_epochs}',
        ]
    if args.train_subset:
        retrain_opts.append(
            f'train_dataloader.dataset.indices={args.train_subset}'
        )

    print(
        f'\n== 1/3 DMCP search, and the full and uniform networks retrained '
        f'from scratch ({jobs} at a time, {threads} thread(s) each) ==',
        flush=True,
    )
    yamls = write_reference_yamls(work_dir, args.target)
    yamls['dmcp'] = osp.join(work_dir, 'DMCP_SUBNET_IMAGENET.yaml')
    seconds = {}

    def retrain(name: str) -> None:
        seconds[name] = train(
            name,
            SUBNET,
            osp.join(work_dir, f'retrain_{name}'),
            retrain_opts + [f'model.subnet={yamls[name]}'],
            threads,
        )

    def search_then_retrain() -> None:
        search_dir = osp.join(work_dir, 'search')
        seconds['search'] = train(
            'search', SUPERNET, search_dir, search_opts, threads
        )
        shutil.copy(
            osp.join(search_dir, 'DMCP_SUBNET_IMAGENET.yaml'), yamls['dmcp']
        )
        print('\n== 2/3 the DMCP subnet retrained from scratch ==', flush=True)
        retrain('dmcp')

    try:
        with ThreadPoolExecutor(jobs) as pool:
            futures = [pool.submit(search_then_retrain)]
            futures += [pool.submit(retrain, n) for n in ('full', 'uniform')]
            for future in futures:
                future.result()
    except RuntimeError as e:
        sys.exit(str(e))
    results = {
        name: evaluate(
            SUBNET, osp.join(work_dir, f'retrain_{name}'), path, data_dir
        )
        for name, path in yamls.items()
    }
    for name, value in results.items():
        value['train_seconds'] = round(seconds[name])
    results['search'] = dict(train_seconds=round(seconds['search']))

    print('\n== 3/3 results ==', flush=True)
    table = format_table(results)
    print(table, flush=True)
    with open(osp.join(work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n')
    with open(osp.join(work_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print(
        f'\nWritten to {work_dir} (results.md, results.json, the yamls and '
        f"every run's train.log) in {(time.time() - start) / 60:.1f} min."
    )


def format_table(results: dict) -> str:
    """Markdown table of FLOPs, params and top-1."""
    rows = [
        '| network | FLOPs (MACs) | params | top-1 (%) |',
        '| --- | ---: | ---: | ---: |',
    ]
    names = dict(
        full='full ResNet-18 (CIFAR stem, 1/4 width)',
        uniform='uniform width, same budget',
        dmcp='DMCP subnet (Expected Sampling)',
    )
    for key in ('full', 'uniform', 'dmcp'):
        r = results[key]
        rows.append(
            f'| {names[key]} | {r["flops"] / 1e6:.2f}M | '
            f'{r["params"] / 1e6:.3f}M | {r["top1"]:.2f} |'
        )
    return '\n'.join(rows)


if __name__ == '__main__':
    main()
