"""How hard does the task loss push alpha, next to the budget loss?

``benchmarks/budget_dynamics.py`` replays the architecture steps of a search
with a task-loss surrogate; this measures the scale to give it, in real
searches that run here:

* the Fashion-MNIST search config on the real data set (the demo's data),
  its warmup and then architecture steps, as the config schedules them;
* the ResNet-50 ImageNet search config at 224x224 on Fashion-MNIST images
  scaled to 224x224 and repeated over three channels (batch 8, a short
  warmup: all a 2-core CPU can do in minutes).

At points along each search it takes, for the Markov-scaled network of
stage 2, the gradient of the task loss w.r.t. alpha, ``g_task``, and of
``log E[FLOPs]``, ``g_logE``, and records ``||g_task|| / (lambda_reg *
||g_logE||)``: the ratio is free of the FLOPs scale and of the distance to
the target. It also records how much ``g_task`` varies between batches at
the same alpha (the noise, relative to the norm of the mean gradient).

Run by ``python benchmarks/budget_dynamics.py --calibrate``; writes
``benchmarks/results/budget_calibration.json``.
"""

import copy
import json
import math
import os.path as osp
import statistics
import time
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmpretrain.structures import DataSample

from benchmarks.budget_dynamics import build_algorithm, load_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DATA = osp.join(REPO, 'data', 'fashion-mnist')


def load_fashion_mnist(n: int) -> tuple:
    """The first ``n`` training images (uint8, ``(n, 28, 28)``) and labels,
    prepared by the demo (``data/fashion-mnist``)."""
    from demo.fashion_mnist_demo import prepare_data

    prepare_data(DATA)
    with open(osp.join(DATA, 'train-images-idx3-ubyte'), 'rb') as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16)
    with open(osp.join(DATA, 'train-labels-idx1-ubyte'), 'rb') as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    images = torch.from_numpy(images.reshape(-1, 28, 28)[:n].copy())
    return images, torch.from_numpy(labels[:n].astype(np.int64))


def batches(images, labels, size: int, shape: tuple, seed: int):
    """Endless shuffled batches in the data preprocessor's input format,
    images resized to ``shape = (C, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(images), generator=g)
        for i in range(0, len(order) - size + 1, size):
            idx = order[i : i + size]
            x = images[idx][:, None].float()
            if x.shape[-2:] != shape[1:]:
                x = F.interpolate(x, size=shape[1:], mode='bilinear')
            x = x.round().clamp(0, 255).to(torch.uint8)
            x = x.expand(-1, shape[0], -1, -1)
            yield dict(
                inputs=list(x),
                data_samples=[
                    DataSample().set_gt_label(int(y)) for y in labels[idx]
                ],
            )


def optim_wrappers(cfg, algo) -> OptimWrapperDict:
    """The config's two optimizers (no schedule: a short run)."""
    wrappers = {}
    for key, params in (
        ('architecture', algo.architecture.parameters()),
        ('mutator', algo.mutator.parameters()),
    ):
        opt = dict(cfg.optim_wrapper[key].optimizer)
        kind = opt.pop('type')
        clip = cfg.optim_wrapper[key].get('clip_grad')
        wrappers[key] = OptimWrapper(
            getattr(torch.optim, kind)(params, **opt),
            clip_grad=dict(clip) if clip else None,
        )
    return OptimWrapperDict(**wrappers)


def alpha_grads(algo, data: dict) -> tuple:
    """``g_task`` and ``g_logE`` at the current alpha, flattened."""
    alphas = algo.mutator.arch_parameters()
    data = algo.data_preprocessor(data, True)
    with algo.mutator.markov_scaling():
        losses = algo.architecture(**data, mode='loss')
        loss_cls, _ = algo.parse_losses(losses)
    g_task = torch.autograd.grad(loss_cls, alphas)
    g_log_e = torch.autograd.grad(
        torch.log(algo.mutator.expected_flops()), alphas
    )
    flat = lambda gs: torch.cat([g.flatten() for g in gs]).double()  # noqa
    return flat(g_task), flat(g_log_e)


def measure(
    name: str,
    shape: tuple,
    batch: int,
    warmup: int,
    arch_steps: int,
    every: int,
    noise_batches: int,
    n_images: int,
) -> Dict:
    """One short real search and its gradient ratios."""
    torch.manual_seed(0)
    cfg = load_config(name)
    algo = build_algorithm(cfg)
    algo.train()
    optim = optim_wrappers(cfg, algo)
    images, labels = load_fashion_mnist(n_images)
    data = batches(images, labels, batch, shape, seed=0)
    lam = algo.budget.loss_weight
    start = time.perf_counter()
    for i in range(warmup):
        algo.train_step(next(data), optim, update_arch=False)
        if (i + 1) % 25 == 0:
            print(f'{name}: warmup {i + 1}/{warmup}', flush=True)
    ratios, noises, flops = [], [], []
    for step in range(arch_steps):
        if step % every == 0:
            grads = [
                alpha_grads(algo, next(data)) for _ in range(noise_batches)
            ]
            g_log_e = grads[0][1]
            mean = torch.stack([g for g, _ in grads]).mean(0)
            for g_task, _ in grads:
                ratios.append(float(g_task.norm() / (lam * g_log_e.norm())))
            spread = torch.stack([(g - mean).norm() ** 2 for g, _ in grads])
            noises.append(float(spread.mean().sqrt() / mean.norm()))
            flops.append(
                float(algo.mutator.expected_flops()) / algo.target_flops
            )
        algo.train_step(next(data), optim, update_arch=True)
    return dict(
        config=name,
        measurements=len(ratios),
        input_shape=list(shape),
        batch=batch,
        warmup_iters=warmup,
        arch_steps=arch_steps,
        ratio_median=statistics.median(ratios),
        ratio_range=[min(ratios), max(ratios)],
        noise_median=statistics.median(noises),
        e_over_t=[round(f, 4) for f in flops],
        seconds=round(time.perf_counter() - start, 1),
    )


def calibrate(path: str) -> None:
    """Measure both searches and write the calibration file.

    Args:
        path (str): The json to write.
    """
    torch.set_num_threads(1)  # no oversubscription on a shared machine
    runs: List[Dict] = [
        measure(
            'fashion-mnist',
            (1, 28, 28),
            batch=128,
            warmup=200,
            arch_steps=100,
            every=20,
            noise_batches=4,
            n_images=20000,
        ),
        measure(
            'resnet50',
            (3, 224, 224),
            batch=8,
            warmup=12,
            arch_steps=6,
            every=2,
            noise_batches=3,
            n_images=2000,
        ),
    ]
    for run in runs:
        print(json.dumps(run))
    ratio = math.exp(
        statistics.mean(math.log(r['ratio_median']) for r in runs)
    )
    noise = statistics.median(r['noise_median'] for r in runs)
    out = dict(
        ratio=ratio,
        noise=noise,
        how='geometric mean of the per-search median ratios; median noise',
        runs=runs,
        measured=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    )
    with open(path, 'w') as f:
        json.dump(out, f, indent=1)
    print(json.dumps(copy.deepcopy(dict(ratio=ratio, noise=noise))))
