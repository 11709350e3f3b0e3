"""Bad configs and files fail before any training, with one line naming the
key (or the file and the key)."""

import pytest
import yaml
from mmengine.hooks import Hook
from mmengine.runner import Runner

import projects.dmcp  # noqa: F401
from projects.dmcp.checks import ConfigError, check_config, check_devices
from projects.dmcp.registry import MODELS
from tests.helpers import REPO_ROOT
from tests.helpers.search import make_tiny_imagenet, tiny_config


class NoTraining(Hook):
    """Fails the test if a training iteration starts."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        raise AssertionError('training started although the input is bad')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_tiny_imagenet(tmp_path_factory.mktemp('bad_input_data'))


def _drop_mutator_optimizer(cfg):
    del cfg.optim_wrapper['mutator']


def _mmrazor_class_object(cfg):
    from mmrazor.models.algorithms.pruning.dmcp import DMCP as RazorDMCP

    cfg.model.type = RazorDMCP


def _missing_data_root(cfg):
    cfg.train_dataloader.dataset.data_root = '/nonexistent/imagenet'


LATENCY = [
    'model.budget=latency',
    'model.target_flops=None',
    'model.target_latency=1.0',
]
DEMO_TABLE = (
    REPO_ROOT
    / 'benchmarks/results/latency_table_fashion-mnist_resnet18-cifar-w16.yaml'
)

CONFIG_CASES = {
    'target above the full net': (
        ['model.target_flops=1G'],
        r'model\.target_flops=1\.00G is outside',
    ),
    'target below the min subnet': (
        ['model.target_flops=1000'],
        r'model\.target_flops=1\.0K is outside',
    ),
    'unreadable target': (
        ['model.target_flops=lots'],
        r'model\.target_flops: cannot read FLOPs',
    ),
    'zero groups': (
        ['model.mutator.channel_unit_cfg.num_groups=0'],
        r'model\.mutator\.channel_unit_cfg: num_groups must be a positive',
    ),
    'negative groups': (
        ['model.mutator.channel_unit_cfg.num_groups=-3'],
        r'model\.mutator\.channel_unit_cfg: num_groups must be a positive',
    ),
    # units narrower than num_groups are kept whole; an error when all are
    'more groups than channels': (
        ['model.mutator.channel_unit_cfg.num_groups=1000'],
        r'model\.mutator\.channel_unit_cfg: num_groups=1000 is more than '
        r'the 512 channels',
    ),
    'gamma zero': (['model.gamma=0.0'], r'model\.gamma must lie in \(0, 1\]'),
    'gamma above one': (
        ['model.gamma=1.5'],
        r'model\.gamma must lie in \(0, 1\]',
    ),
    'negative lambda_reg': (
        ['model.lambda_reg=-0.1'],
        r'model\.lambda_reg must be a finite',
    ),
    'bad alpha init': (
        ['model.mutator.channel_unit_cfg.alpha_init=random'],
        r"model\.mutator\.channel_unit_cfg: alpha_init must be 'uniform'",
    ),
    'missing optimizer in the wrapper dict': (
        _drop_mutator_optimizer,
        r"optim_wrapper is missing \['mutator'\]",
    ),
    'weight decay on alpha': (
        ['optim_wrapper.mutator.optimizer.weight_decay=0.0001'],
        r'optim_wrapper\.mutator\.optimizer\.weight_decay must be 0',
    ),
    'unknown sampling mode': (
        ['custom_hooks.0.sampling=random'],
        r"DMCPFlopsEstimatorHook\.sampling='random' is not one of",
    ),
    'warmup longer than training': (
        ['train_cfg.warmup_epochs=9'],
        r'train_cfg\.warmup_epochs must be',
    ),
    'negative direct samples': (
        ['model.num_direct_samples=-1'],
        r'model\.num_direct_samples must be an integer',
    ),
    'input too small for the network': (
        ['model.input_shape=(3,16,16)'],
        r'model\.input_shape: input \[3, 16, 16\] is too small',
    ),
    'input with the wrong channels': (
        ['model.input_shape=(1,32,32)'],
        r'model\.input_shape=\[1, 32, 32\] does not run through the network',
    ),
    'input shape not (C, H, W)': (
        ['model.input_shape=(32,32)'],
        r'model\.input_shape must be \(C, H, ',
    ),
    'unreadable data root': (
        _missing_data_root,
        r"train_dataloader\.dataset\.data_root='/nonexistent/imagenet' is "
        r'not a folder',
    ),
    "mmrazor's DMCP hook by name": (
        ['custom_hooks.0.type=mmrazor.DMCPSubnetHook'],
        r"type='DMCPSubnetHook' names a part of mmrazor 1\.0\.0's own DMCP",
    ),
    'a CUDA device that does not exist': (
        ['model_wrapper_cfg.device_ids=[3]'],
        r"model_wrapper_cfg\.device_ids='cuda:3' does not exist: torch sees "
        r'0 CUDA device',
    ),
    'a device key naming another backend': (
        ['device=mps'],
        r"device='mps': DMCP runs on cuda or cpu",
    ),
    'an unknown budget loss mode': (
        ['model.budget_mode=l2'],
        r"model\.budget_mode='l2' is not one of \('bounded', 'official', "
        r"'paper'\)",
    ),
    'a negative gradient clip of alpha': (
        ['optim_wrapper.mutator.clip_grad.max_norm=-1'],
        r'optim_wrapper\.mutator\.clip_grad\.max_norm=-1 must be a finite '
        r'number > 0',
    ),
    'an unknown budget': (
        ['model.budget=time'],
        r"model\.budget must be one of \('flops', 'latency'\), got 'time'",
    ),
    'a latency budget without a table': (
        LATENCY,
        r"model\.budget='latency' needs model\.latency_table",
    ),
    'a latency table of another architecture': (
        LATENCY + [f'model.latency_table={DEMO_TABLE}'],
        r'model\.latency_table=.*latency_table_fashion-mnist_resnet18-cifar-'
        r'w16\.yaml: meta\.input_shape is \[1, 28, 28\], but the network has '
        r'\[3, 32, 32\]',
    ),
    "mmrazor's DMCP class as an object": (
        _mmrazor_class_object,
        r'model\.type=mmrazor\.models\.algorithms\.pruning\.dmcp\.DMCP is '
        r"mmrazor 1\.0\.0's own DMCP",
    ),
}


@pytest.mark.parametrize('case', list(CONFIG_CASES))
def test_bad_config_fails_before_training(case, data_root, tmp_path):
    change, pattern = CONFIG_CASES[case]
    cfg = tiny_config(
        data_root, extra=change if isinstance(change, list) else None
    )
    if callable(change):
        change(cfg)
    cfg.work_dir = str(tmp_path)
    with pytest.raises(Exception) as info:
        check_config(cfg)
        runner = Runner.from_cfg(cfg)
        runner.register_hook(NoTraining(), priority='HIGHEST')
        runner.train()
    message = str(info.value)
    assert '\n' not in message.strip(), message
    assert info.match(pattern), message


def _subnet_doc(**changes):
    doc = dict(
        meta=dict(
            algorithm='DMCP',
            sampling='expected',
            target_flops=10_000_000,
            flops=1,
            input_shape=[3, 32, 32],
        ),
        channels={},
    )
    doc.update(changes)
    return doc


@pytest.fixture(scope='module')
def good_channels():
    from mmengine.registry import DefaultScope

    cfg = tiny_config('.')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        algo = MODELS.build(cfg.model)
    return algo.mutator.layer_channels(algo.mutator.sample_choices('min'))


def _write(path, text=None, data=None):
    if data is not None:
        path.write_bytes(data)
    else:
        path.write_text(text)
    return path


YAML_CASES = {
    'empty yaml': (lambda ch: '', r'empty'),
    'binary yaml': (lambda ch: b'\x00\xff\x89PNG\x00', r'yaml'),
    'widths out of range': (
        lambda ch: yaml.safe_dump(
            _subnet_doc(channels=dict(ch, **{'backbone.layer1.0.conv1': 70}))
        ),
        r'channels\.backbone\.layer1\.0\.conv1: 70 is outside \[1, 64\]',
    ),
    'yaml of another supernet': (
        lambda ch: yaml.safe_dump(
            _subnet_doc(
                channels={'backbone.features.0': 8, 'backbone.features.3': 8}
            )
        ),
        r'another supernet',
    ),
}


@pytest.mark.parametrize('case', list(YAML_CASES))
def test_bad_subnet_file_fails_before_training(case, tmp_path, good_channels):
    make, pattern = YAML_CASES[case]
    content = make(good_channels)
    path = tmp_path / 'subnet.yaml'
    if isinstance(content, bytes):
        _write(path, data=content)
    else:
        _write(path, text=content)
    cfg = tiny_config('.')
    with pytest.raises(Exception) as info:
        MODELS.build(
            dict(
                type='mmrazor.DMCPSubnet',
                architecture=cfg.model.architecture,
                subnet=str(path),
                input_shape=(3, 32, 32),
            )
        )
    message = str(info.value)
    assert '\n' not in message.strip(), message
    assert str(path) in message
    assert info.match(pattern), message


@pytest.mark.parametrize(
    'environ, pattern',
    [
        (
            {'CUDA_VISIBLE_DEVICES': '7'},
            r'CUDA_VISIBLE_DEVICES=7 names 1 device\(s\), but torch sees 0',
        ),
        (
            {'CUDA_VISIBLE_DEVICES': '0,1'},
            r'CUDA_VISIBLE_DEVICES=0,1 names 2 device\(s\)',
        ),
    ],
)
def test_device_in_the_environment_that_does_not_exist(environ, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        check_devices({}, environ)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize(
    'environ', [{}, {'CUDA_VISIBLE_DEVICES': ''}, {'LOCAL_RANK': '0'}]
)
def test_environment_without_devices_is_fine(environ):
    check_devices({'device': 'cpu'}, environ)
