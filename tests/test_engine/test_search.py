"""End-to-end DMCP searches through tools/train.py and tools/dist_train.sh,
on the real ResNet-18 supernet config shrunk by --cfg-options."""

from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import TEST_CONFIGS, free_port, load_weights_only
from tests.helpers.search import (
    RESNET18_SUPERNET,
    make_tiny_imagenet,
    run_tool,
    tiny_search_options,
)


@pytest.fixture(scope='module')
def tiny_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_imagenet(tmp_path_factory.mktemp('tiny_imagenet'))


def _train(config, work_dir, opts, *extra):
    return run_tool(
        [
            'python',
            'tools/train.py',
            str(config),
            '--work-dir',
            str(work_dir),
            *extra,
            '--cfg-options',
            *opts,
        ]
    )


def _alpha_and_weights(ckpt_path):
    state = load_weights_only(ckpt_path)['state_dict']
    return {
        k: v
        for k, v in state.items()
        if k.startswith(('mutator.', 'architecture.')) or k == 'sampler_state'
    }


@pytest.mark.slow
def test_search_writes_subnets(tiny_imagenet, tmp_path):
    target = 10_000_000
    proc = _train(
        RESNET18_SUPERNET,
        tmp_path,
        tiny_search_options(tiny_imagenet, target_flops='10M'),
    )
    log = proc.stdout + proc.stderr
    assert 'expected_mflops' in log and 'eta' in log

    doc = yaml.safe_load((tmp_path / 'DMCP_SUBNET_IMAGENET.yaml').read_text())
    meta, channels = doc['meta'], doc['channels']
    assert meta['algorithm'] == 'DMCP' and meta['sampling'] == 'expected'
    assert meta['target_flops'] == target
    assert 0 < meta['flops'] <= target
    assert meta['input_shape'] == [3, 32, 32]
    assert meta['supernet'].endswith('dmcp_resnet18_supernet_8xb64_in1k.py')
    # every pruned conv, coupled layers equal, widths in range
    assert 'backbone.conv1' in channels and 'head.fc' not in channels
    assert (
        channels['backbone.conv1']
        == channels['backbone.layer1.0.conv2']
        == channels['backbone.layer1.1.conv2']
    )
    assert (
        channels['backbone.layer2.0.conv2']
        == channels['backbone.layer2.0.downsample.0']
    )
    assert all(1 <= c <= 512 for c in channels.values())
    assert len(channels) == 20  # 19 convs + downsample convs of ResNet-18

    summary = yaml.safe_load(
        (tmp_path / 'direct_sampling' / 'summary.yaml').read_text()
    )
    kept = sorted((tmp_path / 'direct_sampling').glob('subnet_*.yaml'))
    assert summary['kept'] == len(kept) >= 1
    assert summary['draws'] >= len(kept)
    for path in kept:
        sub = yaml.safe_load(path.read_text())
        assert sub['meta']['sampling'] == 'direct'
        assert 0.99 * target <= sub['meta']['flops'] <= target
        assert set(sub['channels']) == set(channels)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tiny_imagenet, tmp_path):
    opts = tiny_search_options(tiny_imagenet, max_epochs=4, warmup_epochs=1)
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    _train(RESNET18_SUPERNET, straight, opts)
    _train(RESNET18_SUPERNET, split, opts + ['train_cfg.max_epochs=2'])
    assert not (split / 'epoch_3.pth').exists()
    _train(RESNET18_SUPERNET, split, opts, '--resume')

    a = _alpha_and_weights(straight / 'epoch_4.pth')
    b = _alpha_and_weights(split / 'epoch_4.pth')
    assert a.keys() == b.keys()
    assert any('alpha' in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (straight / 'DMCP_SUBNET_IMAGENET.yaml').read_text() == (
        split / 'DMCP_SUBNET_IMAGENET.yaml'
    ).read_text()


@pytest.mark.slow
def test_ddp_search_keeps_ranks_identical(tiny_imagenet, tmp_path):
    config = TEST_CONFIGS / 'dmcp_resnet18_ddp_probe.py'
    run_tool(
        [
            'bash',
            'tools/dist_train.sh',
            str(config),
            '2',
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            *tiny_search_options(tiny_imagenet, max_epochs=3, warmup_epochs=1),
        ],
        env={'PORT': str(free_port())},
    )
    probes = [
        torch.load(tmp_path / f'probe_rank{r}.pt', weights_only=False)
        for r in (0, 1)
    ]
    for probe in probes:
        assert len(probe['alpha_diffs']) == 6  # 3 epochs x 2 iterations
        assert max(probe['alpha_diffs']) == 0.0
        assert max(probe['weight_diffs']) == 0.0
    assert torch.equal(probes[0]['alpha'], probes[1]['alpha'])
    assert probes[0]['flops'] == probes[1]['flops']
    assert (tmp_path / 'DMCP_SUBNET_IMAGENET.yaml').exists()


@pytest.mark.slow
def test_latency_budget_search_writes_subnets(tiny_imagenet, tmp_path):
    """model.budget='latency' through tools/train.py on a hand-made table:
    the log reports E[latency], the export fits the table's target and the
    yaml's meta records it."""
    from mmengine.registry import DefaultScope

    from projects.dmcp.registry import MODELS
    from tests.helpers.models import hand_latency_table
    from tests.helpers.search import tiny_config

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        mutator = MODELS.build(tiny_config(tiny_imagenet).model).mutator
    doc = hand_latency_table(mutator, 0, monotone=True)
    table = tmp_path / 'table.yaml'
    table.write_text(yaml.safe_dump(doc))
    mutator.set_latency_table(doc)
    low, high = (
        mutator.latency_table.lookup([k] * len(mutator.units)) for k in (1, 10)
    )
    target = round(low + 0.4 * (high - low), 4)
    opts = tiny_search_options(tiny_imagenet) + [
        'model.budget=latency',
        'model.target_flops=None',
        f'model.latency_table={table}',
        f'model.target_latency={target}',
    ]
    proc = _train(RESNET18_SUPERNET, tmp_path / 'work', opts)
    log = proc.stdout + proc.stderr
    assert 'expected_latency_ms' in log and 'target_latency_ms' in log
    assert 'E[latency]' in log
    out = tmp_path / 'work' / 'DMCP_SUBNET_IMAGENET.yaml'
    meta = yaml.safe_load(out.read_text())['meta']
    assert meta['budget'] == 'latency'
    assert meta['target_latency_ms'] == pytest.approx(target)
    assert 0 < meta['latency_ms'] <= target
    assert meta['latency_table']['file'] == str(table)
    assert meta['latency_table']['device'] == 'hand-made'
