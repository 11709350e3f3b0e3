"""Does the architecture search end in the budget band at real schedules?

A DMCP search on ImageNet takes about 50,000 architecture steps (20 epochs of
2,503 iterations at batch 512). This benchmark replays them for a config
without training a network: ``alpha`` follows the config's own optimizer,
gradient clipping and learning-rate schedule, and its gradient is the sum of

* the real budget loss (``model.budget_mode``, ``lambda_reg``, ``gamma``) of
  the real expected FLOPs (Eq. 8-12 of the config's supernet, traced at its
  ``input_shape``), and
* a task-loss surrogate that pushes every unit wider: ``-c * sum_u w_u *
  log(E[c_u] / C_u)`` with per-unit importances ``w_u`` drawn per run, plus
  Gaussian noise of the measured size. Its scale ``c`` is set so that at the
  initial ``alpha`` the ratio of its gradient norm to
  ``lambda_reg * ||d log E / d alpha||`` is the ratio measured in real
  searches (``--calibrate``; ``benchmarks/results/budget_calibration.json``)
  times a factor swept from 0.1x to 10x.

Many runs (factors x seeds) go as one batch: every optimizer the configs
use (SGD, Adam) acts element-wise, and clipping is applied per run.

For each config and target it reports the fraction of runs whose final
``E[FLOPs]`` lies in ``[gamma * T, T]``, the lowest ``E / T`` after a run
first reached the band, the alphas that end saturated (``|alpha| > 10``) and
the time per step. ``--json`` prints one object on the last line.

Usage::

    python benchmarks/budget_dynamics.py            # every shipped config
    python benchmarks/budget_dynamics.py --json --out results.md
    python benchmarks/budget_dynamics.py --configs resnet50 \\
        --cfg-options model.budget_mode=paper
    python benchmarks/budget_dynamics.py --calibrate   # real searches
"""

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import os.path as osp
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

import projects.dmcp  # noqa: E402,F401  (shims + registration)
from projects.dmcp.models.flops import format_flops  # noqa: E402
from projects.dmcp.models.losses import budget_loss  # noqa: E402
from projects.dmcp.models.markov import (  # noqa: E402
    expected_channels,
    marginal_probs,
)
from projects.dmcp.registry import MODELS  # noqa: E402

CONFIG_DIR = osp.join(REPO, 'configs', 'pruning', 'dmcp')
# name -> (config, targets: the config's default first)
CONFIGS = {
    'resnet18': ('dmcp_resnet18_supernet_8xb64_in1k.py', ['0.7G', '1.5G']),
    'resnet50': ('dmcp_resnet50_supernet_8xb64_in1k.py', ['1.1G', '3.0G']),
    'mobilenet-v2-1.5x': (
        'dmcp_mobilenet-v2-1.5x_supernet_8xb64_in1k.py',
        ['300M', '100M'],
    ),
    'fashion-mnist': (
        'dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py',
        ['14.29M'],
    ),
}
# Training images of the datasets the configs use, and GPUs of a config
# named "8xb64" (its per-GPU batch times the GPUs is the total batch).
DATASET_SIZES = {'ImageNet': 1281167, 'FashionMNIST': 60000}
FACTORS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
CALIBRATION = osp.join(
    REPO, 'benchmarks', 'results', 'budget_calibration.json'
)
SATURATED = 10.0


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line.

    Args:
        argv (Sequence[str], optional): Arguments. Defaults to None
            (``sys.argv``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--configs',
        nargs='+',
        default=list(CONFIGS),
        help='names from CONFIGS or config paths (default: all shipped)',
    )
    p.add_argument('--seeds', type=int, default=10, help='runs per factor')
    p.add_argument(
        '--factors',
        type=float,
        nargs='+',
        default=list(FACTORS),
        help='task-gradient scales, relative to the calibrated one',
    )
    p.add_argument(
        '--steps',
        type=int,
        default=None,
        help='architecture steps (default: the config schedule)',
    )
    p.add_argument('--jobs', type=int, default=2, help='parallel processes')
    p.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='overrides applied to every config (e.g. model.budget_mode)',
    )
    p.add_argument('--calibrate', action='store_true', help=calib_help())
    p.add_argument('--out', help='write the markdown table here')
    p.add_argument('--json', action='store_true', help='print a json line')
    return p.parse_args(argv)


def calib_help() -> str:
    return (
        'measure the task/budget gradient ratio in short real searches '
        f'and write {osp.relpath(CALIBRATION, REPO)}'
    )


# --------------------------------------------------------------- configs
def load_config(name: str, options: Optional[dict] = None) -> Config:
    """A config by CONFIGS name or path, with overrides.

    Args:
        name (str): A key of :data:`CONFIGS` or a config file.
        options (dict, optional): ``--cfg-options``. Defaults to None.

    Returns:
        Config: The config.
    """
    path = osp.join(CONFIG_DIR, CONFIGS[name][0]) if name in CONFIGS else name
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_algorithm(cfg: Config, target: Optional[str] = None):
    """The config's DMCP algorithm, on the CPU.

    Args:
        cfg (Config): A search config.
        target (str, optional): Overrides ``model.target_flops``. Defaults
            to None.

    Returns:
        DMCP: The algorithm.
    """
    model = copy.deepcopy(cfg.model)
    if target is not None:
        model['target_flops'] = target
    if cfg.get('data_preprocessor') is not None:
        model['architecture'].setdefault(
            'data_preprocessor', cfg.data_preprocessor
        )
    scope = cfg.get('default_scope', 'mmpretrain')
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(model)


def epoch_length(cfg: Config, path: str) -> int:
    """Iterations per epoch of the config on its real data set.

    Args:
        cfg (Config): The config.
        path (str): Its file (``8xb64`` in the name: 8 GPUs).

    Returns:
        int: Iterations per epoch.
    """
    loader = cfg.train_dataloader
    dataset = loader.dataset
    size = dataset.get('indices')
    if not isinstance(size, int):
        kind = str(dataset.get('type', '')).split('.')[-1]
        size = DATASET_SIZES.get(kind, DATASET_SIZES['ImageNet'])
    gpus = 1
    stem = osp.basename(path)
    if 'xb' in stem:
        head = stem.split('xb')[0].split('_')[-1]
        gpus = int(head) if head.isdigit() else 1
    per_gpu = math.ceil(size / gpus)
    return math.ceil(per_gpu / loader.batch_size)


def arch_lr_schedule(cfg: Config, iters_per_epoch: int) -> List[float]:
    """The ``mutator`` learning rate at every architecture step.

    The config's ``param_scheduler.mutator`` is built on a stand-in
    optimizer and stepped through the whole search, warmup included, as the
    runner steps it once per iteration.

    Args:
        cfg (Config): The config.
        iters_per_epoch (int): Iterations per epoch.

    Returns:
        list[float]: The lr of each iteration after warmup.
    """
    from mmengine.registry import PARAM_SCHEDULERS

    opt_cfg = cfg.optim_wrapper.mutator.optimizer
    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    dummy.param_groups[0]['lr'] = float(opt_cfg.lr)
    dummy.param_groups[0]['initial_lr'] = float(opt_cfg.lr)
    scheds = []
    for sched in cfg.param_scheduler.get('mutator', []):
        sched = dict(sched)
        if sched.pop('convert_to_iter_based', False):
            sched['epoch_length'] = iters_per_epoch
            sched['convert_to_iter_based'] = True
        with DefaultScope.overwrite_default_scope('mmengine'):
            scheds.append(
                PARAM_SCHEDULERS.build(
                    sched,
                    default_args=dict(
                        optimizer=dummy, epoch_length=iters_per_epoch
                    ),
                )
            )
    total = cfg.train_cfg.max_epochs * iters_per_epoch
    start = cfg.train_cfg.warmup_epochs * iters_per_epoch
    lrs = []
    for it in range(total):
        if it >= start:
            lrs.append(dummy.param_groups[0]['lr'])
        for s in scheds:
            s.step()
    return lrs


def make_optimizer(cfg: Config, param: torch.Tensor) -> torch.optim.Optimizer:
    """The config's ``mutator`` optimizer on the batched alpha.

    Args:
        cfg (Config): The config.
        param (Tensor): Batched alpha, ``(B, U, G - 1)``.

    Returns:
        torch.optim.Optimizer: The optimizer.
    """
    opt = dict(cfg.optim_wrapper.mutator.optimizer)
    kind = opt.pop('type')
    if kind not in ('SGD', 'Adam', 'AdamW'):
        raise ValueError(f'optimizer {kind} is not simulated')
    return getattr(torch.optim, kind)([param], **opt)


# ------------------------------------------------------------ simulation
class BatchedBudget:
    """E[FLOPs], the budget loss and their gradients for a batch of alphas
    ``(B, U, G - 1)``.

    The gradient w.r.t. alpha is written out (no autograd graph per step,
    so 50,000 steps of 70 runs take a minute): ``dE/dc`` from the FLOPs
    table's layers (Eq. 9-12), and ``dc_u/dalpha_j = (1 - p_{j+1}) *
    sum_{k > j} size_k p(w_k)`` from Eq. 5-8. The budget loss itself is the
    real :func:`~projects.dmcp.models.losses.budget_loss`, differentiated
    w.r.t. ``E`` by autograd. ``tests/test_benchmarks`` checks the whole
    gradient against autograd through the mutator's own functions.

    Args:
        algo (DMCP): The algorithm (its mutator, target and loss).
    """

    def __init__(self, algo) -> None:
        mutator = algo.mutator
        self.table = mutator.flops_table
        self.sizes = mutator.group_sizes().double()
        self.channels = self.sizes.sum(-1)
        self.alpha0 = mutator.alphas().detach()
        self.target = float(algo.target_flops)
        self.gamma = algo.budget.gamma
        self.weight = algo.budget.loss_weight
        self.mode = algo.budget.mode

    def expected(self, alpha: torch.Tensor, marg=None) -> tuple:
        """E[channels] ``(B, U)`` and E[FLOPs] ``(B,)``."""
        marg = marginal_probs(alpha) if marg is None else marg
        ec = expected_channels(marg, self.sizes)
        return ec, self.table(ec)

    def loss(self, flops: torch.Tensor) -> torch.Tensor:
        """``lambda * loss_reg`` per run."""
        return self.weight * budget_loss(
            flops, self.target, self.gamma, self.mode
        )

    def loss_grad(self, flops: torch.Tensor) -> torch.Tensor:
        """``d (lambda * loss_reg) / dE`` per run."""
        with torch.enable_grad():
            e = flops.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.loss(e).sum(), e)
        return grad

    def flops_grad(self, ec: torch.Tensor) -> torch.Tensor:
        """``dE / dc_u``, ``(B, U)``: each layer's ``coef * c[in] * c[out]``
        differentiated w.r.t. both of its channel counts."""
        t = self.table
        c = torch.cat([ec, ec.new_ones(ec.shape[:-1] + (1,))], dim=-1)
        c_in, c_out = c[..., t.in_idx], c[..., t.out_idx]
        grad = torch.zeros_like(c)
        grad.scatter_add_(-1, t.in_idx.expand_as(c_in), t.coef * c_out)
        grad.scatter_add_(-1, t.out_idx.expand_as(c_out), t.coef * c_in)
        return grad[..., :-1]

    def channels_grad(self, alpha: torch.Tensor, marg=None) -> torch.Tensor:
        """``dE[c_u] / dalpha_u``, ``(B, U, G - 1)``."""
        marg = marginal_probs(alpha) if marg is None else marg
        tail = (self.sizes * marg).flip(-1).cumsum(-1).flip(-1)
        return (1 - torch.sigmoid(alpha)) * tail[..., 1:]


def simulate(
    cfg: Config,
    algo,
    factors: Sequence[float],
    seeds: int,
    ratio: float,
    noise: float,
    lrs: Sequence[float],
) -> Dict:
    """Run ``len(factors) * seeds`` searches' architecture steps at once.

    Args:
        cfg (Config): The config (alpha optimizer, clipping).
        algo (DMCP): The algorithm at the target.
        factors (Sequence[float]): Task-gradient scales.
        seeds (int): Runs per factor.
        ratio (float): Calibrated ``||g_task|| / (lambda ||d log E||)``.
        noise (float): Calibrated noise of the task gradient, relative to
            its norm.
        lrs (Sequence[float]): The lr of each architecture step.

    Returns:
        dict: Figures per factor and over all runs.
    """
    torch.manual_seed(0)
    budget = BatchedBudget(algo)
    n = len(factors) * seeds
    scale = torch.tensor(
        [f for f in factors for _ in range(seeds)], dtype=torch.float64
    )
    g = torch.Generator().manual_seed(1)
    units = budget.alpha0.shape[0]
    w = 0.5 + torch.rand(n, units, generator=g, dtype=torch.float64)
    # the initial alpha of a run: the unit init plus its noise
    alpha0 = budget.alpha0.double()[None].repeat(n, 1, 1)
    alpha0 += 0.01 * torch.randn(alpha0.shape, generator=g, dtype=alpha0.dtype)

    def task_grad(ec: torch.Tensor) -> torch.Tensor:
        return -w / ec  # d task / d E[c_u]

    def grads(alpha: torch.Tensor, c: torch.Tensor) -> tuple:
        marg = marginal_probs(alpha)
        ec, e = budget.expected(alpha, marg)
        d_ec = budget.loss_grad(e)[:, None] * budget.flops_grad(ec)
        d_ec = d_ec + c[:, None] * task_grad(ec)
        return d_ec[..., None] * budget.channels_grad(alpha, marg), e

    norm = lambda t: t.flatten(1).norm(dim=1)  # noqa: E731
    # calibrate c per run at the initial alpha:
    # ||c * d task|| = factor * ratio * lambda * ||d log E||
    ec0, e0 = budget.expected(alpha0)
    cg = budget.channels_grad(alpha0)
    g_log_e = (budget.flops_grad(ec0) / e0[:, None])[..., None] * cg
    g_task = task_grad(ec0)[..., None] * cg
    c = scale * ratio * budget.weight * norm(g_log_e) / norm(g_task)
    noise_std = noise * c * norm(g_task) / math.sqrt(g_task[0].numel())
    noise_std = noise_std[:, None, None]

    alpha = alpha0.clone().requires_grad_(True)
    optimizer = make_optimizer(cfg, alpha)
    clip = (cfg.optim_wrapper.mutator.get('clip_grad') or {}).get('max_norm')
    low, high = budget.gamma * budget.target, budget.target
    above = e0 > high  # where a run starts decides what "reached" means
    reached = torch.zeros(n, dtype=torch.bool)
    lowest = torch.full((n,), math.inf, dtype=torch.float64)
    start = time.perf_counter()
    for lr in lrs:
        for group in optimizer.param_groups:
            group['lr'] = lr
        with torch.no_grad():
            grad, e = grads(alpha, c)
            # float32 draws: float64 ones cost 10x more and add nothing
            grad += noise_std * torch.randn(alpha.shape, generator=g).to(
                grad.dtype
            )
            if clip:
                gn = norm(grad).clamp_min(1e-30)
                grad *= (clip / gn).clamp(max=1.0)[:, None, None]
            alpha.grad = grad
            # reached: came down to T from above, or up to gamma*T from below
            reached |= torch.where(above, e <= high, e >= low)
            lowest = torch.where(
                reached, torch.minimum(lowest, e / high), lowest
            )
        optimizer.step()
    ms = 1e3 * (time.perf_counter() - start) / max(len(lrs), 1)
    with torch.no_grad():
        _, e = budget.expected(alpha)
        final = e / high
        in_band = (e >= low) & (e <= high)
        saturated = (alpha.abs() > SATURATED).flatten(1).sum(1)
    per_factor = {}
    for i, f in enumerate(factors):
        sl = slice(i * seeds, (i + 1) * seeds)
        per_factor[f] = dict(
            in_band=int(in_band[sl].sum()),
            final_min=float(final[sl].min()),
            final_max=float(final[sl].max()),
            min_after_reach=float(lowest[sl].min()),
            saturated=float(saturated[sl].double().mean()),
        )
    return dict(
        runs=n,
        in_band_fraction=float(in_band.double().mean()),
        min_after_reach=float(lowest.min()),
        never_reached=int((~reached).sum()),
        saturated_mean=float(saturated.double().mean()),
        alphas=int(alpha[0].numel()),
        ms_per_step=ms,
        per_factor=per_factor,
    )


def run_one(job: dict) -> dict:
    """One config at one target (run in a worker process)."""
    torch.set_num_threads(1)
    cfg = load_config(job['config'], job['options'])
    algo = build_algorithm(cfg, job['target'])
    path = cfg.filename
    iters = epoch_length(cfg, path)
    lrs = arch_lr_schedule(cfg, iters)
    if job['steps']:
        lrs = lrs[: job['steps']]
    result = simulate(
        cfg,
        algo,
        job['factors'],
        job['seeds'],
        job['ratio'],
        job['noise'],
        lrs,
    )
    result.update(
        config=job['config'],
        target=format_flops(algo.target_flops),
        full=format_flops(algo.full_flops),
        mode=algo.budget.mode,
        steps=len(lrs),
        iters_per_epoch=iters,
        optimizer=describe_optimizer(cfg),
    )
    return result


def describe_optimizer(cfg: Config) -> str:
    """The alpha optimizer, clipping and schedule, in one line."""
    ow = cfg.optim_wrapper.mutator
    opt = dict(ow.optimizer)
    kind = opt.pop('type')
    args = ', '.join(f'{k}={v}' for k, v in opt.items())
    clip = ow.get('clip_grad')
    sched = [
        f'{s["type"]}(eta_min={s.get("eta_min")})'
        for s in cfg.param_scheduler.get('mutator', [])
    ]
    return (
        f'{kind}({args})'
        + (f', clip {dict(clip)}' if clip else '')
        + (f', {", ".join(sched)}' if sched else '')
    )


def load_calibration() -> dict:
    """The measured gradient ratio and noise (``--calibrate`` writes it)."""
    if not osp.exists(CALIBRATION):
        sys.exit(
            f'{osp.relpath(CALIBRATION, REPO)} is missing: run '
            'python benchmarks/budget_dynamics.py --calibrate'
        )
    with open(CALIBRATION) as f:
        return json.load(f)


def jobs_for(args: argparse.Namespace, calib: dict) -> List[dict]:
    """One job per config and target."""
    jobs = []
    for name in args.configs:
        cfg = load_config(name, args.cfg_options)
        default = cfg.model.target_flops
        extra = CONFIGS[name][1] if name in CONFIGS else []
        for target in [default] + extra:
            jobs.append(
                dict(
                    config=name,
                    options=args.cfg_options,
                    target=target,
                    factors=args.factors,
                    seeds=args.seeds,
                    ratio=calib['ratio'],
                    noise=calib['noise'],
                    steps=args.steps,
                )
            )
    return jobs


def report(results: List[dict], calib: dict, argv: str, secs: float) -> str:
    """The markdown results."""
    lines = [
        '# Budget dynamics at real schedules',
        '',
        f'Measured {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on '
        f'{platform.machine()} ({os.cpu_count()} cores), {secs / 60:.1f} '
        f'min, by `python benchmarks/budget_dynamics.py {argv}`.',
        '',
        f'Task-gradient ratio {calib["ratio"]:.3g} (noise '
        f'{calib["noise"]:.3g}) from `--calibrate`; factors '
        f'{sorted(results[0]["per_factor"])}, '
        f'{results[0]["runs"] // len(results[0]["per_factor"])} seeds each.',
        '',
        '| config | mode | target | full | steps | in band | min E/T '
        'after reaching | never reached | saturated alphas | ms/step |',
        '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: '
        '| ---: |',
    ]
    for r in results:
        lines.append(
            f'| {r["config"]} | {r["mode"]} | {r["target"]} | {r["full"]} '
            f'| {r["steps"]} | {100 * r["in_band_fraction"]:.0f}% '
            f'| {r["min_after_reach"]:.3f} | {r["never_reached"]} '
            f'| {r["saturated_mean"]:.1f}/{r["alphas"]} '
            f'| {r["ms_per_step"]:.2f} |'
        )
    lines += [
        '',
        '## Per factor (runs in band; final E/T range; min E/T after '
        'reaching)',
        '',
    ]
    for r in results:
        cells = ', '.join(
            f'{f}x: {v["in_band"]} ({v["final_min"]:.4f}..'
            f'{v["final_max"]:.4f}; {v["min_after_reach"]:.3f})'
            for f, v in r['per_factor'].items()
        )
        lines.append(f'- {r["config"]} {r["mode"]} {r["target"]}: {cells}')
    lines += ['', 'Alpha optimizers:', '']
    for name in dict.fromkeys(r['config'] for r in results):
        opt = next(r['optimizer'] for r in results if r['config'] == name)
        lines.append(f'- {name}: {opt}')
    return '\n'.join(lines) + '\n'


def summary(results: List[dict]) -> dict:
    """The ``--json`` object: per config, its worst target."""
    out = {}
    for r in results:
        c = out.setdefault(
            r['config'],
            dict(in_band_fraction=1.0, min_after_reach=math.inf, targets={}),
        )
        c['in_band_fraction'] = min(
            c['in_band_fraction'], r['in_band_fraction']
        )
        c['min_after_reach'] = min(c['min_after_reach'], r['min_after_reach'])
        c['targets'][r['target']] = dict(
            in_band_fraction=r['in_band_fraction'],
            min_after_reach=r['min_after_reach'],
            saturated_mean=r['saturated_mean'],
            ms_per_step=r['ms_per_step'],
            mode=r['mode'],
        )
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Run the simulation (or the calibration) and print the results."""
    args = parse_args(argv)
    if args.calibrate:
        from benchmarks.budget_calibration import calibrate

        calibrate(CALIBRATION)
        return
    calib = load_calibration()
    start = time.perf_counter()
    jobs = jobs_for(args, calib)
    if args.jobs > 1:
        ctx = mp.get_context('spawn')
        with ctx.Pool(args.jobs) as pool:
            results = pool.map(run_one, jobs, chunksize=1)
    else:
        results = [run_one(j) for j in jobs]
    secs = time.perf_counter() - start
    text = report(results, calib, ' '.join(sys.argv[1:]), secs)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
    if args.json:
        print(json.dumps(summary(results)))


if __name__ == '__main__':
    main()
