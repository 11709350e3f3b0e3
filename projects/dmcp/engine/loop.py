"""DMCPTrainLoop: warmup epochs of stage 1, then stage 1 + stage 2."""

from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import DataLoader

from ..models.algorithm import ARCH_KEY, check_optim_wrapper_keys
from ..registry import LOOPS

__all__ = ['DMCPTrainLoop']


@LOOPS.register_module()
class DMCPTrainLoop(EpochBasedTrainLoop):
    """Epoch-based loop of the DMCP search (Fig. 2a).

    During the first ``warmup_epochs`` epochs every iteration runs stage 1
    only (weights, with subnets drawn from the randomly initialised
    ``alpha``); afterwards every iteration runs stage 1 and then stage 2
    (``alpha``). Paper defaults: 40 epochs, 20 of them warmup.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The training dataloader.
        max_epochs (int): Total epochs.
        warmup_epochs (int): Epochs of stage 1 only. Defaults to 20.
        val_begin (int): First epoch to validate. Defaults to 1.
        val_interval (int): Validation interval in epochs. Defaults to 1.
        dynamic_intervals (list[tuple[int, int]], optional): As in
            ``EpochBasedTrainLoop``. Defaults to None.
    """

    def __init__(
        self,
        runner,
        dataloader: Union[DataLoader, Dict],
        max_epochs: int,
        warmup_epochs: int = 20,
        val_begin: int = 1,
        val_interval: int = 1,
        dynamic_intervals: Optional[List[Tuple[int, int]]] = None,
    ) -> None:
        if not (
            isinstance(warmup_epochs, int) and 0 <= warmup_epochs <= max_epochs
        ):
            raise ValueError(
                f'train_cfg.warmup_epochs must be an integer in [0, '
                f'max_epochs={max_epochs}], got {warmup_epochs!r}'
            )
        super().__init__(
            runner,
            dataloader,
            max_epochs,
            val_begin,
            val_interval,
            dynamic_intervals,
        )
        self.warmup_epochs = warmup_epochs

    @property
    def in_warmup(self) -> bool:
        """Whether the current epoch is a warmup epoch (stage 1 only)."""
        return self._epoch < self.warmup_epochs

    def run(self):
        """Check the optimizer wrappers, then train."""
        check_optim_wrappers(self.runner.optim_wrapper)
        return super().run()

    def run_iter(self, idx: int, data_batch: Sequence[dict]) -> None:
        """One iteration: stage 1, and stage 2 after warmup.

        Args:
            idx (int): Index of the batch in the epoch.
            data_batch (Sequence[dict]): The batch.
        """
        self.runner.call_hook(
            'before_train_iter', batch_idx=idx, data_batch=data_batch
        )
        try:
            outputs = self.runner.model.train_step(
                data_batch,
                optim_wrapper=self.runner.optim_wrapper,
                update_arch=not self.in_warmup,
            )
        except FloatingPointError as e:
            raise FloatingPointError(
                f'iteration {self._iter + 1} (epoch {self._epoch + 1}): {e}'
            ) from e
        self.runner.call_hook(
            'after_train_iter',
            batch_idx=idx,
            data_batch=data_batch,
            outputs=outputs,
        )
        self._iter += 1


def check_optim_wrappers(optim_wrapper) -> None:
    """Fail early, with the key to fix, on optimizer wrappers DMCP cannot
    use: both keys must exist and ``alpha`` must get no weight decay
    (Section 3.1.4).

    Args:
        optim_wrapper (OptimWrapperDict): The runner's optimizer wrappers.
    """
    check_optim_wrapper_keys(optim_wrapper)
    for group in optim_wrapper[ARCH_KEY].optimizer.param_groups:
        if group.get('weight_decay', 0):
            raise ValueError(
                f'optim_wrapper.{ARCH_KEY}.optimizer.weight_decay must be 0: '
                'the paper adds no weight decay to the architecture '
                f'parameters (got {group["weight_decay"]})'
            )
