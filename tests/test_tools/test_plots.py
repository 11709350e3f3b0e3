"""tools/analysis/plot_subnet.py, plot_samples.py and plot_search_log.py on
one tiny search (shared by the module), and the log reading on its own."""

import json
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from projects.dmcp.visualization import read_scalars, unique_labels
from tests.helpers.search import (
    RESNET18_SUPERNET,
    make_tiny_imagenet,
    run_tool,
    tiny_search_options,
)


def assert_png(path: Path, min_size=(400, 300)) -> None:
    """A readable PNG of at least ``min_size`` pixels."""
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == 'PNG'
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]


def written(proc) -> list:
    return re.findall(r'^wrote (.+\.png)$', proc.stdout, re.MULTILINE)


@pytest.fixture(scope='module')
def search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The work dir of a tiny ResNet-18 search: 4 epochs of 3 iterations,
    the last 2 epochs with the architecture step."""
    root = tmp_path_factory.mktemp('plots')
    data = make_tiny_imagenet(root / 'data')
    work = root / 'search'
    run_tool(
        [
            'python',
            'tools/train.py',
            str(RESNET18_SUPERNET),
            '--work-dir',
            str(work),
            '--cfg-options',
            *tiny_search_options(data),
        ]
    )
    return work


@pytest.mark.slow
def test_plot_search_log(search, tmp_path):
    proc = run_tool(['python', 'tools/analysis/plot_search_log.py', search])
    assert written(proc) == [str(search / 'search_curves.png')]
    assert_png(search / 'search_curves.png')

    records = read_scalars(str(search))
    assert [r['step'] for r in records] == list(range(1, 13))
    assert sum('arch.loss_cls' in r for r in records) == 6  # after warmup
    assert {r['target_mflops'] for r in records} == {10.0}

    scalars = next(search.glob('*/vis_data/scalars.json'))
    out = tmp_path / 'curves.png'
    proc = run_tool(
        ['python', 'tools/analysis/plot_search_log.py', scalars, '--out', out]
    )
    assert written(proc) == [str(out)]
    assert_png(out)


@pytest.mark.slow
def test_plot_subnet(search, tmp_path):
    expected = search / 'DMCP_SUBNET_IMAGENET.yaml'
    proc = run_tool(['python', 'tools/analysis/plot_subnet.py', expected])
    assert written(proc) == [str(search / 'DMCP_SUBNET_IMAGENET.png')]
    assert 'retained channels only' not in proc.stderr  # full widths found
    assert_png(search / 'DMCP_SUBNET_IMAGENET.png')

    # a second subnet: every layer one channel narrower (coupled stay equal)
    doc = yaml.safe_load(expected.read_text())
    doc['channels'] = {k: max(1, v - 1) for k, v in doc['channels'].items()}
    other = tmp_path / 'narrower.yaml'
    other.write_text(yaml.safe_dump(doc, sort_keys=False))
    side = tmp_path / 'side.png'
    run_tool(
        [
            'python',
            'tools/analysis/plot_subnet.py',
            expected,
            other,
            '--out',
            side,
            '--config',
            RESNET18_SUPERNET,
        ]
    )
    proc = run_tool(
        ['python', 'tools/analysis/plot_subnet.py', expected, other, '--diff']
    )
    diff = search / 'DMCP_SUBNET_IMAGENET_diff.png'
    assert written(proc) == [str(diff)]
    for png in (side, diff):
        assert_png(png)


@pytest.mark.slow
def test_plot_samples(search, tmp_path):
    config = search / RESNET18_SUPERNET.name  # dumped with the cfg-options
    ckpt = search / 'epoch_4.pth'
    proc = run_tool(
        [
            'python',
            'tools/analysis/plot_samples.py',
            config,
            ckpt,
            '--num',
            '300',
            '--layers',
            'backbone.conv1',
            'backbone.layer2.0.conv1',
            'backbone.layer4.1.conv2',
            '--out-dir',
            tmp_path,
        ]
    )
    pngs = [Path(p) for p in written(proc)]
    assert pngs == [
        tmp_path / 'direct_samples_flops.png',
        tmp_path / 'direct_samples_channels.png',
    ]
    for png in pngs:
        assert_png(png)

    proc = run_tool(['python', 'tools/analysis/plot_samples.py', config, ckpt])
    assert len(written(proc)) == 2  # all units, beside the checkpoint
    assert_png(search / 'direct_samples_channels.png')


def test_plot_subnet_without_config(tmp_path):
    """No supernet config to be found: the retained channels alone."""
    path = tmp_path / 'subnet.yaml'
    path.write_text(
        yaml.safe_dump(
            dict(
                meta=dict(supernet='configs/nowhere.py', flops=1000),
                channels={'backbone.conv1': 3, 'backbone.layer1.0.conv1': 5},
            )
        )
    )
    proc = run_tool(['python', 'tools/analysis/plot_subnet.py', path])
    assert 'retained channels only' in proc.stderr
    assert written(proc) == [str(tmp_path / 'subnet.png')]
    assert_png(tmp_path / 'subnet.png')


def test_plot_subnet_diff_needs_two(tmp_path):
    with pytest.raises(AssertionError, match='--diff needs exactly two'):
        run_tool(
            ['python', 'tools/analysis/plot_subnet.py', 'a.yaml', '--diff']
        )


def _log(work: Path, stamp: str, steps, **extra) -> None:
    """Write ``work/stamp/vis_data/scalars.json`` as mmengine does."""
    path = work / stamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dict(iter=s, step=s, **extra)) for s in steps]
    lines.insert(1, json.dumps({'accuracy/top1': 50.0, 'step': 1}))  # val
    path.write_text('\n'.join(lines) + '\n{"iter": 99, "st')  # cut short


def test_read_scalars_joins_resumed_runs(tmp_path):
    _log(tmp_path, '20250101_000000', [1, 2, 3, 4])
    # resumed from the checkpoint of step 3: step 4 is done again
    _log(tmp_path, '20250102_000000', [4, 5, 6], run=2)
    records = read_scalars(str(tmp_path))
    assert [r['step'] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r.get('run') for r in records] == [None] * 3 + [2] * 3

    # restarted from scratch: only the new run
    _log(tmp_path, '20250103_000000', [1, 2], run=3)
    assert [r.get('run') for r in read_scalars(str(tmp_path))] == [3, 3]


def test_read_scalars_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such work dir'):
        read_scalars(str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match='vis_data/scalars.json'):
        read_scalars(str(tmp_path))


def test_unique_labels():
    assert unique_labels(['a/x.yaml', 'b/y.yaml']) == ['x.yaml', 'y.yaml']
    assert unique_labels(['a/s.yaml', 'b/s.yaml']) == ['a/s.yaml', 'b/s.yaml']


def test_search_curves_of_a_latency_budget(tmp_path, monkeypatch):
    """A latency-budget search's log: E[latency] against its target in
    ms (its E[FLOPs] beside them is not the budget)."""
    from projects.dmcp import visualization

    seen = {}
    save = visualization._save

    def spy(fig, out):
        top = fig.axes[0]
        seen['ylabel'] = top.get_ylabel()
        seen['labels'] = [line.get_label() for line in top.get_lines()]
        return save(fig, out)

    monkeypatch.setattr(visualization, '_save', spy)
    records = [
        dict(
            step=s,
            expected_latency_ms=3.8 - 0.02 * s,
            target_latency_ms=3.6,
            expected_mflops=9.0 - 0.1 * s,
            **({'arch.loss_cls': 0.3, 'arch.loss_reg': -0.2} if s > 2 else {}),
        )
        for s in range(1, 9)
    ]
    out = visualization.plot_search_curves(
        records, str(tmp_path / 'curves.png')
    )
    assert_png(Path(out))
    assert seen['ylabel'] == 'ms'
    assert seen['labels'][:2] == ['E[latency] (latency table)', 'target']
