"""Measure a per-layer latency table of a supernet on this device.

Usage::

    python tools/analysis/latency_table.py SUPERNET_CONFIG OUT.yaml
        [--batch 1] [--runs 20] [--threads 1] [--calibration-subnets 10]
        [--seed 0] [--cfg-options KEY=VALUE ...]

Every convolution and linear layer of the config's architecture is timed in
torch (eager, CPU, ``--threads`` threads) as a plain layer of each width it
can take: each number of retained groups of its output unit, given each
number of retained groups of its input unit (the widths the mutator's group
ends give, ``channel_unit_cfg.num_groups`` and ``divisor``), on an input of
the traced size; each entry is the median of ``--runs`` runs in
milliseconds.

A network's time is more than the sum of its convolution and linear layers
(batch norms, activations, additions, pooling, per-module overhead: on the
demo's network at batch 1 the layers are less than half of it), so the tool
then times whole pruned networks end to end, interleaved (round ``r`` runs
each once): the ``G`` uniform subnets (every unit ``k`` groups) and
``--calibration-subnets`` random ones (each unit's group count uniform),
and fits ``measured = offset_ms + scale * sum(layer entries)`` by least
squares; ``meta.calibration`` holds the fit and its points, and every
figure the table gives is the fitted whole-network time.

The yaml (:mod:`projects.dmcp.models.latency`) records the device, the
backend and the settings in ``meta``; a mutator reads it with
``set_latency_table`` and gives E[latency] (``expected_latency``); a search
budgets it with ``model.budget='latency'``.
"""

import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import argparse
import copy
import os
import platform
import statistics
import time
from typing import List, Optional

import torch
import yaml
from mmengine.config import Config, DictAction
from torch import nn

from projects.dmcp import cli
from projects.dmcp.fileio import atomic_write_text
from projects.dmcp.model_config import read_model_config
from projects.dmcp.models import DMCPSubnet
from projects.dmcp.models.latency import LatencyTable, layer_units
from projects.dmcp.models.prune import _resized
from projects.dmcp.registry import MODELS, build_model
from projects.dmcp.utils import tensor_forward


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = cli.parser(
        description='Measure the per-layer latency table of a supernet'
    )
    parser.add_argument('config', help='the supernet config')
    parser.add_argument('out', help='the table (yaml)')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument(
        '--calibration-subnets',
        type=int,
        default=10,
        help='random whole subnets timed for the calibration, beside the '
        'uniform ones (default 10)',
    )
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the random subnets'
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs',
    )
    return parser.parse_args(argv)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the machine type."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms(layer: nn.Module, x: torch.Tensor, runs: int, warmup: int):
    """Median milliseconds of ``layer(x)``."""
    times = []
    with torch.no_grad():
        for _ in range(warmup):
            layer(x)
        for _ in range(runs):
            start = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def layer_input(rec, cin: int, batch: int) -> torch.Tensor:
    """A random input of a traced layer with ``cin`` channels."""
    if rec.kind == 'linear':
        return torch.randn(batch * rec.out_spatial, cin)
    return torch.randn(batch, cin, *rec.in_size)


def measure(cfg: Config, args: argparse.Namespace) -> dict:
    """The table's content for a supernet config.

    Args:
        cfg (Config): The supernet config.
        args (argparse.Namespace): The parsed command line.

    Returns:
        dict: ``meta`` and ``layers``.
    """
    spec = read_model_config(cfg)
    if spec.kind != 'DMCP':
        raise ValueError(
            f'{cfg.filename}: model.type is {cfg.model.get("type")!r}; '
            'latency_table.py needs the supernet config of a search '
            "(type='mmrazor.DMCP')"
        )
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.architecture = spec.architecture  # with its registry scope
    mutator = build_model(model_cfg).mutator
    plain = MODELS.build(copy.deepcopy(spec.architecture))
    modules = dict(plain.named_modules())
    ends = {i: u.ends for i, u in enumerate(mutator.units)}
    layers = {}
    for rec, i, o in layer_units(mutator.trace, mutator.specs):
        ins = [rec.in_channels] if i is None else ends[i]
        outs = [rec.out_channels] if o is None else ends[o]
        old = modules[rec.name]
        table = []
        for cin in ins:
            row = []
            for cout in outs:
                if rec.depthwise:
                    mult = rec.out_channels // rec.in_channels
                    cin, width = cout, cout * mult
                else:
                    width = cout
                layer = _resized(old, cin, width).eval()
                x = layer_input(rec, cin, args.batch)
                row.append(
                    round(median_ms(layer, x, args.runs, args.warmup), 5)
                )
            table.append(row)
        layers[rec.name] = {
            'in': None if i is None else mutator.unit_names[i],
            'out': None if o is None else mutator.unit_names[o],
            'channels': [rec.in_channels, rec.out_channels],
            'ms': table,
        }
    meta = dict(
        device=f'cpu ({cpu_name()})',
        backend=f'torch {torch.__version__} eager',
        threads=args.threads,
        batch=args.batch,
        runs=args.runs,
        input_shape=list(mutator.input_shape),
        num_groups=mutator.units[0].num_groups,
        divisor=mutator.divisor,
        config=cfg.filename,
        load_average=[round(v, 2) for v in os.getloadavg()],
    )
    doc = dict(meta=meta, layers=layers)
    meta['calibration'] = calibrate(
        doc, mutator, spec.architecture, args, cfg.filename
    )
    return doc


def calibrate(
    doc: dict, mutator, arch: dict, args: argparse.Namespace, where: str
) -> dict:
    """Time whole pruned networks and fit ``offset_ms + scale * sum``.

    Args:
        doc (dict): The table so far (no calibration).
        mutator (DMCPChannelMutator): The supernet's mutator.
        arch (dict): The classifier's config.
        args (argparse.Namespace): The parsed command line.
        where (str): The config, for errors.

    Returns:
        dict: ``offset_ms``, ``scale`` and ``points``, ``[groups of every
        unit, layers' sum, measured]`` per subnet.
    """
    table = LatencyTable(
        mutator.trace, mutator.specs, mutator.units[0].num_groups, doc, where
    )
    num_groups, num_units = mutator.units[0].num_groups, len(mutator.units)
    subnets = [[k] * num_units for k in range(1, num_groups + 1)]
    g = torch.Generator().manual_seed(args.seed)
    for _ in range(args.calibration_subnets):
        subnets.append(
            (
                torch.randint(1, num_groups + 1, (num_units,), generator=g)
            ).tolist()
        )
    x = torch.randn(args.batch, *mutator.input_shape, generator=g)
    models = []
    for groups in subnets:
        choices = {
            u.name: u.channels_of(k) for u, k in zip(mutator.units, groups)
        }
        channels = mutator.layer_channels(choices)
        models.append(
            DMCPSubnet(
                arch, dict(meta={}, channels=channels), mutator.input_shape
            ).eval()
        )
    times = [[] for _ in models]
    with torch.no_grad():
        for _ in range(args.warmup):
            for model in models:
                tensor_forward(model, x)
        for _ in range(args.runs):  # interleaved: load hits all alike
            for model, t in zip(models, times):
                start = time.perf_counter()
                tensor_forward(model, x)
                t.append(time.perf_counter() - start)
    sums = torch.tensor(
        [table.lookup(groups) for groups in subnets], dtype=torch.float64
    )
    measured = torch.tensor(
        [statistics.median(t) * 1e3 for t in times], dtype=torch.float64
    )
    design = torch.stack([torch.ones_like(sums), sums], dim=1)
    offset, scale = (
        torch.linalg.lstsq(design, measured[:, None]).solution[:, 0].tolist()
    )
    if scale <= 0:  # timing noise swamped the layers: keep the offset only
        offset, scale = float(measured.mean() - sums.mean()), 1.0
    return dict(
        offset_ms=round(offset, 5),
        scale=round(scale, 5),
        points=[
            [list(groups), round(float(s), 5), round(float(m), 5)]
            for groups, s, m in zip(subnets, sums, measured)
        ],
    )


@cli.entry
def main(argv: Optional[List[str]] = None) -> dict:
    """Measure, write the table and print a summary.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        dict: The table's content.
    """
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    torch.set_num_threads(args.threads)
    doc = measure(cfg, args)
    atomic_write_text(
        args.out, yaml.safe_dump(doc, sort_keys=False, width=1000)
    )
    full = sum(t['ms'][-1][-1] for t in doc['layers'].values())
    cal = doc['meta']['calibration']
    error = max(
        abs(cal['offset_ms'] + cal['scale'] * s - m) / m
        for _, s, m in cal['points']
    )
    groups = doc['meta']['num_groups']
    whole = cal['points'][groups - 1][2]  # every unit all groups
    print(
        f'Wrote {args.out}: {len(doc["layers"])} layers; the full network '
        f'is {full:.3f} ms of convolution and linear layers and '
        f'{whole:.3f} ms end to end on {doc["meta"]["device"]}; '
        f'calibration: whole network = {cal["offset_ms"]:.3f} ms + '
        f'{cal["scale"]:.3f} x layers '
        f'(largest error {100 * error:.1f}% over {len(cal["points"])} '
        'subnets)',
        flush=True,
    )
    return doc


if __name__ == '__main__':
    main()
