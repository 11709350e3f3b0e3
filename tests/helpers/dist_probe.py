"""A test-only hook that checks, after every training iteration, that all
ranks hold the same alpha and weights, and writes what it saw per rank."""

import os.path as osp

import torch
from mmengine.dist import all_gather, get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from projects.dmcp.utils import unwrap


@HOOKS.register_module()
class RankStateProbeHook(Hook):
    """Records, per iteration, the largest difference between this rank's
    alpha / weights and every other rank's; dumps it at the end."""

    priority = 'LOW'

    def __init__(self) -> None:
        self.alpha_diffs = []
        self.weight_diffs = []
        self.flops = []

    def after_train_iter(
        self, runner, batch_idx, data_batch=None, outputs=None
    ) -> None:
        algo = unwrap(runner.model)
        alpha = algo.mutator.alphas().detach().flatten()
        weights = torch.cat(
            [p.detach().flatten() for p in algo.architecture.parameters()]
        )
        for mine, diffs in (
            (alpha, self.alpha_diffs),
            (weights, self.weight_diffs),
        ):
            diffs.append(
                max(
                    float((mine - other).abs().max())
                    for other in all_gather(mine)
                )
            )
        self.flops.append(
            float(
                runner.message_hub.get_scalar(
                    'train/expected_mflops'
                ).current()
            )
        )

    def after_train(self, runner) -> None:
        algo = unwrap(runner.model)
        torch.save(
            dict(
                alpha=algo.mutator.alphas().detach(),
                alpha_diffs=self.alpha_diffs,
                weight_diffs=self.weight_diffs,
                flops=self.flops,
            ),
            osp.join(runner.work_dir, f'probe_rank{get_rank()}.pt'),
        )
