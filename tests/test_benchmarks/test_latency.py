"""benchmarks/latency.py: the variants it times have the FLOPs and widths
it claims (the figures themselves are measured by running it)."""

import yaml

from benchmarks.latency import DEMO_YAML, main, net_specs, variants


def test_demo_variants_share_the_budget():
    spec = net_specs()['demo']
    nets = variants(spec, 0.5, 0)
    assert list(nets) == [
        'full',
        'uniform d1',
        'dmcp d1',
        'uniform d8',
        'dmcp d8',
    ]
    channels = yaml.safe_load(open(DEMO_YAML))['channels']
    dmcp = nets['dmcp d1']['model']
    for name, width in channels.items():  # the shipped yaml, unchanged
        assert dmcp.get_submodule(name).weight.shape[0] == width
    for key in ('uniform d8', 'dmcp d8'):
        model = nets[key]['model']
        for name in channels:
            assert model.get_submodule(name).weight.shape[0] % 8 == 0, name


def test_one_quick_run_writes_the_table(tmp_path):
    out = tmp_path / 'latency.md'
    rows = main(
        ['--nets', 'demo', '--batches', '2', '--runs', '1', '--warmup', '0']
        + ['--threads', '1', '--out', str(out)]
    )['demo']
    target = 7_000_000
    for row in rows[1:]:  # every subnet within the budget, none far below
        assert 0.9 * target <= row['flops'] <= target, row
        assert row['torch b2'] > 0 and row['ort b2'] > 0
    text = out.read_text()
    assert '| dmcp d8 |' in text and 'command: python' in text
