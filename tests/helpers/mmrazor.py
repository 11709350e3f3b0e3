"""mmrazor 1.0.0's own subnet models, built from its published files, as
references for the tests that read them.

The plugin replaces the registry entries ``DMCPChannelMutator`` and
``DMCPChannelUnit`` with its own classes; :func:`mmrazor_registry` puts
mmrazor's back for the duration of a ``with`` block, so that mmrazor's code
(``sub_model``, ``load_fix_subnet``) builds what it builds in mmrazor.
"""

import contextlib
import copy
import time
from pathlib import Path
from typing import Iterator, Union

import torch
import yaml
from torch import nn

from tests.helpers import TEST_DATA

MMRAZOR_DATA = TEST_DATA / 'mmrazor'


@contextlib.contextmanager
def mmrazor_registry() -> Iterator[None]:
    """mmrazor's ``DMCPChannelMutator``/``DMCPChannelUnit`` in its
    registry while the block runs."""
    from mmrazor.models.mutables import DMCPChannelUnit
    from mmrazor.models.mutators import DMCPChannelMutator
    from mmrazor.registry import MODELS

    originals = {
        cls.__name__: MODELS._module_dict[cls.__name__]
        for cls in (DMCPChannelMutator, DMCPChannelUnit)
    }
    try:
        for cls in (DMCPChannelMutator, DMCPChannelUnit):
            MODELS._module_dict[cls.__name__] = cls
        yield
    finally:
        MODELS._module_dict.update(originals)


def build_mmrazor_subnet(
    classifier_cfg: dict, subnet_file: Union[str, Path]
) -> nn.Module:
    """mmrazor's own pruned classifier for a published subnet file.

    A mutator config (json) goes through mmrazor's ``sub_model`` exactly as
    its ``dmcp_*_subnet_32xb64.py`` configs build it (``mode='mutator'``);
    a unit-index yaml sets the choices of mmrazor's ``DMCPChannelMutator``
    by index (its ``set_choices``, over its ``units``) and then converts the
    dynamic layers to static ones, as ``load_fix_subnet`` does.

    Args:
        classifier_cfg (dict): The mmpretrain classifier config.
        subnet_file (str | Path): The published file.

    Returns:
        nn.Module: The pruned classifier (static layers).
    """
    from mmrazor.models.mutators import DMCPChannelMutator
    from mmrazor.registry import MODELS as RAZOR_MODELS
    from mmrazor.structures.subnet.fix_subnet import _dynamic_to_static

    cfg = dict(copy.deepcopy(classifier_cfg), _scope_='mmpretrain')
    subnet_file = str(subnet_file)
    with mmrazor_registry():
        if subnet_file.endswith('.json'):
            return RAZOR_MODELS.build(
                dict(
                    _scope_='mmrazor',
                    type='sub_model',
                    cfg=cfg,
                    fix_subnet=subnet_file,
                    mode='mutator',
                )
            )
        model = RAZOR_MODELS.build(cfg)
        mutator = DMCPChannelMutator(
            channel_unit_cfg=dict(
                type='DMCPChannelUnit', default_args=dict(choice_mode='number')
            ),
            parse_cfg=dict(
                _scope_='mmrazor',
                type='ChannelAnalyzer',
                demo_input=(1, 3, 224, 224),
                tracer_type='BackwardTracer',
            ),
        )
        mutator.prepare_from_supernet(model)
        choices = yaml.safe_load(Path(subnet_file).read_text())
        assert sorted(choices) == list(range(len(mutator.units)))
        # mmrazor's DMCPChannelMutator.set_choices: str(index) -> choice
        mutator.set_choices({str(i): c for i, c in choices.items()})
        _dynamic_to_static(model)
        return model


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and batch-norm statistics (so that every one counts).

    Args:
        model (nn.Module): The model, changed in place.
        seed (int): Seed of the generator.

    Returns:
        nn.Module: ``model``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = torch.randn(tensor.shape, generator=gen) * 0.1
            if name.endswith('running_var'):
                values = values.abs() + 0.5
            tensor.copy_(values)
    return model


def save_like_mmrazor_runner(model: nn.Module, path: Union[str, Path]) -> None:
    """Save ``model`` as mmengine's runner saves a checkpoint of an mmrazor
    subnet training: meta (config text, seed, versions, dataset meta),
    state dict, message hub, optimizer and scheduler states.

    Args:
        model (nn.Module): The model.
        path (str | Path): The checkpoint.
    """
    import mmengine
    import numpy as np
    from mmengine.logging import MessageHub
    from mmengine.optim.scheduler import CosineAnnealingLR
    from mmengine.runner import save_checkpoint

    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.8, momentum=0.9, nesterov=True
    )
    scheduler = CosineAnnealingLR(optimizer, T_max=100, by_epoch=True)
    hub = MessageHub(f'mmrazor_like_{time.monotonic_ns()}')
    hub.update_scalar('train/loss', np.float64(1.25))
    hub.update_scalar('train/lr', 0.8)
    hub.update_info('epoch', 100)
    save_checkpoint(
        dict(
            meta=dict(
                epoch=100,
                iter=62500,
                cfg="model = dict(_scope_='mmrazor', type='sub_model')",
                seed=np.int64(2016),
                experiment_name='dmcp_subnet_32xb64',
                time='20230101_000000',
                mmengine_version=mmengine.__version__,
                dataset_meta=dict(classes=('tench', 'goldfish')),
            ),
            state_dict=model.state_dict(),
            message_hub=hub.state_dict(),
            optimizer=optimizer.state_dict(),
            param_schedulers=[scheduler.state_dict()],
        ),
        str(path),
    )
