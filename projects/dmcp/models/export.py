"""The search's export: Expected and Direct Sampling -> subnet yamls.

After a search, :func:`export_search_results` writes the Expected Sampling
subnet (Section 3.3, :func:`expected_sampling`) as the main subnet file and
the Direct Samples in the budget band (:func:`draw_direct_samples`) beside
it, in the format of :mod:`.subnet_file`. The budget is the algorithm's
``cost`` (:mod:`.cost`): FLOPs, or the latency table's milliseconds. The
FLOPs estimator hook calls it at the end of the run; ``benchmarks/`` and
``tools/analysis/`` call it (or its sampling rules) on a searched
checkpoint.
"""

import os.path as osp
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import yaml
from mmengine.logging import MMLogger

from ..fileio import atomic_write_text
from .subnet_file import SUBNET_FILE, dump_subnet

__all__ = [
    'SUBNET_SAMPLINGS',
    'check_sampling',
    'draw_direct_samples',
    'expected_sampling',
    'export_search_results',
    'subnet_meta',
]

SUBNET_SAMPLINGS = ('expected', 'direct')


def check_sampling(sampling: str) -> None:
    """Refuse an unknown sampling mode for the exported subnet."""
    if sampling not in SUBNET_SAMPLINGS:
        raise ValueError(
            f'DMCPFlopsEstimatorHook.sampling={sampling!r} is not one of '
            f'{SUBNET_SAMPLINGS}'
        )


def subnet_meta(algo, sampling: str, choices: dict, supernet: str) -> dict:
    """The ``meta`` section of a subnet yaml.

    Args:
        algo (DMCP): The searched algorithm.
        sampling (str): ``'expected'`` or ``'direct'``.
        choices (dict[str, int]): The subnet's unit choices.
        supernet (str): The search's config file.

    Returns:
        dict: ``algorithm``, ``sampling``, ``input_shape``, ``supernet``
        and the budget's fields (:meth:`.cost.FlopsCost.meta`: the target,
        the subnet's value and the search's final expectation; with the
        latency budget also the table's device, backend and threads);
        ``divisor``, the units' channel divisor, when not 1.
    """
    with torch.no_grad():
        budget = algo.cost.meta(choices)
    meta = dict(
        algorithm='DMCP',
        sampling=sampling,
        input_shape=list(algo.input_shape),
        supernet=supernet,
    )
    meta.update(budget)
    divisor = algo.mutator.divisor
    if divisor != 1:  # widths but full ones are multiples of it
        meta['divisor'] = divisor
    return meta


def expected_sampling(
    mutator, target: float, cost: Optional[Callable[[dict], float]] = None
) -> tuple:
    """Expected Sampling (Section 3.3) that never exceeds the target.

    Each unit keeps its expected channels (Eq. 8) rounded. If that subnet's
    cost exceeds ``target`` (the search did not reach the budget, or
    rounding pushed it over), every unit's expected channels are scaled by
    the largest common factor that fits
    (:meth:`DMCPChannelMutator.fit_widths`), never below one group per unit.

    Args:
        mutator (DMCPChannelMutator): The searched mutator.
        target (float): Target FLOPs (or milliseconds, with ``cost``).
        cost (callable, optional): A subnet's value, ``cost(choices)``
            (e.g. :meth:`.cost.LatencyCost.of_choices`). Defaults to None
            (its FLOPs).

    Returns:
        tuple[dict[str, int], float]: The choices and the factor (1.0 when no
        fit was needed).
    """
    cost = mutator.subnet_flops if cost is None else cost
    choices = mutator.sample_choices('expected')
    if cost(choices) <= target:
        return choices, 1.0
    with torch.no_grad():
        expected = mutator.expected_channels().tolist()
    return mutator.fit_widths(expected, target, floor='group', cost=cost)


def draw_direct_samples(
    mutator,
    band: Tuple[float, float],
    num: int,
    max_draws: int,
    seed: int,
    cost_of_rows: Optional[Callable] = None,
) -> tuple:
    """Direct Sampling (Section 3.3): draw ``max_draws`` subnets from the
    Markov chains at once and keep the first ``num`` whose FLOPs (or
    cost) lie in the budget ``band``.

    Args:
        mutator (DMCPChannelMutator): The searched mutator.
        band (tuple[float, float]): ``(gamma * T, T)``.
        num (int): Samples to keep.
        max_draws (int): Samples to draw.
        seed (int): Seed of the draws.
        cost_of_rows (callable, optional): The values of many subnets,
            ``cost_of_rows(rows)`` (e.g. :meth:`.cost.LatencyCost.of_rows`).
            Defaults to None (their FLOPs, as int64).

    Returns:
        tuple: The drawn rows (CPU), the value of every draw (CPU), the
        indices kept and the kept ``(choices, value)`` pairs.
    """
    low, high = band
    generator = torch.Generator().manual_seed(seed)
    rows = mutator.sample_direct_batch(max_draws, generator)
    if cost_of_rows is None:
        all_flops = mutator.flops_table(rows).round().long().cpu()
    else:
        all_flops = cost_of_rows(rows).cpu()
    rows = rows.cpu()
    inside = ((all_flops >= low) & (all_flops <= high)).nonzero().flatten()
    kept = inside[:num].tolist()
    samples = [
        (mutator.choices_from_row(rows[i]), all_flops[i].item()) for i in kept
    ]
    return rows, all_flops, kept, samples


def export_search_results(
    algo,
    work_dir: str,
    supernet: str = '',
    subnet_file: str = SUBNET_FILE,
    num_direct_samples: int = 5,
    max_direct_draws: int = 10000,
    seed: int = 0,
    sampling: str = 'expected',
) -> Dict[str, str]:
    """Write the searched subnet and the Direct Samples.

    Args:
        algo (DMCP): The searched algorithm.
        work_dir (str): Folder to write into.
        supernet (str): Config file the search ran. Defaults to ''.
        subnet_file (str): Name of the main subnet file. Defaults to
            ``'DMCP_SUBNET_IMAGENET.yaml'``.
        num_direct_samples (int): Direct Samples to keep. Defaults to 5.
        max_direct_draws (int): Draws at most. Defaults to 10000.
        seed (int): Seed of the draws. Defaults to 0.
        sampling (str): What the main file holds: ``'expected'`` (Expected
            Sampling, the paper's default) or ``'direct'`` (the first Direct
            Sample within the budget band; Expected Sampling, with a warning,
            when none is). Defaults to ``'expected'``.

    Returns:
        dict[str, str]: What was written -> path.
    """
    check_sampling(sampling)
    mutator = algo.mutator
    alphas = mutator.alphas().detach()
    if not bool(torch.isfinite(alphas).all()):
        raise FloatingPointError('alpha is not finite: no subnet written')
    logger = MMLogger.get_current_instance()
    previous = mutator.current_choices()
    cost = algo.cost
    name = f'E[{cost.label}]'

    low, high = algo.gamma * cost.target, cost.target
    draws = draw_direct_samples(
        mutator,
        (low, high),
        num_direct_samples,
        max_direct_draws,
        seed,
        cost.of_rows,
    )
    rows, all_flops, kept, samples = draws

    if sampling == 'direct' and samples:
        choices, _ = samples[0]
        meta = subnet_meta(algo, 'direct', choices, supernet)
    else:
        if sampling == 'direct':
            logger.warning(
                f'No Direct Sample of {len(rows)} lies in the budget band '
                f'[{cost.format(low)}, {cost.format(high)}]: '
                f'{subnet_file} holds the Expected Sampling subnet instead.'
            )
        choices, scale = expected_sampling(
            mutator, cost.target, cost.of_choices
        )
        meta = subnet_meta(algo, 'expected', choices, supernet)
        if scale < 1:
            meta['budget_fit_scale'] = round(scale, 6)
            with torch.no_grad():
                expected = float(cost.expected())
            logger.warning(
                'The Expected Sampling subnet exceeded the target '
                f'{cost.format(cost.target)} ({name} = '
                f'{cost.format(expected)}); its expected widths were '
                f'scaled by {scale:.4f} to fit. A search whose {name} ends '
                'inside [gamma * T, T] needs no such fit.'
            )
    paths = {}
    path = osp.join(work_dir, subnet_file)
    dump_subnet(path, mutator.layer_channels(choices), meta)
    paths[f'{meta["sampling"].capitalize()} Sampling subnet'] = path

    folder = osp.join(work_dir, 'direct_sampling')
    for i, (choices, _) in enumerate(samples):
        dump_subnet(
            osp.join(folder, f'subnet_{i}.yaml'),
            mutator.layer_channels(choices),
            subnet_meta(algo, 'direct', choices, supernet),
        )
    # The summary covers the draws up to the last one kept (all of them when
    # fewer than `num_direct_samples` landed in the band).
    full = kept and len(kept) == num_direct_samples
    arr = all_flops[: kept[-1] + 1 if full else len(rows)].double().numpy()
    summary = dict(
        draws=len(arr),
        kept=len(kept),
        band=[cost.record(low), cost.record(high)],
        mean=float(arr.mean()),
        std=float(arr.std()),
        quantiles={
            f'q{int(q * 100):02d}': float(np.quantile(arr, q))
            for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
        },
        within_band=float(((arr >= low) & (arr <= high)).mean()),
    )
    if cost.name != 'flops':  # the figures are in its unit (ms)
        summary = dict(budget=cost.name, **summary)
    atomic_write_text(
        osp.join(folder, 'summary.yaml'),
        yaml.safe_dump(summary, sort_keys=False),
    )
    paths['Direct Sampling'] = folder
    mutator.set_subnet(previous)
    return paths
