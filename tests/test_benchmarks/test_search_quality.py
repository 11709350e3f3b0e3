"""benchmarks/search_quality.py: ``--variant`` parsing, folder names and the
table's rows (the figures themselves are measured by running it)."""

import re

import pytest

from benchmarks.search_quality import (
    arm_dirs,
    arms,
    parse_variants,
    row_labels,
)


def test_variants_keep_the_old_names_and_add_their_own():
    variants = parse_variants(
        [['dmcp'], ['paper', 'model.budget_mode=paper', 'a.b=1']]
    )
    assert variants == {
        'dmcp': [],
        'paper': ['model.budget_mode=paper', 'a.b=1'],
    }
    # the default variant reuses the folders of runs made before variants
    assert arm_dirs('dmcp') == ('dmcp', 'uniform_matched', 'search', 'matched')
    assert arm_dirs('paper') == (
        'dmcp_paper',
        'uniform_matched_paper',
        'search_paper',
        'matched_paper',
    )
    assert arms(variants) == [
        'uniform',
        'dmcp',
        'uniform_matched',
        'dmcp_paper',
        'uniform_matched_paper',
    ]
    keys = [key for key, _ in row_labels(variants)]
    assert keys == [
        'dmcp',
        'uniform',
        'uniform_matched',
        'dmcp_paper',
        'uniform_matched_paper',
    ]
    assert '`model.budget_mode=paper`' in row_labels(variants)[3][1]


@pytest.mark.parametrize(
    'specs, message',
    [
        ([['dmcp'], ['dmcp']], 'repeated name'),
        ([['a/b']], 'bad or repeated name'),
        ([['paper', 'model.budget_mode']], 'not KEY=VALUE'),
    ],
)
def test_bad_variants_are_refused_in_one_line(specs, message):
    with pytest.raises(SystemExit, match=message):
        parse_variants(specs)


# ----------------------------------------------------------- --ablations
MBV2 = 'configs/pruning/dmcp/dmcp_mobilenet-v2_supernet_fashion-mnist.py'
SEARCH_EPOCHS = 4
# name -> the built algorithm's settings that differ from the paper's method
# (Markov process, variant sandwich, Eq. 15, weight updates, no
# distillation, cross entropy), and its warmup epochs
EXPECTED = {
    'dmcp': ({}, SEARCH_EPOCHS // 2),
    'bernoulli': ({'process': 'bernoulli'}, SEARCH_EPOCHS // 2),
    'original_sandwich': ({'sandwich': 'original'}, SEARCH_EPOCHS // 2),
    'no_warmup': ({}, 0),
    'flops_only': (
        {'arch_loss': 'flops_only', 'update_weights_after_warmup': False},
        SEARCH_EPOCHS // 2,
    ),
    'no_weight_update': (
        {'update_weights_after_warmup': False},
        SEARCH_EPOCHS // 2,
    ),
    'inplace_distill': ({'distill': 'inplace'}, SEARCH_EPOCHS // 2),
    'label_smooth': ({'loss': 'LabelSmoothLoss'}, SEARCH_EPOCHS // 2),
}


def parsed(monkeypatch, argv: list):
    """``search_quality.parse_args`` on ``argv``."""
    import sys

    from benchmarks import search_quality

    monkeypatch.setattr(sys, 'argv', ['search_quality.py'] + argv)
    return search_quality.parse_args()


def test_ablations_add_one_named_variant_per_switch(monkeypatch):
    from benchmarks.search_quality import ABLATION_PAPER, ablation_notes

    args = parsed(monkeypatch, ['--ablations', '--search-epochs', '4'])
    assert list(args.variants) == list(EXPECTED)
    assert args.variants['dmcp'] == []
    assert list(ABLATION_PAPER) == list(EXPECTED)[1:]
    notes = '\n'.join(ablation_notes(args.variants))
    for name, paper in [
        ('bernoulli', 'supplement D'),
        ('original_sandwich', 'Table 4'),
        ('no_warmup', 'Table 3'),
        ('flops_only', 'Table 5, row 1'),
        ('no_weight_update', 'Table 5, row 2'),
    ]:
        assert f'- `{name}`: {paper}' in notes
    assert ablation_notes({'dmcp': []}) == []
    # after the --variant ones; a clash of names is refused
    args = parsed(monkeypatch, ['--ablations', '--variant', 'paper', 'a=1'])
    assert list(args.variants)[:2] == ['paper', 'bernoulli']
    with pytest.raises(SystemExit, match='repeated name'):
        parsed(monkeypatch, ['--ablations', '--variant', 'no_warmup'])
    args = parsed(monkeypatch, ['--subnet', 'x.py'])
    assert args.subnet == 'x.py' and list(args.variants) == ['dmcp']


def test_one_retraining_epoch_is_refused_in_one_line(monkeypatch, capsys):
    """The retraining's cosine part starts after its first epoch: one epoch
    would leave it empty (mmengine: end should be larger than begin)."""
    with pytest.raises(SystemExit):
        parsed(monkeypatch, ['--retrain-epochs', '1'])
    assert '--retrain-epochs must be at least 2' in capsys.readouterr().err


def walk(cfg, prefix=''):
    """Every (dotted key, value) of a nested config."""
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            yield from walk(v, f'{prefix}{k}.')
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            yield from walk(v, f'{prefix}{i}.')
    else:
        yield prefix[:-1], cfg


@pytest.mark.parametrize('name', list(EXPECTED))
def test_ablation_options_give_the_ablation(monkeypatch, tmp_path, name):
    """The search's options (``search_opts`` then the variant's), merged into
    the MobileNetV2 search config by tools/train.py, build an algorithm with
    the ablation's settings and nothing else changed; no_warmup has no
    warmup left anywhere and its alpha schedule spans the whole search."""
    import importlib.util

    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from benchmarks.search_quality import search_opts
    from projects.dmcp.registry import MODELS
    from tests.helpers import REPO_ROOT

    args = parsed(
        monkeypatch, ['--ablations', '--search-epochs', str(SEARCH_EPOCHS)]
    )
    options = search_opts(args, 1_000_000, 0) + args.variants[name]
    spec = importlib.util.spec_from_file_location(
        'dmcp_tool_train', REPO_ROOT / 'tools' / 'train.py'
    )
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it: restored
    config = str(REPO_ROOT / MBV2)
    cli = train.parse_args(
        [config, '--work-dir', str(tmp_path), '--cfg-options'] + options
    )
    cfg = train.merge_args(Config.fromfile(config), cli)

    settings, warmup = EXPECTED[name]
    assert cfg.train_cfg.max_epochs == SEARCH_EPOCHS
    assert cfg.train_cfg.warmup_epochs == warmup
    (alpha_schedule,) = cfg.param_scheduler.mutator
    assert alpha_schedule.begin == warmup
    assert alpha_schedule.end == SEARCH_EPOCHS
    assert alpha_schedule.T_max == SEARCH_EPOCHS - warmup
    if name == 'no_warmup':  # in what the runner builds (the top-level
        # variable `warmup_epochs` of the config file is read by nothing)
        built = {k: cfg[k] for k in ('model', 'train_cfg', 'custom_hooks')}
        warmups = [(k, v) for k, v in walk(built) if 'warmup' in k.lower()]
        assert warmups == [('train_cfg.warmup_epochs', 0)]

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        algo = MODELS.build(cfg.model)
    assert algo.target_flops == 1_000_000
    processes = {unit.process for unit in algo.mutator.units}
    loss = type(algo.architecture.head.loss_module).__name__
    built = dict(
        process=processes.pop() if len(processes) == 1 else processes,
        sandwich=algo.sandwich,
        arch_loss=algo.arch_loss,
        update_weights_after_warmup=algo.update_weights_after_warmup,
        distill=algo.distill,
        loss=loss,
    )
    assert built == dict(
        dict(
            process='markov',
            sandwich='variant',
            arch_loss='full',
            update_weights_after_warmup=True,
            distill='none',
            loss='CrossEntropyLoss',
        ),
        **settings,
    )
    if name == 'label_smooth':
        assert algo.architecture.head.loss_module.label_smooth_val == 0.1


# ------------------------------------------------------------- --records
def finished_runs(work_dir, yaml_text: str, top1: float) -> None:
    """A finished search (its yaml) and retraining (its logged top-1), as
    tools/train.py leaves them, each with its ``done`` file."""
    import json

    search = work_dir / 'budget0.15_seed0' / 'search'
    search.mkdir(parents=True)
    (search / 'DMCP_SUBNET_IMAGENET.yaml').write_text(yaml_text)
    retrain = work_dir / 'budget0.15_seed0' / 'retrain_dmcp'
    logs = retrain / '20261203_000000' / 'vis_data'
    logs.mkdir(parents=True)
    (logs / 'scalars.json').write_text(
        json.dumps({'loss': 1.0, 'step': 1})
        + '\n'
        + json.dumps({'accuracy/top1': top1, 'step': 3})
        + '\n'
    )
    for run in (search, retrain):
        (run / 'done').touch()


def test_records_restore_finished_runs_in_a_new_work_dir(
    monkeypatch, tmp_path
):
    """Runs recorded in one work directory are restored in another without
    running tools/train.py: the search's yaml and the retraining's top-1 are
    what the benchmark reads there; the options may name the work dir."""
    import json
    import subprocess

    from benchmarks import search_quality
    from benchmarks.search_quality import RunRecords, last_top1, run

    old, new = tmp_path / 'old', tmp_path / 'new'
    finished_runs(old, 'channels: {a: 3}\nmeta: {flops: 7}\n', 87.25)
    path = str(tmp_path / 'runs.jsonl')
    monkeypatch.setattr(search_quality, 'code_commit', lambda: 'abc1234')

    def opts(root):
        return ['a=1', f'model.subnet={root}/budget0.15_seed0/search/x.yaml']

    records = RunRecords(path, str(old))
    for sub in ('search', 'retrain_dmcp'):
        run('c.py', str(old / 'budget0.15_seed0' / sub), opts(old), records)
        run('c.py', str(old / 'budget0.15_seed0' / sub), opts(old), records)
    lines = [json.loads(x) for x in open(path)]
    assert [x['run'] for x in lines] == [
        'budget0.15_seed0/search',
        'budget0.15_seed0/retrain_dmcp',
    ]  # one line each, though run() was called twice
    assert lines[0]['options'][1] == (
        'model.subnet={work_dir}/budget0.15_seed0/search/x.yaml'
    )
    assert 'top1' not in lines[0] and 'yaml' not in lines[1]

    def no_training(*args, **kwargs):
        raise AssertionError('a recorded run was run again')

    monkeypatch.setattr(subprocess, 'call', no_training)
    records = RunRecords(path, str(new))
    search = new / 'budget0.15_seed0' / 'search'
    retrain = new / 'budget0.15_seed0' / 'retrain_dmcp'
    run('c.py', str(search), opts(new), records)
    run('c.py', str(retrain), opts(new), records)
    assert (search / 'DMCP_SUBNET_IMAGENET.yaml').read_text() == (
        'channels: {a: 3}\nmeta: {flops: 7}\n'
    )
    assert last_top1(str(retrain)) == 87.25
    assert (search / 'done').exists() and (retrain / 'done').exists()
    assert len(records.restored) == 2 and records.commits() == ['abc1234']
    assert len(open(path).readlines()) == 2  # nothing added twice
    note = ' '.join(search_quality.records_note(records))
    assert '2, made at commits abc1234; 2 of them restored' in note
    assert search_quality.records_note(RunRecords(None, str(new))) == []

    # a run without a record still trains
    with pytest.raises(AssertionError, match='run again'):
        run('c.py', str(new / 'budget0.15_seed1' / 'search'), [], records)


def test_a_record_made_with_other_options_stops_the_benchmark(
    monkeypatch, tmp_path
):
    from benchmarks import search_quality
    from benchmarks.search_quality import RunRecords, run

    finished_runs(tmp_path / 'old', 'meta: {}\n', 80.0)
    path = str(tmp_path / 'runs.jsonl')
    monkeypatch.setattr(search_quality, 'code_commit', lambda: 'abc1234')
    records = RunRecords(path, str(tmp_path / 'old'))
    run(
        'c.py', str(tmp_path / 'old/budget0.15_seed0/search'), ['a=1'], records
    )
    records = RunRecords(path, str(tmp_path / 'new'))
    with pytest.raises(SystemExit, match='recorded with other settings'):
        run(
            'c.py',
            str(tmp_path / 'new/budget0.15_seed0/search'),
            ['a=2'],
            records,
        )
    with pytest.raises(SystemExit, match='recorded with other settings'):
        run(
            'd.py',
            str(tmp_path / 'new/budget0.15_seed0/search'),
            ['a=1'],
            records,
        )


def test_without_a_records_file_nothing_is_written(tmp_path):
    from benchmarks.search_quality import RunRecords, run

    finished_runs(tmp_path, 'meta: {}\n', 80.0)
    records = RunRecords(None, str(tmp_path))
    run('c.py', str(tmp_path / 'budget0.15_seed0/search'), [], records)
    assert records.records == {} and not list(tmp_path.glob('*.jsonl'))


def test_code_commit_names_a_commit():
    from benchmarks.search_quality import code_commit

    commit = code_commit()
    assert re.fullmatch(r'[0-9a-f]{7,40}(\+dirty)?', commit), commit


def test_runs_go_seed_by_seed_matched_retrainings_first(monkeypatch):
    """One worker: each seed's searches, each followed by its matched
    uniform network, then the seed's uniform network, before the next
    seed's first search; every result lands in its (budget, seed) row."""
    from argparse import Namespace

    from benchmarks import search_quality

    order = []

    def search(args, budget, seed, target, name):
        order.append(('search', seed, name))
        return dict(top1=seed)

    def uniform(args, budget, seed, path):
        order.append(('uniform', seed, None))
        return dict(top1=-seed)

    def matched(args, r, name, path):
        order.append(('matched', r['seed'], name))
        return dict(top1=path)

    monkeypatch.setattr(search_quality, 'search_variant', search)
    monkeypatch.setattr(search_quality, 'retrain_uniform', uniform)
    monkeypatch.setattr(search_quality, 'retrain_matched', matched)
    monkeypatch.setattr(
        search_quality,
        'matched_uniform_yaml',
        lambda args, r, name: f'{r["seed"]}/{name}',
    )
    results = [dict(budget=0.5, seed=s, target=7) for s in (0, 1)]
    args = Namespace(jobs=1, variants={'dmcp': [], 'bernoulli': ['a=1']})
    search_quality.run_all(args, results, {0.5: (7, 'u.yaml')})
    assert order == [
        ('search', 0, 'dmcp'),
        ('matched', 0, 'dmcp'),
        ('search', 0, 'bernoulli'),
        ('matched', 0, 'bernoulli'),
        ('uniform', 0, None),
        ('search', 1, 'dmcp'),
        ('matched', 1, 'dmcp'),
        ('search', 1, 'bernoulli'),
        ('matched', 1, 'bernoulli'),
        ('uniform', 1, None),
    ]
    assert results[1]['dmcp_bernoulli'] == dict(top1=1)
    assert results[1]['uniform_matched_bernoulli'] == dict(top1='1/bernoulli')
    assert results[0]['uniform'] == dict(top1=0)

    order.clear()  # two workers: the same runs, each once
    results = [dict(budget=0.5, seed=s, target=7) for s in (0, 1, 2)]
    search_quality.run_all(
        Namespace(jobs=2, variants=args.variants),
        results,
        {0.5: (7, 'u.yaml')},
    )
    assert len(order) == len(set(order)) == 15
    assert all(len(r) == 3 + 5 for r in results)


def test_table_gives_each_search_row_its_final_expected_flops(monkeypatch):
    """The band column says how many searches ended in band and how far
    from the target the others ended (E/T)."""
    from benchmarks.search_quality import summarise, table

    args = parsed(monkeypatch, [])
    rows = []
    for seed, (expected, top1) in enumerate([(995, 80.0), (2000, 82.0)]):
        rows.append(
            dict(
                budget=0.5,
                seed=seed,
                target=1000,
                dmcp=dict(
                    top1=top1,
                    flops=990,
                    params=1,
                    in_band=990 <= expected <= 1000,
                    expected_flops=expected,
                    width_ratio_min=0.25,
                    width_ratio_max=1.0,
                ),
                uniform=dict(top1=79.0, flops=980, params=1),
                uniform_matched=dict(top1=78.0, flops=970, params=1),
            )
        )
    keys = ['uniform', 'dmcp', 'uniform_matched']
    text = table(summarise(rows, [0.5], keys), args, 1.0)
    (dmcp,) = [line for line in text.splitlines() if 'DMCP (Expected' in line]
    assert '| 81.00 | 80.00..82.00 |' in dmcp
    assert '| 1/2 searches (E/T 0.995..2.000) | 0.25..1.00 |' in dmcp
