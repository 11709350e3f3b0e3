"""Smoke test of ``benchmarks/search_step.py`` (ours vs mmrazor's DMCP):
tiny settings, JSON summary on the last line."""

import json
import math
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

SCRIPT = REPO_ROOT / 'benchmarks' / 'search_step.py'
KEYS = (
    'overhead_stage1',
    'overhead_stage2',
    'stage1_ratio_vs_mmrazor',
    'stage2_ratio_vs_mmrazor',
    'efficiency',
    'peak_rss_ratio_vs_mmrazor',
)


@pytest.mark.slow
def test_search_step_benchmark_json(tmp_path):
    cmd = [
        sys.executable,
        str(SCRIPT),
        '--iters',
        '2',
        '--warmup',
        '1',
        '--input-size',
        '32',
        '--batch-size',
        '4',
        '--backbones',
        'resnet18',
        '--memory-iters',
        '1',
        '--json',
    ]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,  # the script must find the repository by itself
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in KEYS:
        value = float(summary[key])
        assert math.isfinite(value) and value > 0, (key, value)
    detail = summary['backbones']['resnet18']
    assert detail['same_subnets'] is True
    assert detail['subnet_flops_share']['max'] == pytest.approx(1.0)
    for key in (
        'plain_step_s',
        'ours_stage1_s',
        'mmrazor_stage1_s',
        'limit_stage1_s',
        'limit_stage2_s',
        'overhead_stage1',
        'overhead_stage2',
    ):
        assert detail[key] > 0
    for arm in ('ours', 'mmrazor', 'limit', 'plain'):
        assert detail[f'{arm}_memory']['peak_rss_mib'] > 0
    # the limit's pruned subnets are ours, two channels off per unit
    assert detail['limit_subnet_flops_sum_over_full'] == pytest.approx(
        detail['subnet_flops_sum_over_full'], rel=0.05
    )


def test_paired_ratio_is_the_median_of_per_iteration_ratios():
    from benchmarks.search_step import paired_ratio

    # the subnets' size changes per iteration; ours is 10% over the
    # limit in every iteration, which the ratio of medians would miss
    limit = [1.0, 4.0, 2.0, 3.0, 9.0]
    ours = [1.1, 4.4, 2.2, 3.3, 9.9]
    ours[1] = 2.0  # one noisy iteration
    r = paired_ratio(ours, limit)
    assert r['median'] == pytest.approx(1.1)
    assert r['q1'] <= r['median'] <= r['q3']
    assert r['q1'] == pytest.approx(1.1) and r['q3'] == pytest.approx(1.1)
    single = paired_ratio([2.0], [4.0])
    assert single == dict(median=0.5, q1=0.5, q3=0.5)
    with pytest.raises(ValueError, match='equal, non-empty'):
        paired_ratio([1.0, 2.0], [1.0])
