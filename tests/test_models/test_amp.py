"""``--amp``: mmengine's ``AmpOptimWrapper`` inside DMCP's two-wrapper dict.

mmengine builds ``AmpOptimWrapper`` only where CUDA (or NPU/MLU/MUSA) is
available; here its availability check is patched so that the wrapper is
built on the CPU with bfloat16 autocast, the one autocast the CPU has. Its
gradient scaler disables itself without CUDA, so what is exercised is the
autocast context of both stages, the architecture step's
``backward(inputs=alphas)`` through the wrapper, and the Markov scale in the
activations' dtype.
"""

import pytest
import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapperDict
from mmengine.optim.optimizer import amp_optimizer_wrapper

from tests.test_models.test_device import make_algo, make_batch


@pytest.fixture
def amp_optim(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: 1)

    def build(algo):
        return OptimWrapperDict(
            architecture=AmpOptimWrapper(
                optimizer=torch.optim.SGD(
                    algo.architecture.parameters(), lr=0.1, momentum=0.9
                ),
                dtype='bfloat16',
            ),
            mutator=AmpOptimWrapper(
                optimizer=torch.optim.SGD(algo.mutator.parameters(), lr=1.0),
                dtype='bfloat16',
            ),
        )

    return build


def test_search_step_under_bf16_autocast(amp_optim):
    algo = make_algo()
    algo.train()
    optim = amp_optim(algo)
    weights0 = [p.detach().clone() for p in algo.architecture.parameters()]
    alpha0 = algo.mutator.alphas().detach().clone()
    dtypes = []
    conv = algo.architecture.backbone.layer1[0].conv1
    handle = conv.register_forward_hook(
        lambda m, a, out: dtypes.append(out.dtype)
    )
    log = algo.train_step(make_batch(), optim, update_arch=True)
    handle.remove()
    # both stages ran in bf16 (4 subnets of stage 1, then stage 2)
    assert dtypes == [torch.bfloat16] * 5
    assert torch.isfinite(log['loss']) and torch.isfinite(log['arch.loss_cls'])
    assert not torch.equal(algo.mutator.alphas(), alpha0)
    assert any(
        not torch.equal(p, w)
        for p, w in zip(algo.architecture.parameters(), weights0)
    )
    # the weights and alpha stay float32 (autocast casts activations only)
    assert {p.dtype for p in algo.parameters()} == {torch.float32}


def test_markov_scale_keeps_the_activation_dtype():
    algo = make_algo()
    block = algo.architecture.backbone.layer1[0]
    x = torch.randn(2, 64, 8, 8)
    seen = []
    with (
        torch.autocast('cpu', dtype=torch.bfloat16),
        algo.mutator.markov_scaling(),
    ):
        # registered after the scale hook: sees the scaled output
        handle = block.bn1.register_forward_hook(
            lambda m, a, out: seen.append(out.dtype)
        )
        block(x)
    handle.remove()
    assert seen == [torch.bfloat16]
