"""The search's export (projects/dmcp/models/export.py) on a small searched
ResNet-18: Expected Sampling and its fit to the budget, Direct Sampling and
its fallback, and the mutator's width fits the export relies on."""

import logging

import pytest
import torch
import yaml

from projects.dmcp.models import (
    DMCP,
    SUBNET_FILE,
    draw_direct_samples,
    expected_sampling,
    export_search_results,
    load_subnet,
)

ARCH = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=512),
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3),
)


def searched(target: str = '2M', seed: int = 2, **kwargs) -> DMCP:
    """A DMCP whose alphas are random (as after a search)."""
    algo = DMCP(
        architecture=ARCH,
        input_shape=(3, 32, 32),
        seed=0,
        target_flops=target,
        **kwargs,
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in algo.mutator.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g))
    return algo


def read(path):
    return yaml.safe_load(path.read_text())


def test_direct_sampling_export(tmp_path):
    algo = searched('2M')
    low, high = algo.gamma * algo.target_flops, algo.target_flops
    paths = export_search_results(
        algo, str(tmp_path), sampling='direct', max_direct_draws=500, seed=7
    )
    main = tmp_path / SUBNET_FILE
    assert paths['Direct Sampling subnet'] == str(main)
    doc = read(main)
    assert doc['meta']['sampling'] == 'direct'
    assert low <= doc['meta']['flops'] <= high
    # the main file is the first Direct Sample kept
    first = tmp_path / 'direct_sampling' / 'subnet_0.yaml'
    assert main.read_bytes() == first.read_bytes()
    mutator = algo.mutator
    _, _, kept, samples = draw_direct_samples(
        mutator, (low, high), 5, 500, seed=7
    )
    assert len(kept) == 5
    assert doc['channels'] == mutator.layer_channels(samples[0][0])
    summary = read(tmp_path / 'direct_sampling' / 'summary.yaml')
    assert summary['kept'] == 5 and summary['draws'] == kept[-1] + 1
    load_subnet(main)  # the file passes the reader's checks


def test_direct_sampling_falls_back_to_expected(tmp_path, caplog):
    """No draw lands in a band of width 1e-9 T: the main file holds the
    Expected Sampling subnet, with a warning."""
    algo = searched('30M', seed=3, gamma=1 - 1e-9)
    expected, _ = expected_sampling(algo.mutator, algo.target_flops)
    with caplog.at_level(logging.WARNING, logger='mmengine'):
        paths = export_search_results(
            algo, str(tmp_path), sampling='direct', max_direct_draws=50
        )
    doc = read(tmp_path / SUBNET_FILE)
    assert doc['meta']['sampling'] == 'expected'
    assert 'Expected Sampling subnet' in paths
    assert doc['channels'] == algo.mutator.layer_channels(expected)
    assert not list((tmp_path / 'direct_sampling').glob('subnet_*.yaml'))


def test_budget_fit_scale_written_when_expected_subnet_is_too_big(tmp_path):
    algo = searched('1M', seed=1)
    mutator = algo.mutator
    rounded = mutator.sample_choices('expected')
    assert mutator.subnet_flops(rounded) > algo.target_flops  # needs a fit
    export_search_results(algo, str(tmp_path), max_direct_draws=10)
    meta = read(tmp_path / SUBNET_FILE)['meta']
    assert 0 < meta['budget_fit_scale'] < 1
    assert meta['flops'] <= algo.target_flops
    assert meta['expected_flops'] > algo.target_flops


def test_no_budget_fit_scale_when_expected_subnet_fits(tmp_path):
    algo = searched('30M', seed=3)
    choices, scale = expected_sampling(algo.mutator, algo.target_flops)
    assert scale == 1.0
    assert choices == algo.mutator.sample_choices('expected')
    export_search_results(algo, str(tmp_path), max_direct_draws=10)
    assert 'budget_fit_scale' not in read(tmp_path / SUBNET_FILE)['meta']


@pytest.mark.parametrize('floor', ['group', 'channel'])
def test_fit_widths_is_the_largest_fitting_scale(floor):
    mutator = searched().mutator
    widths = [u.num_channels * 0.8 for u in mutator.units]
    full = mutator.subnet_flops(mutator.sample_choices('max'))
    target = full * 0.3
    choices, scale = mutator.fit_widths(widths, target, floor=floor)
    assert 0 < scale < 1
    assert mutator.subnet_flops(choices) <= target
    bigger, _ = mutator.fit_widths(
        [w * (scale + 1e-3) for w in widths], float('inf'), floor=floor
    )
    assert mutator.subnet_flops(bigger) > target
    lows = {
        u.name: (u.min_channels if floor == 'group' else 1)
        for u in mutator.units
    }
    assert all(choices[n] >= lows[n] for n in choices)
    # a target the widths already meet needs no scaling
    assert mutator.fit_widths(widths, full, floor=floor)[1] == 1.0
    with pytest.raises(ValueError, match="floor must be 'group'"):
        mutator.fit_widths(widths, target, floor='unit')


def test_uniform_choices_keep_one_ratio():
    mutator = searched().mutator
    full = mutator.subnet_flops(mutator.sample_choices('max'))
    choices, ratio = mutator.uniform_choices(full * 0.25)
    assert 0 < ratio < 1
    assert mutator.subnet_flops(choices) <= full * 0.25
    for unit in mutator.units:
        expected = max(round(ratio * unit.num_channels), 1)
        assert choices[unit.name] == min(expected, unit.num_channels)
    assert mutator.uniform_choices(full) == (
        mutator.sample_choices('max'),
        1.0,
    )
