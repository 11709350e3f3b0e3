"""Coverage: which mmpretrain classifiers the DMCP search can prune.

For every classifier architecture of mmpretrain 1.2.0's model zoo (the names
of ``mmpretrain.list_models(task='Image Classification')`` whose config is an
``ImageClassifier``, one per backbone class: the smallest by parameters; a
ConvNeXt with GRN counts as ConvNeXt V2), plus the CNN backbones of its
registry that have no zoo entry (ResNeSt, SEResNeXt, from mmpretrain's base
model configs), each built with random weights (``pretrained=False``):

1. **build**: the plain classifier (its own config, 1000 classes) at the
   smallest input of 64, 112 or 224 pixels that it runs at;
2. **trace**: our ``DMCP`` algorithm (mutator and units, as in a search) on
   it, with a target of half its FLOPs (or the middle of ``[min, full]``
   when its smallest subnet is above half);
3. **stage 1** and **stage 2**: one search step each (``train_step`` without
   and ``_arch_step`` with the architecture update) on a batch of 2 random
   images, SGD for the weights and for ``alpha``;
4. **export**: ``export_search_results`` writes the Expected Sampling subnet
   yaml (at most the target);
5. **prune**: ``build_subnet`` builds the physically pruned classifier from a
   fresh copy of the plain one and that yaml;
6. **check**: the pruned model's FLOPs counted by running it equal the
   yaml's ``meta.flops`` and the mutator's, and its output has the plain
   classifier's shape.

Distilled zoo models (LeViT, EfficientFormer), which mmpretrain cannot
train, are searched with ``distillation=False``. Every architecture runs in
its own forked process with a time limit, so a crash or a hang is a row of
the table, not the end of the run. Each row says which stage failed first
and the first line of its error.

Usage::

    nice -n 10 python benchmarks/coverage.py          # writes the table
    python benchmarks/coverage.py --only resnet18_8xb32_in1k --stdout
"""

import argparse
import contextlib
import copy
import io
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from queue import Empty
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from projects.dmcp.utils import REPO_ROOT

RESULTS = Path(REPO_ROOT) / 'benchmarks' / 'results' / 'coverage.md'
SIZES = (64, 112, 224, 256)
NUM_CLASSES = 1000
#: Heads whose ``distillation`` defaults to True.
DISTILLED_HEADS = ('EfficientFormerClsHead',)
BATCH = 2
STAGES = ('build', 'trace', 'stage 1', 'stage 2', 'export', 'prune', 'check')

#: Backbone class -> kind. CNN: built from convolutions, pooling and
#: element-wise gates only (no self-attention, no MLP across tokens, no
#: graph). Everything else is a transformer, a hybrid with attention
#: blocks, an MLP-mixer or a graph network.
KINDS = {
    **dict.fromkeys(
        (
            'ResNet',
            'ResNetV1c',
            'ResNetV1d',
            'ResNet_CIFAR',
            'ResNeXt',
            'SEResNet',
            'SEResNeXt',
            'ResNeSt',
            'Res2Net',
            'RegNet',
            'RepVGG',
            'VGG',
            'MobileNetV2',
            'MobileNetV3',
            'MobileOne',
            'ShuffleNetV1',
            'ShuffleNetV2',
            'EfficientNet',
            'EfficientNetV2',
            'ConvNeXt',
            'ConvNeXt-GRN',
            'DenseNet',
            'HRNet',
            'CSPDarkNet',
            'CSPResNet',
            'CSPResNeXt',
            'InceptionV3',
            'RepLKNet',
            'ConvMixer',
            'HorNet',
            'VAN',
            'PoolFormer',
            'RIFormer',
        ),
        'CNN',
    ),
    **dict.fromkeys(
        (
            'Conformer',
            'EdgeNeXt',
            'EfficientFormer',
            'LeViT',
            'MobileViT',
            'TinyViT',
        ),
        'hybrid',
    ),
    **dict.fromkeys(('MlpMixer', 'RepMLPNet'), 'MLP'),
    **dict.fromkeys(('Vig', 'PyramidVig'), 'graph'),
}
#: CNN backbones of mmpretrain's registry without an ImageNet classifier in
#: the zoo: (row name, base model config).
EXTRAS = (
    ('resnest50 (base config)', '_base_/models/resnest50.py'),
    ('seresnext50-32x4d (base config)', '_base_/models/seresnext50_32x4d.py'),
)


def kind_of(family: str) -> str:
    """CNN, hybrid, MLP, graph or transformer (the default)."""
    return KINDS.get(family, 'transformer')


# ------------------------------------------------------------ candidates
def family_of(model_cfg) -> str:
    """The architecture family of a classifier config: its backbone class,
    ``ConvNeXt-GRN`` for a ConvNeXt V2."""
    backbone = model_cfg.get('backbone') or {}
    family = str(backbone.get('type', model_cfg.get('type')))
    if family == 'ConvNeXt' and backbone.get('use_grn'):
        family += '-GRN'
    return family


def zoo_candidates() -> List[Tuple[str, str, object]]:
    """One (name, family, config) per architecture family of the zoo's
    classifiers, the smallest by parameters; a zoo config mmpretrain cannot
    load is its own row (family unknown)."""
    from mmpretrain.apis import list_models
    from mmpretrain.apis.model import ModelHub

    best: Dict[str, tuple] = {}
    broken = []
    for name in list_models(task='Image Classification'):
        try:
            info = ModelHub.get(name)
        except Exception as e:  # noqa: BLE001  (mmpretrain's own configs)
            broken.append((name, first_line(e)))
            continue
        cfg = info.config
        if cfg.model.get('type') != 'ImageClassifier':
            continue  # zero-shot CLIP pipelines and the like
        family = family_of(cfg.model)
        meta = info.metadata
        size = getattr(meta, 'parameters', None) or float('inf')
        if family not in best or (size, name) < best[family][:2]:
            best[family] = (size, name, cfg)
    rows = [(name, fam, cfg) for fam, (_, name, cfg) in best.items()]
    families = {fam for _, fam, _ in rows}
    for name, why in broken:
        # a family the zoo has no loadable config of is a failing row
        fam = name.split('-')[0].split('_')[0]
        if not any(fam.lower() == f.lower() for f in families):
            families.add(fam)
            rows.append((name, f'?{fam}', why))
    return sorted(rows, key=lambda r: r[0])


def extra_candidates() -> List[Tuple[str, str, object]]:
    """The registry CNNs without a zoo classifier, from base configs."""
    import mmpretrain
    from mmengine.config import Config

    root = Path(mmpretrain.__file__).parent / '.mim' / 'configs'
    rows = []
    for name, rel in EXTRAS:
        cfg = Config.fromfile(str(root / rel))
        rows.append((name, family_of(cfg.model), cfg))
    return rows


def first_line(e: BaseException) -> str:
    """``Type: first line of the message``, at most 400 characters."""
    msg = str(e).strip().splitlines()
    text = f'{type(e).__name__}: {msg[0] if msg else ""}'
    return text if len(text) <= 400 else text[:397] + '...'


# --------------------------------------------------------------- one row
def build_plain(cfg) -> torch.nn.Module:
    """The classifier of a config with random weights."""
    from mmpretrain.registry import MODELS

    model_cfg = copy.deepcopy(cfg.model)
    pre = model_cfg.get('data_preprocessor') or cfg.get('data_preprocessor')
    pre = dict(pre or dict(type='ClsDataPreprocessor'))
    pre.setdefault('num_classes', NUM_CLASSES)  # batch augments need it
    model_cfg['data_preprocessor'] = pre
    model_cfg['_scope_'] = 'mmpretrain'
    for part in ('backbone', 'head'):
        # the zoo's distilled models (LeViT, EfficientFormer) are
        # inference-only in mmpretrain: search their trainable form
        part_cfg = model_cfg.get(part) or {}
        default = part_cfg.get('type') in DISTILLED_HEADS
        if part_cfg.get('distillation', default):
            model_cfg[part]['distillation'] = False
    torch.manual_seed(0)
    return MODELS.build(model_cfg)


def output_shapes(out) -> List[tuple]:
    """Shapes of the tensors of a model output (a tensor or a tuple)."""
    from torch.utils._pytree import tree_flatten

    return [tuple(t.shape) for t in tree_flatten(out)[0]]


def pick_size(model: torch.nn.Module) -> Tuple[int, List[tuple]]:
    """The smallest of :data:`SIZES` the plain model runs at, and its
    output shapes there."""
    from projects.dmcp.models.tracer import check_input_size, trace_channels
    from projects.dmcp.utils import tensor_forward

    error = None
    for size in SIZES:
        try:
            with torch.no_grad():
                out = tensor_forward(
                    model.eval(), torch.zeros(BATCH, 3, size, size)
                )
            check_input_size(
                trace_channels(model, (3, size, size), tensor_forward)
            )
            return size, output_shapes(out)
        except Exception as e:  # noqa: BLE001  (try the next size)
            error = e
    raise error


def make_batch(size: int, num_classes: int) -> dict:
    """A fixed random uint8 batch in the dataloader's format."""
    from mmpretrain.structures import DataSample

    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(
        0, 256, (BATCH, 3, size, size), generator=g, dtype=torch.uint8
    )
    labels = torch.randint(0, num_classes, (BATCH,), generator=g)
    return dict(
        inputs=inputs,
        data_samples=[DataSample().set_gt_label(int(x)) for x in labels],
    )


def prunable_share(mutator) -> float:
    """Share of the full network's FLOPs in layers a unit touches."""
    table = mutator.flops_table
    full = torch.tensor([float(u.num_channels) for u in mutator.units])
    per_layer = table.layer_flops(full)
    touched = (table.in_idx < table.num_units) | (
        table.out_idx < table.num_units
    )
    return float(per_layer[touched].sum() / per_layer.sum())


def run_stages(cfg, stages: int = len(STAGES)) -> dict:
    """Run the first ``stages`` stages on one classifier config.

    Args:
        cfg (Config): The mmpretrain config (its ``model``).
        stages (int): How many of :data:`STAGES` to run. Defaults to all.

    Returns:
        dict: ``status`` (``'pass'`` or the failing stage), ``reason``,
        ``size``, ``units``, ``share``, ``target`` and ``flops`` (as
        fractions of the full FLOPs) where reached.
    """
    from mmengine.optim import OptimWrapper, OptimWrapperDict

    from projects.dmcp.models import (
        DMCP,
        build_subnet,
        count_flops,
        load_subnet,
    )
    from projects.dmcp.models.export import export_search_results
    from projects.dmcp.utils import tensor_forward

    row: dict = {}
    stage = 'build'
    try:
        plain = build_plain(cfg)
        size, out_shape = pick_size(plain)
        shape = (3, size, size)
        row['size'] = size
        fresh = copy.deepcopy(plain)
        if stages <= STAGES.index('trace'):
            return dict(row, status='pass')
        stage = 'trace'
        from projects.dmcp.models import DMCPChannelMutator

        probe = DMCPChannelMutator()
        probe.prepare_from_supernet(
            copy.deepcopy(plain), shape, tensor_forward
        )
        full, low = probe.flops_of('max'), probe.flops_of('min')
        target = full // 2 if low <= full // 2 else (low + full) // 2
        algo = DMCP(
            architecture=plain,
            target_flops=target,
            input_shape=shape,
            seed=0,
        )
        mutator = algo.mutator
        row.update(
            units=len(mutator.units),
            share=prunable_share(mutator),
            target=target / full,
        )
        if stages <= STAGES.index('stage 1'):
            return dict(row, status='pass')
        stage = 'stage 1'
        optim = OptimWrapperDict(
            architecture=OptimWrapper(
                torch.optim.SGD(algo.architecture.parameters(), lr=0.01)
            ),
            mutator=OptimWrapper(
                torch.optim.SGD(mutator.parameters(), lr=0.01)
            ),
        )
        batch = make_batch(size, out_shape[0][-1])
        algo.train()
        algo.train_step(batch, optim, update_arch=False)
        stage = 'stage 2'
        algo._arch_step(algo.data_preprocessor(batch, True), optim['mutator'])
        if stages <= STAGES.index('export'):
            return dict(row, status='pass')
        stage = 'export'
        with tempfile.TemporaryDirectory() as tmp:
            paths = export_search_results(
                algo, tmp, num_direct_samples=1, max_direct_draws=64
            )
            path = paths['Expected Sampling subnet']
            doc = load_subnet(path)
            choices = {u.name: doc['channels'][u.name] for u in mutator.units}
            stage = 'prune'
            with contextlib.redirect_stdout(io.StringIO()):
                pruned = build_subnet(fresh, path, shape)
        stage = 'check'
        counted = count_flops(pruned, shape, tensor_forward)
        flops = doc['meta']['flops']
        searched = mutator.subnet_flops(choices)
        row['flops'] = counted / algo.full_flops
        if not counted == flops == searched:
            raise AssertionError(
                f'pruned model runs {counted} MACs, the yaml says {flops}, '
                f'the mutator {searched}'
            )
        with torch.no_grad():
            out = tensor_forward(pruned.eval(), torch.zeros(BATCH, *shape))
        if output_shapes(out) != out_shape:
            raise AssertionError(
                f'pruned output {output_shapes(out)} != {out_shape}'
            )
        return dict(row, status='pass')
    except Exception as e:  # noqa: BLE001  (the row records it)
        if os.environ.get('COVERAGE_TRACEBACK'):
            traceback.print_exc()
        return dict(row, status=stage, reason=first_line(e))


def _child(cfg, stages: int, queue) -> None:
    torch.set_num_threads(1)
    try:
        queue.put(run_stages(cfg, stages))
    except BaseException as e:  # noqa: BLE001
        queue.put(dict(status='build', reason=first_line(e)))


def run_isolated(cfg, timeout: float, stages: int = len(STAGES)) -> dict:
    """:func:`run_stages` in a forked process, killed after ``timeout``."""
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(cfg, stages, queue))
    start = time.perf_counter()
    proc.start()
    row = None
    while row is None and time.perf_counter() - start < timeout:
        alive = proc.is_alive()
        try:
            row = queue.get(timeout=0.5)
        except Empty:
            if not alive:  # died without a row
                break
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if row is None:
        why = (
            f'timed out after {timeout:.0f} s'
            if proc.exitcode in (None, -9)
            else f'process died (exit code {proc.exitcode})'
        )
        row = dict(status='build', reason=why)
    row['seconds'] = time.perf_counter() - start
    return row


# ----------------------------------------------------------------- table
def format_table(rows: List[dict]) -> str:
    """The Markdown table of the rows."""
    lines = [
        '| architecture (model name) | family | kind | input | units | '
        'prunable FLOPs | subnet FLOPs | result | s |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        share = f'{100 * r["share"]:.0f}%' if 'share' in r else ''
        flops = f'{100 * r["flops"]:.0f}%' if 'flops' in r else ''
        result = (
            'pass'
            if r['status'] == 'pass'
            else f'{r["status"]}: {r["reason"]}'.replace('|', '/')
        )
        lines.append(
            f'| {r["name"]} | {r["family"]} | {r["kind"]} | '
            f'{r.get("size", "")} | {r.get("units", "")} | {share} | '
            f'{flops} | {result} | {r["seconds"]:.1f} |'
        )
    return '\n'.join(lines)


def summary(rows: List[dict]) -> Dict[str, Tuple[int, int]]:
    """Kind -> (passing, total)."""
    out: Dict[str, Tuple[int, int]] = OrderedDict()
    for kind in ('CNN', 'hybrid', 'MLP', 'graph', 'transformer'):
        sel = [r for r in rows if r['kind'] == kind]
        if sel:
            ok = sum(r['status'] == 'pass' for r in sel)
            out[kind] = (ok, len(sel))
    return out


def write_results(rows: List[dict], command: str, seconds: float) -> str:
    """The results file's text."""
    counts = summary(rows)
    ok, total = counts.get('CNN', (0, 0))
    cnn = sorted({r['family'] for r in rows if r['kind'] == 'CNN'})
    figure = ', '.join(f'{k}: {a} of {b}' for k, (a, b) in counts.items())
    return '\n'.join(
        [
            '# Coverage: which mmpretrain classifiers DMCP can prune',
            '',
            f'Command (repository root, {seconds / 60:.1f} min on the shared '
            '2-core CPU machine):',
            '',
            '```bash',
            command,
            '```',
            '',
            f'**{ok} of {total} CNN classifier architectures pass every '
            f'stage** ({100 * ok / max(total, 1):.0f}%). All kinds: '
            f'{figure}.',
            '',
            'What counts as a CNN: a backbone built from convolutions, '
            'pooling and element-wise gates only (no self-attention, no MLP '
            'across tokens, no graph); the CNN families here are '
            + ', '.join(cnn)
            + '. Transformers, hybrids with attention blocks, MLP-mixers and '
            'graph networks are in the table but not in the figure.',
            '',
            'Rows: one per architecture family of the model zoo (its '
            'backbone class; the smallest model by parameters), plus '
            'registry CNNs without a zoo classifier. Stages: build (random '
            'weights, smallest input of 64/112/224 that runs), trace (the '
            'DMCP algorithm and its mutator; target half the FLOPs, or the '
            'middle of [min, full] if the smallest subnet is above half), '
            'stage 1 and stage 2 (one search step each, batch 2), export '
            '(the Expected Sampling yaml), prune (`build_subnet`), check '
            '(counted FLOPs of the pruned model = yaml = mutator; output '
            "shape = the plain classifier's). *prunable FLOPs*: share of "
            'the full FLOPs in layers whose input or output channels a unit '
            'prunes; *subnet FLOPs*: the exported subnet over the full '
            'network; *result*: pass, or the first failing stage and the '
            'first line of its error; *s*: wall seconds for the row (in a '
            'forked process, one thread, with other jobs on the machine).',
            '',
            notes(rows),
            '',
            format_table(rows),
            '',
        ]
    )


def notes(rows: List[dict]) -> str:
    """What the figure does not say: failures, weakly prunable passes."""
    failed = [r for r in rows if r['status'] != 'pass']
    weak = [r for r in rows if r['status'] == 'pass' and r['share'] < 0.5]
    lines = ['Notes:', '']
    lines.append(
        '- Failing: '
        + (
            '; '.join(
                f'{r["family"]} ({r["kind"]}) at {r["status"]}' for r in failed
            )
            or 'none'
        )
        + '. Each is one line in the table.'
    )
    lines.append(
        '- Passing, but less than half of the FLOPs prunable (grouped '
        'convolutions, attention and layers with per-channel parameters '
        'are kept whole): '
        + (
            ', '.join(f'{r["family"]} {100 * r["share"]:.0f}%' for r in weak)
            or 'none'
        )
        + '.'
    )
    lines.append(
        '- *subnet FLOPs* is the Expected Sampling subnet after a single '
        'search step: at most the target, often well below it (the Markov '
        'chains start uniform, E[width] about 55%), not a converged search.'
    )
    lines.append(
        '- In transformers, hybrids and MLP-mixers only the hidden widths '
        'of channel-wise MLPs are units (the tracer follows the features '
        'into a linear layer); attention heads, the residual width and '
        'anything normalised with parameters are kept whole.'
    )
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', nargs='*', help='model names to run')
    parser.add_argument(
        '--timeout', type=float, default=120.0, help='seconds per row'
    )
    parser.add_argument(
        '--stdout', action='store_true', help='print, do not write the file'
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    candidates = zoo_candidates() + extra_candidates()
    if args.only:
        candidates = [c for c in candidates if c[0] in args.only]
    rows = []
    for name, family, cfg in candidates:
        if family.startswith('?'):
            row = dict(status='build', reason=f'zoo config: {cfg}')
            row['seconds'] = 0.0
            family = family[1:]
        else:
            row = run_isolated(cfg, args.timeout)
        row.update(name=name, family=family, kind=kind_of(family))
        rows.append(row)
        print(
            f'{name:45s} {row["status"]:8s} {row["seconds"]:6.1f}s '
            f'{row.get("reason", "")[:100]}',
            flush=True,
        )
    elapsed = time.perf_counter() - start
    command = 'nice -n 10 python benchmarks/coverage.py'
    if args.only:
        command += ' --only ' + ' '.join(args.only)
    text = write_results(rows, command, elapsed)
    if args.stdout:
        print(text)
    else:
        RESULTS.write_text(text)
        print(f'wrote {RESULTS}')
    for kind, (ok, total) in summary(rows).items():
        print(f'{kind}: {ok} of {total} pass')


if __name__ == '__main__':
    main()
