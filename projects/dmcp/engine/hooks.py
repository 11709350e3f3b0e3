"""The FLOPs estimator hook: logs the search's budget (E[FLOPs], or
E[latency] under ``model.budget='latency'``) and, at the end, exports the
subnets (:mod:`..models.export`)."""

from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from ..models.export import check_sampling, export_search_results
from ..models.subnet_file import SUBNET_FILE
from ..registry import HOOKS
from ..utils import unwrap

__all__ = ['DMCPFlopsEstimatorHook']


@HOOKS.register_module()
class DMCPFlopsEstimatorHook(Hook):
    """Logs the FLOPs of the search and writes the searched subnets.

    After every iteration it puts into the log line (with the usual progress
    and ETA of mmengine's logger): the expected FLOPs ``E[FLOPs]`` and the
    target (in MFLOPs, i.e. millions of MACs), and the FLOPs of the subnets
    that stage 1 trained; under the latency budget also ``E[latency]`` and
    its target in ms (``expected_latency_ms``, ``target_latency_ms``).
    Every ``width_interval`` iterations it logs the expected width of each
    unit.

    At the end of the search it writes, atomically, into the work dir (rank 0
    only):

    * ``DMCP_SUBNET_IMAGENET.yaml``: the Expected Sampling subnet (the paper's
      default, Section 3.3);
    * ``direct_sampling/subnet_{i}.yaml``: up to ``num_direct_samples``
      Direct Samples whose FLOPs (latency) lie in ``[gamma * T, T]``, out
      of at most ``max_direct_draws`` draws, and
      ``direct_sampling/summary.yaml`` with the FLOPs (latency) of all
      draws (count, mean, quantiles).

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
            scalars = algo.cost.scalars()
        for key, value in scalars.items():
            hub.update_scalar(f'train/{key}', value)
        for tag, flops in algo.last_subnet_flops.items():
            hub.update_scalar(f'train/{tag}_mflops', flops / 1e6)
        if self.width_interval and self.every_n_train_iters(
            runner, self.width_interval
        ):
            runner.logger.info(self.width_report(algo))

    @staticmethod
    def width_report(algo) -> str:
        """Expected width of every unit, one line each."""
        cost = algo.cost
        with torch.no_grad():
            widths = algo.mutator.expected_channels().tolist()
            expected = float(cost.expected())
        lines = [
            f'E[{cost.label}] {cost.format(expected)} / target '
            f'{cost.format(cost.target)}; expected channels per unit:'
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
