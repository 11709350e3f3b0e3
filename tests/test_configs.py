"""The shipped configs: each subnet config retrains the architecture its
search config searched, with a schedule that spans its epochs."""

import pytest
from mmengine.config import Config

from tests.helpers import DMCP_CONFIGS

CONFIGS = DMCP_CONFIGS
PAIRS = {
    'resnet18': (
        'resnet18_supernet_8xb64_in1k',
        'resnet18_subnet_32xb64_in1k',
    ),
    'resnet50': (
        'resnet50_supernet_8xb64_in1k',
        'resnet50_subnet_32xb64_in1k',
    ),
    'mbv2_1.5x': (
        'mobilenet-v2-1.5x_supernet_8xb64_in1k',
        'mobilenet-v2-1.5x_subnet_32xb64_in1k',
    ),
    'fashion-mnist': (
        'resnet18-cifar-w16_supernet_fashion-mnist',
        'resnet18-cifar-w16_subnet_fashion-mnist',
    ),
    'fashion-mnist-mbv2': (
        'mobilenet-v2_supernet_fashion-mnist',
        'mobilenet-v2_subnet_fashion-mnist',
    ),
}


def load(stem: str) -> Config:
    return Config.fromfile(str(CONFIGS / f'dmcp_{stem}.py'))


@pytest.mark.parametrize('name', PAIRS)
def test_subnet_config_matches_its_search(name: str) -> None:
    supernet, subnet = (load(stem) for stem in PAIRS[name])
    assert supernet.model.type == 'mmrazor.DMCP'
    assert subnet.model.type == 'mmrazor.DMCPSubnet'
    assert subnet.model.architecture == supernet.model.architecture
    if name != 'fashion-mnist':  # the demo retrains with its own decay
        # the architecture's weight decay, as in its search
        assert (
            subnet.optim_wrapper.optimizer.weight_decay
            == supernet.optim_wrapper.architecture.optimizer.weight_decay
        )
    epochs = subnet.train_cfg.max_epochs
    warmup, cosine = subnet.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 1)
    assert cosine.type == 'CosineAnnealingLR'
    assert (cosine.begin, cosine.end, cosine.T_max) == (1, epochs, epochs - 1)
    assert subnet.custom_hooks == []


@pytest.mark.parametrize(
    'name, epochs', [('resnet18', 100), ('resnet50', 100), ('mbv2_1.5x', 250)]
)
def test_imagenet_subnet_recipe(name: str, epochs: int) -> None:
    """Section 4.1: lr 0.2 -> 0.8 in the first epoch, batch 2048."""
    cfg = load(PAIRS[name][1])
    assert cfg.train_cfg.max_epochs == epochs
    assert cfg.optim_wrapper.optimizer.lr * cfg.param_scheduler[
        0
    ].start_factor == (pytest.approx(0.2))
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.8)
    assert cfg.auto_scale_lr.base_batch_size == 2048


def test_adam_alpha_ablation_changes_only_the_alpha_optimizer() -> None:
    """The ablation config is its base with Adam on alpha (no clip) and the
    alpha schedule's floor lowered, nothing else."""
    base = load('resnet18-cifar-w16_supernet_fashion-mnist').to_dict()
    ablation = Config.fromfile(
        str(
            CONFIGS / 'ablation' / 'dmcp_resnet18-cifar-w16_supernet_'
            'fashion-mnist_adam-alpha.py'
        )
    ).to_dict()
    mutator = ablation['optim_wrapper'].pop('mutator')
    assert mutator['optimizer'] == dict(type='Adam', lr=0.3, weight_decay=0.0)
    assert mutator['clip_grad'] is None
    base['optim_wrapper'].pop('mutator')
    (schedule,) = ablation['param_scheduler'].pop('mutator')
    (base_schedule,) = base['param_scheduler'].pop('mutator')
    assert schedule.pop('eta_min') == 0.01
    base_schedule.pop('eta_min')
    assert schedule == base_schedule
    assert ablation == base


def test_latency_budget_config_builds_on_the_shipped_table() -> None:
    """The demo's latency-budget search: the demo's supernet and schedule,
    the shipped table of this CPU, a target the table can reach."""
    from projects.dmcp.model_config import read_model_config
    from projects.dmcp.models.cost import LatencyCost
    from projects.dmcp.registry import build_model
    from tests.helpers import REPO_ROOT

    cfg = load('resnet18-cifar-w16_supernet-latency_fashion-mnist')
    demo = load(PAIRS['fashion-mnist'][0])
    assert cfg.model.budget == 'latency' and cfg.model.target_flops is None
    assert cfg.model.architecture == demo.model.architecture
    assert cfg.train_cfg == demo.train_cfg
    assert (REPO_ROOT / cfg.model.latency_table).is_file()
    cfg.model.architecture = read_model_config(cfg).architecture
    cfg.model.latency_table = str(REPO_ROOT / cfg.model.latency_table)
    algo = build_model(cfg.model)
    assert isinstance(algo.cost, LatencyCost)
    assert algo.target_latency == cfg.model.target_latency


def test_fashion_mnist_mbv2_shares_the_demo_data_and_schedule() -> None:
    """The MobileNetV2 configs keep the demo's data, search schedule, alpha
    optimizer and retraining schedule; they change the input (56x56, three
    channels), the weights' learning rate and decay in the search, and the
    weight decay in the retraining."""
    demo, demo_subnet = (load(stem) for stem in PAIRS['fashion-mnist'])
    mbv2, mbv2_subnet = (load(stem) for stem in PAIRS['fashion-mnist-mbv2'])
    for key in ('train_cfg', 'custom_hooks', 'randomness', 'val_evaluator'):
        assert mbv2[key] == demo[key], key
    assert mbv2.optim_wrapper.mutator == demo.optim_wrapper.mutator
    assert mbv2.param_scheduler.mutator == demo.param_scheduler.mutator
    weights = mbv2.optim_wrapper.architecture.optimizer
    assert (weights.lr, weights.weight_decay) == (0.05, 4e-5)
    assert mbv2.param_scheduler.architecture[0].eta_min == 0.005
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        a, b = mbv2[split].to_dict(), demo[split].to_dict()
        pipeline = a['dataset'].pop('pipeline')
        assert pipeline[0] == dict(
            type='Resize', scale=(56, 56), interpolation='bilinear'
        )
        assert pipeline[1:] == b['dataset'].pop('pipeline')
        assert a == b, split
    assert mbv2.input_shape == (3, 56, 56)
    assert mbv2.model.input_shape == mbv2.input_shape
    for key in ('param_scheduler', 'train_cfg'):
        assert mbv2_subnet[key] == demo_subnet[key], key
    assert mbv2_subnet.train_dataloader.dataset.indices is None
    optimizer = mbv2_subnet.optim_wrapper.optimizer.to_dict()
    assert optimizer.pop('weight_decay') == 4e-5
    demo_optimizer = demo_subnet.optim_wrapper.optimizer.to_dict()
    demo_optimizer.pop('weight_decay')
    assert optimizer == demo_optimizer


def test_fashion_mnist_mbv2_builds_at_15_percent(tmp_path) -> None:
    """The search config builds the algorithm with a target of 15% of the
    full network's FLOPs, the uniform network at that target builds as the
    retraining config's subnet, and a grey 28x28 image becomes three equal
    56x56 channels on the way in."""
    import numpy as np
    import torch
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope

    from demo.fashion_mnist_demo import write_reference_yamls
    from projects.dmcp.models.flops import count_flops
    from projects.dmcp.registry import MODELS

    supernet, subnet = (
        str(CONFIGS / f'dmcp_{stem}.py')
        for stem in PAIRS['fashion-mnist-mbv2']
    )
    cfg = Config.fromfile(supernet)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        algo = MODELS.build(cfg.model)
        mutator = algo.mutator
        full = mutator.subnet_flops(mutator.sample_choices('max'))
        assert algo.target_flops / full == pytest.approx(0.15, abs=0.002)
        yamls = write_reference_yamls(tmp_path, None, supernet)
        sub_cfg = Config.fromfile(subnet)
        model = MODELS.build(dict(sub_cfg.model, subnet=yamls['uniform']))
        flops = count_flops(
            model, sub_cfg.input_shape, lambda m, x: m(x, mode='tensor')
        )
        assert 0.9 * algo.target_flops <= flops <= algo.target_flops
        pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
        img = np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8)
        packed = pipeline(dict(img=img))
        assert packed['inputs'].shape == (1, 56, 56)
        data = model.data_preprocessor(
            dict(
                inputs=packed['inputs'][None],
                data_samples=[packed['data_samples']],
            )
        )
    x = data['inputs']
    assert x.shape == (1, 3, 56, 56)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert model(x, mode='tensor').shape == (1, 10)
