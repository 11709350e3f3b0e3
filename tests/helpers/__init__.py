"""Shared helpers for the test suite: a tiny generated image folder and the
paths of the tiny configs.

:func:`make_tiny_imagefolder` writes an mmpretrain ``CustomDataset`` folder in
ImageNet layout (``data_root/{train,val}/<class>/<img>.png``) of small,
deterministic RGB PNGs; :func:`tiny_cfg_options` returns the
``--cfg-options`` that point ``tests/data/configs/tiny_resnet18.py`` (or any
config with the same dataloader layout) at such a folder.
"""

import os
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch
from PIL import Image
from torch.overrides import TorchFunctionMode

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = REPO_ROOT / 'tests' / 'data'
TEST_CONFIGS = TEST_DATA / 'configs'
TINY_CONFIG = TEST_CONFIGS / 'tiny_resnet18.py'
DMCP_CONFIGS = REPO_ROOT / 'configs' / 'pruning' / 'dmcp'


def make_tiny_imagefolder(
    root: Union[str, os.PathLike],
    num_classes: int = 3,
    num_train: int = 4,
    num_val: int = 2,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write a tiny image-classification folder in ImageNet layout.

    Each class gets its own base colour plus seeded noise, so the images are
    deterministic (same arguments, same bytes) and the classes are
    separable. Existing files are overwritten.

    Args:
        root: The ``data_root`` to create (parents are created as needed).
        num_classes: Number of classes, named ``class_0``, ``class_1``, ...
        num_train: Images per class under ``train/``.
        num_val: Images per class under ``val/``.
        size: Height and width of the square images, in pixels.
        seed: Seed of the numpy generator that draws the noise.

    Returns:
        Path: ``root`` as a :class:`pathlib.Path`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (('train', num_train), ('val', num_val)):
        for c in range(num_classes):
            folder = root / split / f'class_{c}'
            folder.mkdir(parents=True, exist_ok=True)
            base = np.zeros(3)
            base[c % 3] = 160.0 + 40.0 * (c // 3)
            for i in range(count):
                noise = rng.normal(0.0, 20.0, size=(size, size, 3))
                pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f'{split}_{c}_{i}.png')
    return root


def tiny_cfg_options(
    data_root: Union[str, os.PathLike],
    num_classes: int = 3,
    batch_size: int = 4,
    max_iters: int = 2,
    extra: Optional[List[str]] = None,
) -> List[str]:
    """Build ``--cfg-options`` pointing the tiny config at a generated folder.

    Args:
        data_root: A folder written by :func:`make_tiny_imagefolder`.
        num_classes: Number of classes in that folder.
        batch_size: Batch size of the train, val and test dataloaders.
        max_iters: Training iterations (validation and the checkpoint happen
            at the last one).
        extra: More ``key=value`` strings appended at the end.

    Returns:
        list[str]: ``key=value`` strings, for ``--cfg-options`` or
        ``Config.merge_from_dict`` after splitting on the first ``=``.
    """
    opts = [
        f'model.head.num_classes={num_classes}',
        f'data_preprocessor.num_classes={num_classes}',
        f'train_cfg.max_iters={max_iters}',
        f'train_cfg.val_interval={max_iters}',
        f'default_hooks.checkpoint.interval={max_iters}',
    ]
    for loader in ('train', 'val', 'test'):
        opts += [
            f'{loader}_dataloader.dataset.data_root={data_root}',
            f'{loader}_dataloader.batch_size={batch_size}',
            f'{loader}_dataloader.num_workers=0',
        ]
    return opts + list(extra or [])


def failure_excerpt(output: str, tail: int = 3000) -> str:
    """What to show when a subprocess failed: the text around the first
    sign of a child's death (a Python traceback, a C++ ``terminate`` or an
    abort), which torchrun's own traceback pushes out of a plain tail, then
    the tail.

    Args:
        output (str): The process's merged output.
        tail (int): Characters of the tail to keep. Defaults to 3000.

    Returns:
        str: The excerpt.
    """
    marks = [
        i
        for i in (
            output.find('Traceback (most recent call last)'),
            output.find('terminate called'),
            output.find('Fatal Python error'),
        )
        if i >= 0
    ]
    head = ''
    if marks and min(marks) < len(output) - tail:
        start = max(0, min(marks) - 2000)
        head = output[start : min(marks) + 2000] + '\n[...]\n'
    return head + output[-tail:]


def load_weights_only(path: Union[str, os.PathLike]) -> dict:
    """Load a checkpoint as every checkpoint this project writes must load:
    ``torch.load(..., weights_only=True)`` with nothing allowed beyond
    :func:`projects.dmcp.compat.checkpoint_safe_globals` (mmengine's
    message hub, numpy arrays and scalars).

    Args:
        path: The checkpoint.

    Returns:
        dict: The loaded checkpoint.
    """
    import torch

    from projects.dmcp.compat import checkpoint_safe_globals

    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        return torch.load(path, map_location='cpu', weights_only=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class CudaDeviceRules(TorchFunctionMode):
    """Enforce, on a CPU-only machine, the device rules a CUDA run enforces.

    Inside the mode:

    * a random function given a ``generator`` (``torch.rand``, ``randint``,
      ``randn``, ``randperm``, ``multinomial``, ``bernoulli``, the in-place
      ``uniform_``/``normal_``/...) must fill a tensor on the generator's
      device type: CUDA refuses a CPU generator for a CUDA tensor ("Expected
      a 'cuda' device type for generator but found 'cpu'");
    * an operation may not mix a tensor on another device (``meta`` in the
      tests) with a CPU tensor of one or more dimensions, as CUDA refuses
      them; CPU scalars (0-dim), device moves (``to``, ``copy_``, ``cpu``)
      and indexing with CPU indices stay allowed, as on CUDA.

    Put the model on the ``meta`` device to make "another device": a tensor
    left on the CPU then meets a meta one and fails here, and a host sync
    (``.item()``, ``float()``, ``.tolist()``) fails on its own.
    """

    _MOVES = {'to', 'copy_', 'cpu', 'cuda', '__getitem__', '__setitem__'}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        generator = kwargs.get('generator')
        tensors = [
            t
            for t in _flat(list(args) + list(kwargs.values()))
            if isinstance(t, torch.Tensor)
        ]
        if generator is not None:
            target = kwargs.get('device')
            if target is None:
                target = tensors[0].device if tensors else 'cpu'
            target = torch.device(target)
            if generator.device.type != target.type:
                raise RuntimeError(
                    f"Expected a '{target.type}' device type for generator "
                    f"but found '{generator.device.type}' (in "
                    f'{getattr(func, "__name__", func)})'
                )
        if getattr(func, '__name__', '') not in self._MOVES:
            devices = {t.device.type for t in tensors}
            if len(devices - {'cpu'}) and any(
                t.device.type == 'cpu' and t.dim() > 0 for t in tensors
            ):
                raise RuntimeError(
                    f'{getattr(func, "__name__", func)} mixes a CPU tensor '
                    f'with one on {sorted(devices - {"cpu"})}'
                )
        return func(*args, **kwargs)


def _flat(items: list) -> list:
    out = []
    for item in items:
        if isinstance(item, (list, tuple)):
            out += _flat(list(item))
        else:
            out.append(item)
    return out
