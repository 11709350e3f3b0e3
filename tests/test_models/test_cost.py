"""The budget's cost (projects/dmcp/models/cost.py): the latency budget
through the algorithm's stage 2, the hook's scalars and the export, on a
hand-made latency table of a small ResNet-18."""

import pytest
import torch
import yaml

from projects.dmcp.models import SUBNET_FILE, export_search_results
from projects.dmcp.models.cost import FlopsCost, LatencyCost
from tests.helpers.models import hand_latency_table
from tests.test_models.test_device import make_algo, make_batch, make_optim


@pytest.fixture(scope='module')
def table_file(tmp_path_factory):
    """A hand-made table of test_device's ResNet-18 at 3x32x32."""
    mutator = make_algo().mutator
    doc = hand_latency_table(
        mutator, 0, monotone=True, calibration=dict(offset_ms=1.0, scale=1.5)
    )
    path = tmp_path_factory.mktemp('latency') / 'table.yaml'
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def latency_algo(table_file, target=None, **kwargs):
    """A latency-budget DMCP; the target defaults to the middle of what
    the table can reach."""
    if target is None:
        probe = make_algo()
        probe.mutator.set_latency_table(yaml.safe_load(open(table_file)))
        t = probe.mutator.latency_table
        target = t.lookup([1] * t.num_units) + t.lookup([10] * t.num_units)
        target /= 2
    return make_algo(
        target_flops=None,
        budget='latency',
        latency_table=table_file,
        target_latency=target,
        **kwargs,
    )


def randomize(algo, seed=2, shift=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in algo.mutator.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g) + shift)


def test_flops_budget_is_the_default():
    algo = make_algo()
    assert isinstance(algo.cost, FlopsCost)
    assert not isinstance(algo.cost, LatencyCost)
    assert algo.target == algo.target_flops == algo.budget.target_flops
    assert algo.target_latency is None


def test_latency_budget_loss_gradient_reaches_alpha(table_file):
    algo = latency_algo(table_file)
    assert isinstance(algo.cost, LatencyCost) and algo.target_flops is None
    assert algo.budget.target_flops == algo.target_latency
    expected = algo.cost.expected()
    assert expected.dtype == torch.float64
    assert float(expected) == pytest.approx(
        float(algo.mutator.expected_latency())
    )
    # a target far below E: the budget loss pushes every unit down
    low = latency_algo(table_file, target=float(expected) * 0.6)
    low.mutator.load_state_dict(algo.mutator.state_dict())
    loss = low.budget(low.cost.expected())
    assert float(loss) > 0
    loss.backward()
    for a in low.mutator.arch_parameters():
        assert a.grad is not None and torch.isfinite(a.grad).all()
    grads = torch.cat([a.grad for a in low.mutator.arch_parameters()])
    assert (grads > 0).sum() > len(grads) // 2  # lowering alpha lowers E


def test_arch_step_steps_alpha_on_expected_latency(table_file):
    algo = latency_algo(table_file, arch_loss='flops_only', lambda_reg=1.0)
    before = algo.mutator.alphas().detach().clone()
    first = float(algo.cost.expected())
    algo.budget.target_flops = first * 0.7  # far above the target
    algo.train_step(make_batch(), make_optim(algo), update_arch=True)
    assert algo.last_expected.dtype == torch.float64
    assert float(algo.last_expected) == pytest.approx(first)
    assert not torch.equal(algo.mutator.alphas(), before)
    assert float(algo.cost.expected()) < first


def test_hook_scalars_of_the_latency_budget(table_file):
    algo = latency_algo(table_file)
    scalars = algo.cost.scalars()
    assert set(scalars) == {
        'expected_latency_ms',
        'target_latency_ms',
        'expected_mflops',
    }
    assert scalars['target_latency_ms'] == algo.target_latency
    assert set(make_algo().cost.scalars()) == {
        'expected_mflops',
        'target_mflops',
    }


@pytest.mark.parametrize('sampling', ['expected', 'direct'])
def test_export_meets_the_latency_target(table_file, tmp_path, sampling):
    searched = latency_algo(table_file)
    randomize(searched, shift=3.0)
    expected = float(searched.cost.expected())
    algo = latency_algo(table_file, target=0.9 * expected)
    algo.mutator.load_state_dict(searched.mutator.state_dict())
    target = algo.target_latency
    assert float(algo.cost.expected()) > target  # the fit is needed
    export_search_results(
        algo, str(tmp_path), sampling=sampling, max_direct_draws=2000
    )
    doc = yaml.safe_load((tmp_path / SUBNET_FILE).read_text())
    meta = doc['meta']
    # the table's value of the exported subnet, from its channels
    mutator = algo.mutator
    choices = {}
    for unit, spec in zip(mutator.units, mutator.specs):
        choices[unit.name] = doc['channels'][spec.producers[0]]
    value = mutator.subnet_latency(choices)
    assert meta['latency_ms'] == pytest.approx(value, abs=1e-6)
    assert value <= target
    if meta['sampling'] == 'direct':
        assert algo.gamma * target <= value
    else:
        assert meta['budget_fit_scale'] < 1
        assert value > 0.9 * target  # fitted up to the target, not far below
    assert meta['flops'] == mutator.subnet_flops(choices)
    summary = yaml.safe_load(
        (tmp_path / 'direct_sampling' / 'summary.yaml').read_text()
    )
    assert summary['budget'] == 'latency'
    assert summary['band'] == pytest.approx([algo.gamma * target, target])


def test_yaml_meta_records_estimate_target_and_table(table_file, tmp_path):
    algo = latency_algo(table_file)
    export_search_results(algo, str(tmp_path), max_direct_draws=100)
    meta = yaml.safe_load((tmp_path / SUBNET_FILE).read_text())['meta']
    assert meta['budget'] == 'latency'
    assert meta['target_latency_ms'] == pytest.approx(algo.target_latency)
    assert meta['expected_latency_ms'] == pytest.approx(
        float(algo.cost.expected()), abs=1e-6
    )
    assert meta['latency_ms'] <= meta['target_latency_ms']
    assert meta['latency_table'] == dict(
        file=table_file,
        device='hand-made',
        backend='none',
        threads=1,
        batch=1,
    )
    assert 'target_flops' not in meta and meta['flops'] > 0


def test_flops_budget_meta_is_unchanged(tmp_path):
    algo = make_algo()
    export_search_results(algo, str(tmp_path), max_direct_draws=100)
    meta = yaml.safe_load((tmp_path / SUBNET_FILE).read_text())['meta']
    assert set(meta) - {'budget_fit_scale'} == {
        'algorithm',
        'sampling',
        'input_shape',
        'supernet',
        'target_flops',
        'flops',
        'expected_flops',
    }


def _missing_layer(path, tmp_path):
    doc = yaml.safe_load(open(path))
    doc['layers'].pop('backbone.layer2.0.conv2')
    out = tmp_path / 'missing.yaml'
    out.write_text(yaml.safe_dump(doc))
    return str(out)


@pytest.mark.parametrize(
    'kwargs, pattern',
    [
        (dict(budget='time'), r"model\.budget must be one of \('flops', "),
        (
            dict(budget='latency', target_flops=None, target_latency=1.0),
            r"model\.budget='latency' needs model\.latency_table",
        ),
        (
            dict(budget='latency', latency_table='TABLE', target_latency=1.0),
            r"model\.target_flops='10M' is set, but model\.budget='latency'",
        ),
        (
            dict(budget='latency', target_flops=None, latency_table='TABLE'),
            r"model\.budget='latency' needs model\.target_latency",
        ),
        (
            dict(
                budget='latency',
                target_flops=None,
                latency_table='TABLE',
                target_latency=1e4,
            ),
            r'model\.target_latency=10000\.0 ms is outside what the '
            r'supernet can reach by .*table\.yaml: from',
        ),
        (
            dict(
                budget='latency',
                target_flops=None,
                latency_table='/nonexistent/t.yaml',
                target_latency=1.0,
            ),
            r'model\.latency_table: /nonexistent/t\.yaml: no such latency',
        ),
        (
            dict(
                budget='latency',
                target_flops=None,
                latency_table='MISSING',
                target_latency=1.0,
            ),
            r'model\.latency_table=.*missing\.yaml: '
            r'layers\.backbone\.layer2\.0\.conv2 is missing',
        ),
        (
            dict(latency_table='TABLE'),
            r"model\.latency_table='.*' is set, but model\.budget is "
            r"'flops'",
        ),
    ],
)
def test_bad_budget_input_is_one_line(table_file, tmp_path, kwargs, pattern):
    kwargs = dict(kwargs)
    if kwargs.get('latency_table') == 'TABLE':
        kwargs['latency_table'] = table_file
    if kwargs.get('latency_table') == 'MISSING':
        kwargs['latency_table'] = _missing_layer(table_file, tmp_path)
    with pytest.raises(ValueError) as info:
        make_algo(**kwargs)
    message = str(info.value)
    assert '\n' not in message, message
    assert info.match(pattern), message
