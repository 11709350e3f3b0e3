"""The FLOPs estimator hook: logs the search's FLOPs and exports subnets."""

import os.path as osp
from typing import Dict, Optional

import numpy as np
import torch
import yaml
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MMLogger

from ..models.flops import format_flops
from ..models.subnet import atomic_write_text, dump_subnet
from ..registry import HOOKS
from .loop import unwrap

__all__ = ['DMCPFlopsEstimatorHook']

SUBNET_FILE = 'DMCP_SUBNET_IMAGENET.yaml'


@HOOKS.register_module()
class DMCPFlopsEstimatorHook(Hook):
    """Logs the FLOPs of the search and writes the searched subnets.

    After every iteration it puts into the log line (with the usual progress
    and ETA of mmengine's logger): the expected FLOPs ``E[FLOPs]`` and the
    target (in MFLOPs, i.e. millions of MACs), and the FLOPs of the subnets
    that stage 1 trained. Every ``width_interval`` iterations it logs the
    expected width of each unit.

    At the end of the search it writes, atomically, into the work dir (rank 0
    only):

    * ``DMCP_SUBNET_IMAGENET.yaml``: the Expected Sampling subnet (the paper's
      default, Section 3.3);
    * ``direct_sampling/subnet_{i}.yaml``: up to ``num_direct_samples``
      Direct Samples whose FLOPs lie in ``[gamma * T, T]``, out of at most
      ``max_direct_draws`` draws, and ``direct_sampling/summary.yaml`` with
      the FLOPs of all draws (count, mean, quantiles).

    Args:
        width_interval (int): Log unit widths every this many iterations;
            0 disables. Defaults to 100.
        num_direct_samples (int): Direct Samples to keep. Defaults to 5.
        max_direct_draws (int): Direct Samples to draw at most. Defaults to
            10000.
        seed (int): Seed of the Direct Sampling at export. Defaults to 0.
        subnet_file (str): Name of the main subnet file. Defaults to
            ``'DMCP_SUBNET_IMAGENET.yaml'``.
        sampling (str): What the main subnet file holds: ``'expected'``
            (Expected Sampling, the paper's default) or ``'direct'`` (the
            first Direct Sample in the budget band). Defaults to
            ``'expected'``.
    """

    priority = 'NORMAL'  # before the LoggerHook, so figures reach its line

    def __init__(
        self,
        width_interval: int = 100,
        num_direct_samples: int = 5,
        max_direct_draws: int = 10000,
        seed: int = 0,
        subnet_file: str = SUBNET_FILE,
        sampling: str = 'expected',
    ) -> None:
        check_sampling(sampling)
        self.sampling = sampling
        self.width_interval = width_interval
        self.num_direct_samples = num_direct_samples
        self.max_direct_draws = max_direct_draws
        self.seed = seed
        self.subnet_file = subnet_file

    def after_train_iter(
        self,
        runner,
        batch_idx: int,
        data_batch: Optional[dict] = None,
        outputs: Optional[dict] = None,
    ) -> None:
        algo = unwrap(runner.model)
        hub = runner.message_hub
        with torch.no_grad():
            expected = float(algo.mutator.expected_flops())
        hub.update_scalar('train/expected_mflops', expected / 1e6)
        hub.update_scalar('train/target_mflops', algo.target_flops / 1e6)
        for tag, flops in algo.last_subnet_flops.items():
            hub.update_scalar(f'train/{tag}_mflops', flops / 1e6)
        if self.width_interval and self.every_n_train_iters(
            runner, self.width_interval
        ):
            runner.logger.info(self.width_report(algo))

    @staticmethod
    def width_report(algo) -> str:
        """Expected width of every unit, one line each."""
        with torch.no_grad():
            widths = algo.mutator.expected_channels().tolist()
        lines = [
            f'E[FLOPs] {format_flops(float(algo.mutator.expected_flops()))}'
            f' / target {format_flops(algo.target_flops)}; expected '
            'channels per unit:'
        ]
        for unit, w in zip(algo.mutator.units, widths):
            lines.append(
                f'  {unit.name}: {w:.1f}/{unit.num_channels} '
                f'({100 * w / unit.num_channels:.0f}%)'
            )
        return '\n'.join(lines)

    def after_train(self, runner) -> None:
        if not is_main_process():
            return
        algo = unwrap(runner.model)
        paths = export_search_results(
            algo,
            runner.work_dir,
            supernet=_config_name(runner),
            subnet_file=self.subnet_file,
            num_direct_samples=self.num_direct_samples,
            max_direct_draws=self.max_direct_draws,
            seed=self.seed,
            sampling=self.sampling,
        )
        runner.logger.info(self.width_report(algo))
        for what, path in paths.items():
            runner.logger.info(f'{what}: {path}')


def _config_name(runner) -> str:
    cfg = getattr(runner, 'cfg', None)
    return getattr(cfg, 'filename', None) or ''


def subnet_meta(algo, sampling: str, flops: int, supernet: str) -> dict:
    """The ``meta`` section of a subnet yaml (``expected_flops`` is the
    search's final E[FLOPs], Eq. 12)."""
    with torch.no_grad():
        expected = float(algo.mutator.expected_flops())
    return dict(
        algorithm='DMCP',
        sampling=sampling,
        target_flops=int(algo.target_flops),
        flops=int(flops),
        input_shape=list(algo.input_shape),
        supernet=supernet,
        expected_flops=int(round(expected)),
    )


def expected_sampling(mutator, target: float) -> tuple:
    """Expected Sampling (Section 3.3) that never exceeds the target.

    Each unit keeps its expected channels (Eq. 8) rounded. If that subnet's
    FLOPs exceed ``target`` (the search did not reach the budget, or rounding
    pushed it over), every unit's expected channels are scaled by the largest
    common factor that fits (:meth:`DMCPChannelMutator.fit_widths`), never
    below one group per unit.

    Args:
        mutator (DMCPChannelMutator): The searched mutator.
        target (float): Target FLOPs.

    Returns:
        tuple[dict[str, int], float]: The choices and the factor (1.0 when no
        fit was needed).
    """
    choices = mutator.sample_choices('expected')
    if mutator.subnet_flops(choices) <= target:
        return choices, 1.0
    with torch.no_grad():
        expected = mutator.expected_channels().tolist()
    return mutator.fit_widths(expected, target, floor='group')


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

    low, high = algo.gamma * algo.target_flops, algo.target_flops
    generator = torch.Generator().manual_seed(seed)
    rows = mutator.sample_direct_batch(max_direct_draws, generator)
    all_flops = mutator.flops_table(rows).round().long().cpu()
    rows = rows.cpu()
    inside = ((all_flops >= low) & (all_flops <= high)).nonzero().flatten()
    kept = inside[:num_direct_samples].tolist()
    samples = [
        (mutator.choices_from_row(rows[i]), int(all_flops[i])) for i in kept
    ]

    if sampling == 'direct' and samples:
        choices, flops = samples[0]
        meta = subnet_meta(algo, 'direct', flops, supernet)
    else:
        if sampling == 'direct':
            logger.warning(
                f'No Direct Sample of {len(rows)} lies in the budget band '
                f'[{format_flops(low)}, {format_flops(high)}]: '
                f'{subnet_file} holds the Expected Sampling subnet instead.'
            )
        choices, scale = expected_sampling(mutator, algo.target_flops)
        meta = subnet_meta(
            algo, 'expected', mutator.subnet_flops(choices), supernet
        )
        if scale < 1:
            meta['budget_fit_scale'] = round(scale, 6)
            logger.warning(
                'The Expected Sampling subnet exceeded the target '
                f'{format_flops(algo.target_flops)} (E[FLOPs] = '
                f'{format_flops(float(mutator.expected_flops()))}); its '
                f'expected widths were scaled by {scale:.4f} to fit. A '
                'search whose E[FLOPs] ends inside [gamma * T, T] needs no '
                'such fit.'
            )
    paths = {}
    path = osp.join(work_dir, subnet_file)
    dump_subnet(path, mutator.layer_channels(choices), meta)
    paths[f'{meta["sampling"].capitalize()} Sampling subnet'] = path

    folder = osp.join(work_dir, 'direct_sampling')
    for i, (choices, flops) in enumerate(samples):
        dump_subnet(
            osp.join(folder, f'subnet_{i}.yaml'),
            mutator.layer_channels(choices),
            subnet_meta(algo, 'direct', flops, supernet),
        )
    # The summary covers the draws up to the last one kept (all of them when
    # fewer than `num_direct_samples` landed in the band).
    full = kept and len(kept) == num_direct_samples
    arr = all_flops[: kept[-1] + 1 if full else len(rows)].double().numpy()
    summary = dict(
        draws=len(arr),
        kept=len(kept),
        band=[int(low), int(high)],
        mean=float(arr.mean()),
        std=float(arr.std()),
        quantiles={
            f'q{int(q * 100):02d}': float(np.quantile(arr, q))
            for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
        },
        within_band=float(((arr >= low) & (arr <= high)).mean()),
    )
    atomic_write_text(
        osp.join(folder, 'summary.yaml'),
        yaml.safe_dump(summary, sort_keys=False),
    )
    paths['Direct Sampling'] = folder
    mutator.set_subnet(previous)
    return paths


SUBNET_SAMPLINGS = ('expected', 'direct')


def check_sampling(sampling: str) -> None:
    """Refuse an unknown sampling mode for the exported subnet."""
    if sampling not in SUBNET_SAMPLINGS:
        raise ValueError(
            f'DMCPFlopsEstimatorHook.sampling={sampling!r} is not one of '
            f'{SUBNET_SAMPLINGS}'
        )
