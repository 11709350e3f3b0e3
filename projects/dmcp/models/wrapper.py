"""The distributed wrapper of DMCP."""

from typing import Any, Dict, Union

from mmengine.dist import broadcast, get_world_size
from mmengine.optim import OptimWrapperDict
from torch import Tensor, nn

from ..registry import MODEL_WRAPPERS

__all__ = ['DMCPDDP', 'DMCPDistributedWrapper']


@MODEL_WRAPPERS.register_module(force=True)
class DMCPDDP(nn.Module):
    """Distributed wrapper for :class:`~projects.dmcp.models.DMCP`
    (registered as ``DMCPDDP``, replacing mmrazor's).

    DMCP runs several forward/backward passes per optimizer step, with
    subnets whose unused weights get no gradient, so it does not use
    ``DistributedDataParallel``'s per-backward reduction. Instead the wrapper
    broadcasts rank 0's parameters and buffers once, the algorithm's own
    :meth:`~projects.dmcp.models.DMCP.train_step` (the one code path, single
    process or not) averages the gradients over the ranks right before each
    optimizer step, and the wrapper broadcasts rank 0's buffers (batch norm
    statistics) after each step, as DDP's ``broadcast_buffers`` does. Every
    rank therefore holds the same weights and ``alpha`` after every step.

    Args:
        module (nn.Module): The DMCP algorithm.
        broadcast_buffers (bool): Broadcast rank 0's buffers after each
            step. Defaults to True.
        **kwargs: Accepted and ignored, so that configs written for
            ``MMDistributedDataParallel`` (``find_unused_parameters``, ...)
            keep working.
    """

    def __init__(
        self, module: nn.Module, broadcast_buffers: bool = True, **kwargs: Any
    ) -> None:
        super().__init__()
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self._broadcast(list(module.parameters()) + list(module.buffers()))

    @staticmethod
    def _broadcast(tensors: list) -> None:
        if get_world_size() == 1:
            return
        for t in tensors:
            broadcast(t.data, src=0)

    def train_step(
        self,
        data: Union[dict, tuple, list],
        optim_wrapper: OptimWrapperDict,
        **kwargs: Any,
    ) -> Dict[str, Tensor]:
        """Run the wrapped algorithm's ``train_step``, then sync buffers.

        Args:
            data (dict | tuple | list): A batch.
            optim_wrapper (OptimWrapperDict): The optimizer wrappers.
            **kwargs: Passed on (e.g. ``update_arch``).

        Returns:
            dict[str, Tensor]: Losses to log.
        """
        log_vars = self.module.train_step(data, optim_wrapper, **kwargs)
        if self.broadcast_buffers:
            self._broadcast(list(self.module.buffers()))
        return log_vars

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """Validate with the wrapped algorithm."""
        return self.module.val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """Test with the wrapped algorithm."""
        return self.module.test_step(data)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Forward of the wrapped algorithm."""
        return self.module(*args, **kwargs)


#: The old Python name of :class:`DMCPDDP`.
DMCPDistributedWrapper = DMCPDDP
