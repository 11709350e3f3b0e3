"""Pictures of a search: the searched widths (the paper's Fig. 5), the FLOPs
and channels of Direct Samples (Fig. 6 and 7) and the search log's curves.

Every function draws one PNG with matplotlib's ``Agg`` backend (no display
needed) and returns its path; ``tools/analysis/plot_*.py`` read the inputs
(subnet yamls, a checkpoint, ``vis_data/scalars.json``) and call them.
matplotlib is imported when a picture is drawn, so importing this module (or
``projects.dmcp``) does not need it.
"""

import glob
import json
import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .models.flops import format_flops

__all__ = [
    'plot_flops_histogram',
    'plot_layer_distributions',
    'plot_search_curves',
    'plot_subnets',
    'read_scalars',
    'short_layer_name',
    'unique_labels',
]

DPI = 120
FULL_COLOR = '#d9d9d9'
COLORS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2')


def _pyplot():
    import matplotlib

    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str) -> str:
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches='tight')
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def short_layer_name(name: str) -> str:
    """A layer name for an axis: without the leading ``backbone.``."""
    return name[len('backbone.') :] if name.startswith('backbone.') else name


def unique_labels(paths: Sequence[str]) -> List[str]:
    """The shortest trailing parts of ``paths`` that tell them apart
    (``a/DMCP_SUBNET_IMAGENET.yaml`` and ``b/DMCP_SUBNET_IMAGENET.yaml``
    become ``a/...`` and ``b/...``, distinct file names stay file names).

    Args:
        paths (Sequence[str]): File paths.

    Returns:
        list[str]: One label per path.
    """
    parts = [osp.normpath(osp.abspath(p)).split(os.sep) for p in paths]
    depth = 1
    while True:
        labels = ['/'.join(p[-depth:]) for p in parts]
        longest = max(len(p) for p in parts)
        if len(set(labels)) == len(labels) or depth >= longest:
            return labels
        depth += 1


def _layer_axis(ax, names: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(
        [short_layer_name(n) for n in names],
        rotation=90,
        fontsize=7 if len(names) > 30 else 8,
    )
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.grid(axis='y', alpha=0.3)
    ax.set_axisbelow(True)


def _width(num_layers: int, per_layer: float = 0.3) -> float:
    return float(min(max(8.0, per_layer * num_layers + 2.0), 40.0))


# ------------------------------------------------------------- Fig. 5
def plot_subnets(
    subnets: Sequence[Tuple[str, Mapping[str, int]]],
    out: str,
    full: Optional[Mapping[str, int]] = None,
    diff: bool = False,
    title: Optional[str] = None,
) -> str:
    """Retained channels of every layer as bars, as in the paper's Fig. 5.

    Several subnets stand side by side; the full widths, when known, are grey
    bars behind them. With ``diff`` the bars are the second subnet's
    channels minus the first's.

    Args:
        subnets (Sequence[tuple[str, Mapping[str, int]]]): ``(label,
            channels)`` of each subnet, ``channels`` mapping layer names to
            retained channels.
        out (str): The PNG to write.
        full (Mapping[str, int], optional): Full channels per layer.
            Defaults to None (not drawn).
        diff (bool): Draw the difference of exactly two subnets. Defaults to
            False.
        title (str, optional): Figure title. Defaults to None (a default
            one).

    Returns:
        str: ``out``.
    """
    if not subnets:
        raise ValueError('no subnet to plot')
    if diff and len(subnets) != 2:
        raise ValueError(
            f'--diff needs exactly two subnets, got {len(subnets)}'
        )
    names: List[str] = []
    for _, channels in subnets:
        names += [n for n in channels if n not in names]
    plt = _pyplot()
    per_layer = 0.3 if diff else 0.25 + 0.12 * len(subnets)
    fig, ax = plt.subplots(figsize=(_width(len(names), per_layer), 5.5))
    x = np.arange(len(names))
    if diff:
        (label_a, a), (label_b, b) = subnets
        delta = np.array(
            [b[n] - a[n] if n in a and n in b else 0 for n in names]
        )
        colors = np.where(delta >= 0, '#2ca02c', '#d62728')
        ax.bar(x, delta, width=0.8, color=colors)
        ax.axhline(0, color='black', linewidth=0.8)
        ax.set_ylabel('retained channels, B minus A')
        more, fewer = int((delta > 0).sum()), int((delta < 0).sum())
        ax.set_title(
            title
            or f'B: {label_b}\nminus A: {label_a}\n'
            f'{more} layers wider in B (green), {fewer} narrower (red)',
            fontsize=10,
        )
    else:
        if full:
            widths = [full.get(n, 0) for n in names]
            ax.bar(x, widths, width=0.9, color=FULL_COLOR, label='full')
        k = len(subnets)
        bar = 0.8 / k
        for i, (label, channels) in enumerate(subnets):
            values = [channels.get(n, 0) for n in names]
            ax.bar(
                x - 0.4 + bar * (i + 0.5),
                values,
                width=bar,
                color=COLORS[i % len(COLORS)],
                label=label,
            )
        ax.set_ylabel('output channels')
        ax.set_title(
            title
            or 'Retained channels per layer'
            + (' (grey: full network)' if full else '')
        )
        ax.legend(loc='upper left', fontsize=8)
    _layer_axis(ax, names)
    return _save(fig, out)


# ------------------------------------------------------------- Fig. 6
def _flops_scale(value: float) -> Tuple[float, str]:
    return (1e9, 'GFLOPs') if value >= 1e9 else (1e6, 'MFLOPs')


def plot_flops_histogram(
    flops: Sequence[float],
    target: float,
    out: str,
    gamma: Optional[float] = None,
    expected: Optional[float] = None,
    title: Optional[str] = None,
) -> str:
    """Histogram of the FLOPs of Direct Samples with the target and their
    mean marked, as in the paper's Fig. 6.

    Args:
        flops (Sequence[float]): FLOPs (MACs) of each sample.
        target (float): The target FLOPs ``T``.
        out (str): The PNG to write.
        gamma (float, optional): Tolerance ratio; the band ``[gamma * T,
            T]`` is shaded. Defaults to None (no band).
        expected (float, optional): FLOPs of the Expected Sampling subnet,
            marked if given. Defaults to None.
        title (str, optional): Figure title. Defaults to None.

    Returns:
        str: ``out``.
    """
    values = np.asarray(flops, dtype=np.float64)
    if values.size == 0:
        raise ValueError('no FLOPs to plot')
    scale, unit = _flops_scale(max(float(values.max()), float(target)))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.hist(values / scale, bins=50, color='#9ecae1', edgecolor='#3182bd')
    if gamma is not None:
        low = gamma * target
        inside = float(((values >= low) & (values <= target)).mean())
        ax.axvspan(
            gamma * target / scale,
            target / scale,
            color='#a1d99b',
            alpha=0.6,
            label=f'budget band [{gamma:g} T, T]: {100 * inside:.1f}% of '
            'samples',
        )
    ax.axvline(
        target / scale,
        color='#d62728',
        linestyle='--',
        linewidth=2,
        label=f'target T = {format_flops(target)}',
    )
    mean = float(values.mean())
    ax.axvline(
        mean / scale,
        color='black',
        linewidth=2,
        label=f'mean = {format_flops(mean)} '
        f'(std {format_flops(values.std())})',
    )
    if expected is not None:
        ax.axvline(
            expected / scale,
            color='#2ca02c',
            linestyle=':',
            linewidth=2,
            label=f'Expected Sampling subnet = {format_flops(expected)}',
        )
    ax.set_xlabel(f'FLOPs ({unit}, multiply-accumulates)')
    ax.set_ylabel('number of samples')
    ax.set_title(title or f'FLOPs of {values.size} Direct Samples')
    ax.legend(fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, out)


# ------------------------------------------------------------- Fig. 7
def plot_layer_distributions(
    samples: Mapping[str, Sequence[int]],
    full: Mapping[str, int],
    out: str,
    expected: Optional[Mapping[str, float]] = None,
    title: Optional[str] = None,
) -> str:
    """Box plots of the channels that Direct Samples retain in some layers,
    as a percentage of the layer's full width (the paper's Fig. 7).

    Args:
        samples (Mapping[str, Sequence[int]]): Layer name -> retained
            channels of each sample.
        full (Mapping[str, int]): Layer name -> full channels.
        out (str): The PNG to write.
        expected (Mapping[str, float], optional): Layer name -> expected
            channels (Eq. 8), marked with a diamond. Defaults to None.
        title (str, optional): Figure title. Defaults to None.

    Returns:
        str: ``out``.
    """
    names = list(samples)
    if not names:
        raise ValueError('no layer to plot')
    data = [
        100.0 * np.asarray(samples[n], dtype=np.float64) / full[n]
        for n in names
    ]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(_width(len(names), 0.45), 5.5))
    x = np.arange(len(names))
    ax.boxplot(
        data,
        positions=x,
        widths=0.6,
        whis=(5, 95),
        showfliers=False,
        showmeans=True,
        meanprops=dict(
            marker='o',
            markerfacecolor='black',
            markeredgecolor='black',
            markersize=4,
        ),
        medianprops=dict(color='#3182bd', linewidth=2),
    )
    if expected:
        ax.scatter(
            [i for i, n in enumerate(names) if n in expected],
            [100.0 * expected[n] / full[n] for n in names if n in expected],
            marker='D',
            color='#d62728',
            s=28,
            zorder=3,
            label='expected channels (Eq. 8)',
        )
    ax.plot([], [], color='#3182bd', linewidth=2, label='median')
    ax.plot([], [], 'o', color='black', markersize=4, label='mean')
    ax.set_ylim(0, 105)
    ax.set_ylabel('retained channels (% of full width)')
    num = len(data[0])
    ax.set_title(
        title
        or f'Channels of {num} Direct Samples per layer '
        '(boxes: quartiles, whiskers: 5-95%)'
    )
    _layer_axis(ax, names)
    ax.set_xticklabels(
        [f'{short_layer_name(n)} ({full[n]})' for n in names],
        rotation=90,
        fontsize=7 if len(names) > 30 else 8,
    )
    ax.legend(loc='upper left', bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return _save(fig, out)


# ------------------------------------------------------------- search log
def _scalar_files(path: str) -> List[str]:
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path}: no such work dir or scalars.json')
    files = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    files += glob.glob(osp.join(path, 'vis_data', 'scalars.json'))
    if not files:
        raise FileNotFoundError(
            f'{path}: no */vis_data/scalars.json in it: the run has not '
            'logged yet, or its visualizer has no LocalVisBackend'
        )
    return files


def read_scalars(path: str) -> List[Dict[str, float]]:
    """The training records of a search's ``vis_data/scalars.json``.

    Given a work dir, every run in it (``<timestamp>/vis_data/scalars.json``,
    oldest first) is read and a later run replaces the records of an earlier
    one from its first step on, so a resumed search gives one continuous log
    and a search restarted from scratch only its own. Validation records
    (no ``iter`` key) are left out.

    Args:
        path (str): A work dir, a run dir or a ``scalars.json``.

    Returns:
        list[dict[str, float]]: Records sorted by ``step``.
    """
    records: Dict[int, dict] = {}
    for file in _scalar_files(path):
        run = []
        with open(file) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if 'iter' in rec and 'step' in rec:
                    run.append(rec)
        if not run:
            continue
        first = min(int(r['step']) for r in run)
        records = {s: r for s, r in records.items() if s < first}
        records.update({int(r['step']): r for r in run})
    if not records:
        raise ValueError(
            f'{path}: no training record (with iter and step) in the log'
        )
    return [records[s] for s in sorted(records)]


def _series(records: Sequence[dict], key: str) -> Tuple[list, list]:
    pairs = [(r['step'], r[key]) for r in records if key in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_search_curves(
    records: Sequence[Mapping[str, float]],
    out: str,
    title: Optional[str] = None,
) -> str:
    """E[FLOPs] against the target (E[latency] in ms, for a search with
    ``model.budget='latency'``), the architecture step's ``loss_cls`` and
    ``loss_reg`` over the iterations of a search.

    Args:
        records (Sequence[Mapping[str, float]]): From :func:`read_scalars`.
        out (str): The PNG to write.
        title (str, optional): Figure title. Defaults to None.

    Returns:
        str: ``out``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(9, 8.5), sharex=True)
    ax_f, ax_c, ax_r = axes
    latency = any('expected_latency_ms' in r for r in records)
    key, label, unit = (
        ('latency_ms', 'E[latency] (latency table)', 'ms')
        if latency
        else ('mflops', 'E[FLOPs] (Eq. 12)', 'MFLOPs')
    )
    steps, expected = _series(records, f'expected_{key}')
    target_steps, target = _series(records, f'target_{key}')
    if expected:
        ax_f.plot(steps, expected, color='#1f77b4', label=label)
    if target:
        ax_f.plot(
            target_steps,
            target,
            color='#d62728',
            linestyle='--',
            label='target',
        )
    ax_f.set_ylabel(unit)
    if not (expected or target):
        _no_data(ax_f, f'no expected_{key} in the log')
    cls_steps, loss_cls = _series(records, 'arch.loss_cls')
    max_steps, max_loss = _series(records, 'max.loss')
    if max_loss:
        ax_c.plot(
            max_steps,
            max_loss,
            color='#bbbbbb',
            label='stage 1: loss of the max subnet',
        )
    if loss_cls:
        ax_c.plot(
            cls_steps, loss_cls, color='#ff7f0e', label='stage 2: loss_cls'
        )
    ax_c.set_ylabel('cross entropy')
    reg_steps, loss_reg = _series(records, 'arch.loss_reg')
    if loss_reg:
        ax_r.plot(
            reg_steps,
            loss_reg,
            color='#2ca02c',
            label='stage 2: loss_reg (lambda x Eq. 13)',
        )
    else:
        _no_data(ax_r, 'no architecture step yet (warmup)')
    ax_r.set_ylabel('budget loss')
    ax_r.set_xlabel('iteration')
    if cls_steps:
        for ax in axes:
            ax.axvline(
                cls_steps[0],
                color='black',
                linestyle=':',
                linewidth=1,
                label='first architecture step' if ax is ax_f else None,
            )
    from matplotlib.ticker import MaxNLocator

    ax_r.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc='best')
    last = records[-1]
    ax_f.set_title(
        title
        or f'DMCP search: {len(records)} logged iterations, up to step '
        f'{int(last["step"])}'
    )
    fig.tight_layout()
    return _save(fig, out)


def _no_data(ax, text: str) -> None:
    ax.text(
        0.5,
        0.5,
        text,
        transform=ax.transAxes,
        ha='center',
        va='center',
        color='#888888',
    )
