"""In-place distillation of the official DMCP code (github Zx55/dmcp,
``utils/loss_fn.py`` and ``runner/dmcp_runner.py``): in stage 1 the ``max``
subnet learns from the labels and the smaller subnets from its detached
output, by the KL divergence at temperature ``T`` (1 there)."""

import contextlib
from typing import Iterator, List

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['kl_to_teacher', 'captured_output']


def kl_to_teacher(
    student: Tensor, teacher: Tensor, temperature: float = 1.0
) -> Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed
    over classes and averaged over the batch (the official ``KL``); no
    gradient flows to ``teacher``.

    Args:
        student (Tensor): Logits of the learning subnet, ``(N, K)``.
        teacher (Tensor): Logits of the ``max`` subnet, ``(N, K)``.
        temperature (float): ``T``. Defaults to 1.0.

    Returns:
        Tensor: The loss, a float32 scalar on the logits' device.
    """
    log_p = F.log_softmax(student.float() / temperature, dim=1)
    q = F.softmax(teacher.detach().float() / temperature, dim=1)
    kl = F.kl_div(log_p, q, reduction='none').sum(dim=1).mean()
    return kl * temperature**2


@contextlib.contextmanager
def captured_output(module: nn.Module) -> Iterator[List[Tensor]]:
    """Collect what ``module`` returns while the context is open (e.g. the
    logits the classification head computes inside ``mode='loss'``).

    Args:
        module (nn.Module): The module to watch.

    Yields:
        list[Tensor]: The outputs, in call order.
    """
    outputs: List[Tensor] = []
    handle = module.register_forward_hook(
        lambda m, args, out: outputs.append(out)
    )
    try:
        yield outputs
    finally:
        handle.remove()
