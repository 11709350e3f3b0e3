"""Where the search step spends its time: a profile of our stage 1 and stage 2.

Builds our DMCP on the classifier of ``benchmarks/search_step.py`` (same
batch, optimizers and seeds), runs ``--warmup`` untimed steps, then profiles
``--steps`` steps of stage 1 (``DMCP.train_step(..., update_arch=False)``)
and, separately, of stage 2 (``DMCP._arch_step``), and prints the top
operators by self CPU time (``torch.profiler``) or, with ``--cprofile``, the
top Python functions by internal time (``cProfile``). Shares, not absolute
times, are what a profile on a loaded machine is good for.

With ``--limit`` the same steps profile the limits of
``benchmarks/search_step.py`` instead: stage 1 as the four subnets our
sampler draws, built (before the profile) as physically pruned plain
classifiers, stage 2 as the full classifier with frozen weights; the
difference to our profile is what the supernet costs.

With ``--reference`` the layers run their unoptimised path
(:func:`projects.dmcp.models.layers.reference_path`): full-size zero-padded
weight gradients per subnet and a separate Markov-scale multiply, so the two
profiles show what the optimisations remove.

Usage::

    python benchmarks/profile_search_step.py --input-size 160
    python benchmarks/profile_search_step.py --stage 2 --cprofile
    python benchmarks/profile_search_step.py --reference --steps 2
    python benchmarks/profile_search_step.py --limit --stage 1
"""

import argparse
import contextlib
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import projects.dmcp  # noqa: F401  (the shims, before torchvision)
from benchmarks.search_step import (
    BACKBONES,
    build_classifier,
    build_limit2,
    build_ours,
    limit_stage1,
    limit_stage2,
    make_batch,
    ours_plan,
    ours_stage1,
    ours_stage2,
    pruned_nets,
    sgd,
)
from projects.dmcp.models.layers import reference_path


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv``).

    Returns:
        argparse.Namespace: The options.
    """
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--backbone', default='resnet18', choices=sorted(BACKBONES))
    p.add_argument('--input-size', type=int, default=160)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--num-groups', type=int, default=10)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--steps', type=int, default=3, help='profiled steps')
    p.add_argument(
        '--stage', choices=['1', '2', 'both'], default='both', help='stages'
    )
    p.add_argument('--top', type=int, default=20, help='rows printed')
    p.add_argument(
        '--cprofile',
        action='store_true',
        help='Python functions (cProfile) instead of torch operators',
    )
    p.add_argument(
        '--reference',
        action='store_true',
        help='run the unoptimised layers (reference_path())',
    )
    p.add_argument(
        '--limit',
        action='store_true',
        help="profile search_step.py's limits (pruned subnets, frozen net)",
    )
    return p.parse_args(argv)


def profile_steps(
    step: Callable[[], object], steps: int, top: int, use_cprofile: bool
) -> str:
    """Profile ``steps`` calls of ``step`` and format the top rows.

    Args:
        step (callable): One search step, no arguments.
        steps (int): Calls profiled.
        top (int): Rows printed.
        use_cprofile (bool): cProfile's functions by internal time instead
            of torch.profiler's operators by self CPU time.

    Returns:
        str: The table, with the wall time per step on its first line.
    """
    t0 = time.perf_counter()
    if use_cprofile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(steps):
            step()
        prof.disable()
        wall = (time.perf_counter() - t0) / steps
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats('tottime').print_stats(top)
        table = out.getvalue()
    else:
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU]
        ) as prof:
            for _ in range(steps):
                step()
        wall = (time.perf_counter() - t0) / steps
        table = prof.key_averages().table(
            sort_by='self_cpu_time_total', row_limit=top
        )
    return f'{wall:.3f} s per step (profiler overhead included)\n{table}'


def limit_stages(args: argparse.Namespace, algo, batch: dict) -> dict:
    """The limits' steps, on the subnets our next steps would train.

    Args:
        args (argparse.Namespace): The options.
        algo (DMCP): Ours, for its sampler, trace and units.
        batch (dict): The batch.

    Returns:
        dict: Stage (``'1'``, ``'2'``) -> a step without arguments.
    """
    pristine = build_classifier(args.backbone)
    plans = []
    for _ in range(args.warmup + args.steps):
        plans.append(ours_plan(algo))
        # advance the sampler as our stage 1 would
        algo.mutator.sample_direct_batch(algo.num_direct_samples, algo.sampler)
    nets = [pruned_nets(pristine, algo, plan) for plan in plans]
    full = build_classifier(args.backbone)
    full.train()
    full_optim = sgd(full.parameters())
    frozen = build_limit2(args.backbone)
    data = frozen.data_preprocessor(batch, True)
    return {
        '1': lambda: limit_stage1(full, full_optim, nets.pop(0), batch),
        '2': lambda: limit_stage2(frozen, data),
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Build, warm up, profile and print.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv``).

    Returns:
        int: Exit code.
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import mmpretrain.models  # noqa: F401

    algo, optim = build_ours(args.backbone, args.input_size, args.num_groups)
    batch = make_batch(args.batch_size, args.input_size)
    data = algo.data_preprocessor(batch, True)
    stages = {
        '1': lambda: ours_stage1(algo, optim, batch),
        '2': lambda: ours_stage2(algo, optim, data),
    }
    chosen = ['1', '2'] if args.stage == 'both' else [args.stage]
    if args.limit:
        stages = limit_stages(args, algo, batch)
    ctx = reference_path() if args.reference else contextlib.nullcontext()
    with ctx:
        for _ in range(args.warmup):
            for s in chosen:
                stages[s]()
        for s in chosen:
            print(
                f'== stage {s}, {args.backbone}, input {args.input_size}, '
                f'batch {args.batch_size}, {args.threads} threads, '
                + (
                    'limit'
                    if args.limit
                    else 'reference layers'
                    if args.reference
                    else 'optimised layers'
                )
                + ', '
                f'{args.steps} steps'
            )
            print(
                profile_steps(stages[s], args.steps, args.top, args.cprofile)
            )
    return 0


if __name__ == '__main__':
    sys.exit(main())
