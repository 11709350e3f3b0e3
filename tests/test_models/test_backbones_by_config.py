"""New backbones pruned by config alone: configs inheriting the ResNet-18
supernet config with mmpretrain's RegNetX-400MF and ResNeXt-50, and with a
user's own backbone registered from its own module
(``tests/data/user_backbone.py``), nothing under ``projects/`` changed.

The units found are checked, a random subnet is built from the config's
architecture and its FLOPs match the mutator's; a slow test searches the
user backbone through ``tools/train.py``.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config
from torch import nn

import projects.dmcp  # noqa: F401  (compat shims + registration first)
from projects.dmcp.models import (
    DMCP,
    count_flops,
    dump_subnet,
    tensor_forward,
)
from projects.dmcp.registry import MODELS
from tests.helpers import TEST_CONFIGS
from tests.helpers.search import (
    RESNET18_SUPERNET,
    make_tiny_imagenet,
    run_tool,
    tiny_search_options,
)

CONFIGS = TEST_CONFIGS
USER_CONFIG = CONFIGS / 'dmcp_user_backbone_supernet.py'
USER_SUBNET_CONFIG = CONFIGS / 'dmcp_user_backbone_subnet.py'
SHAPE = (3, 64, 64)
# config -> a target its supernet can reach at 64x64
CASES = {
    'regnetx-400mf': (CONFIGS / 'dmcp_regnetx-400mf_supernet.py', '20M'),
    'resnext50': (CONFIGS / 'dmcp_resnext50_supernet.py', '200M'),
    'user': (USER_CONFIG, '50M'),
}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(case: str) -> Config:
    path, target = CASES[case]
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict(
        {'model.input_shape': SHAPE, 'model.target_flops': target}
    )
    return cfg


def build(cfg: Config) -> DMCP:
    torch.manual_seed(0)
    model = MODELS.build(
        dict(cfg.model, data_preprocessor=cfg.get('data_preprocessor'))
    )
    assert isinstance(model, DMCP)
    return model


def test_user_config_changes_only_the_backbone():
    base = Config.fromfile(str(RESNET18_SUPERNET))
    user = Config.fromfile(str(USER_CONFIG))
    changed = {k for k in set(base) | set(user) if base.get(k) != user.get(k)}
    assert changed == {'model', 'custom_imports'}
    assert user.custom_imports.imports == [
        'projects.dmcp',
        'tests.data.user_backbone',
    ]
    base_model, user_model = (
        copy.deepcopy(base.model),
        copy.deepcopy(user.model),
    )
    assert user_model.architecture.pop('backbone') == dict(
        type='TinyUserNet', out_channels=512
    )
    base_model.architecture.pop('backbone')
    assert base_model == user_model


@pytest.mark.parametrize('case', ['regnetx-400mf', 'resnext50'])
def test_grouped_backbones_prune_their_residual_chains(case):
    model = build(load(case))
    mutator = model.mutator
    modules = dict(model.architecture.named_modules())
    grouped = [
        name
        for name, m in modules.items()
        if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels
    ]
    assert grouped  # the blocks' 3x3 convolutions
    in_units = {
        name
        for spec in mutator.specs
        for name in spec.producers + spec.followers + spec.consumers
    }
    producers = {name for spec in mutator.specs for name in spec.producers}
    for name in grouped:
        assert name not in in_units, name  # kept whole
        feeding = name.replace('conv2', 'conv1')  # the 1x1 conv before it
        assert feeding not in producers, feeding
        rec = mutator.trace.layer(feeding)
        assert 'grouped Conv2d' in mutator.trace.fixed_reason(rec.out_node)
    # every residual chain is a unit: stem, and per stage the blocks'
    # conv3 with the downsample shortcut
    blocks = [n[: -len('.conv3')] for n in modules if n.endswith('.conv3')]
    assert blocks and all(f'{b}.conv3' in producers for b in blocks)
    assert 'backbone.conv1' in producers
    stages = sorted({b.rsplit('.', 1)[0] for b in blocks})
    assert all(f'{s}.0.downsample.0' in producers for s in stages)
    assert len(mutator.specs) == 1 + len(stages)
    assert 'head.fc' not in producers
    assert model.min_flops < model.target_flops < model.full_flops


def test_user_backbone_units():
    model = build(load('user'))
    units = {spec.name: spec.producers for spec in model.mutator.specs}
    assert units['backbone.stem.0.0'] == [  # identity shortcuts join them
        'backbone.stem.0.0',
        'backbone.stages.0.conv2.0',
        'backbone.stages.1.conv2.0',
    ]
    assert units['backbone.stages.2.conv2.0'] == [
        'backbone.stages.2.conv2.0',
        'backbone.stages.2.shortcut.0',
        'backbone.stages.3.conv2.0',
    ]
    assert units['backbone.last.0.0'] == ['backbone.last.0.0']
    assert len(units) == 10  # 3 chains, 6 first convs of blocks, the last


@pytest.mark.parametrize('case', list(CASES))
def test_random_subnet_of_the_config_builds(case, tmp_path):
    """A Direct Sample as a yaml -> the pruned classifier of the config's
    architecture; its FLOPs are the mutator's and it runs."""
    cfg = load(case)
    model = build(cfg)
    mutator = model.mutator
    with torch.no_grad():
        for alpha in mutator.arch_parameters():
            alpha.normal_(0.0, 2.0)
    choices = mutator.sample_choices(
        'direct', torch.Generator().manual_seed(0)
    )
    path = tmp_path / 'subnet.yaml'
    dump_subnet(
        str(path), mutator.layer_channels(choices), dict(input_shape=SHAPE)
    )
    pruned = MODELS.build(
        dict(
            type='mmrazor.DMCPSubnet',
            architecture=cfg.model.architecture,
            subnet=str(path),
            input_shape=SHAPE,
        )
    )
    flops = count_flops(pruned, SHAPE, tensor_forward)
    assert flops == mutator.subnet_flops(choices) < model.full_flops
    with torch.no_grad():
        logits = pruned.eval()(torch.randn(2, *SHAPE), mode='tensor')
    assert logits.shape == (2, 1000)
    # the supernet runs the same subnet on weight slices
    mutator.set_subnet(choices)
    with torch.no_grad():
        out = model.architecture.eval()(torch.randn(2, *SHAPE), mode='tensor')
    assert out.shape == (2, 1000)


@pytest.mark.slow
def test_search_user_backbone_with_train_tool(tmp_path):
    data = make_tiny_imagenet(tmp_path / 'data')
    work = tmp_path / 'work'
    run_tool(
        [
            'python',
            'tools/train.py',
            str(USER_CONFIG),
            '--work-dir',
            str(work),
            '--cfg-options',
            *tiny_search_options(data, target_flops='10M'),
        ]
    )
    doc = yaml.safe_load((work / 'DMCP_SUBNET_IMAGENET.yaml').read_text())
    meta, channels = doc['meta'], doc['channels']
    assert meta['supernet'].endswith('dmcp_user_backbone_supernet.py')
    assert 0 < meta['flops'] <= meta['target_flops'] == 10_000_000
    assert len(channels) == 16  # every conv of the backbone
    assert (
        channels['backbone.stem.0.0']
        == channels['backbone.stages.0.conv2.0']
        == channels['backbone.stages.1.conv2.0']
    )
    assert (
        channels['backbone.stages.4.conv2.0']
        == channels['backbone.stages.4.shortcut.0']
        == channels['backbone.stages.5.conv2.0']
    )
    assert 1 <= channels['backbone.last.0.0'] <= 512

    # the retraining config (the ResNet-18 one, backbone swapped) builds it
    proc = run_tool(
        [
            'python',
            'tools/analysis/get_flops.py',
            USER_SUBNET_CONFIG,
            '--json',
            '--cfg-options',
            f'model.subnet={work / "DMCP_SUBNET_IMAGENET.yaml"}',
        ]
    )
    counted = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counted['flops'] == meta['flops']
    assert counted['input_shape'] == [3, 32, 32]

    # the picture finds the full widths through meta.supernet
    proc = run_tool(
        [
            'python',
            'tools/analysis/plot_subnet.py',
            work / 'DMCP_SUBNET_IMAGENET.yaml',
        ]
    )
    assert 'retained channels only' not in proc.stderr
    assert Path(work / 'DMCP_SUBNET_IMAGENET.png').is_file()
