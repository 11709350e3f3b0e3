"""Plot what Direct Sampling draws from a searched supernet: the FLOPs
histogram of N samples with the target and their mean (the paper's Fig. 6)
and the channels they keep in chosen layers (Fig. 7).

Usage::

    python tools/analysis/plot_samples.py SUPERNET_CONFIG CHECKPOINT
        [--num 1000] [--layers L1 L2 ...] [--seed 0] [--out-dir DIR]
        [--cfg-options KEY=VALUE ...]

The DMCP model is built from the config (with the ``--cfg-options`` the
search ran with, e.g. ``model.input_shape``; the config a search dumps into
its work dir has them all) and the checkpoint's ``alpha`` loaded. ``--layers``
picks layers by name (default: the first layer of every unit; coupled
layers share a distribution). Writes ``direct_samples_flops.png`` and
``direct_samples_channels.png`` into ``--out-dir`` (default: the
checkpoint's folder) and prints their paths.
"""

import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import argparse
import copy
import difflib
from typing import List, Optional

from mmengine.config import Config, DictAction

from projects.dmcp import cli
from projects.dmcp.models import DMCP
from projects.dmcp.models.export import expected_sampling
from projects.dmcp.registry import build_model
from projects.dmcp.visualization import (
    plot_flops_histogram,
    plot_layer_distributions,
)

FLOPS_PNG = 'direct_samples_flops.png'
CHANNELS_PNG = 'direct_samples_channels.png'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = cli.parser(
        description='Plot FLOPs and channels of Direct Samples'
    )
    parser.add_argument('config', help='the supernet config of the search')
    parser.add_argument('checkpoint', help='a checkpoint of the search')
    parser.add_argument(
        '--num', type=int, default=1000, help='samples to draw'
    )
    parser.add_argument(
        '--layers',
        nargs='+',
        help='layer names for the channel plot (default: the first layer '
        'of every unit)',
    )
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the draws'
    )
    parser.add_argument(
        '--out-dir', help="folder of the PNGs (default: the checkpoint's)"
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs',
    )
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error('--num must be at least 1')
    return args


def build_searched_model(cfg: Config, checkpoint: str):
    """Build the DMCP model of a config and load a search checkpoint.

    Args:
        cfg (Config): The supernet config.
        checkpoint (str): Path or URL of the checkpoint.

    Returns:
        DMCP: The model, in eval mode.
    """
    from mmengine.runner import load_checkpoint

    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = build_model(model_cfg)
    if not isinstance(model, DMCP):
        cli.fail(
            'plot_samples.py',
            f'the config builds a '
            f'{type(model).__name__}, not a DMCP search (give the supernet '
            'config)',
        )
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


@cli.entry
def main(argv: Optional[List[str]] = None) -> List[str]:
    """Draw, plot and print the paths.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        list[str]: The PNGs written.
    """
    import numpy as np
    import torch

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = build_searched_model(cfg, args.checkpoint)
    if model.target_flops is None:
        cli.fail(
            'plot_samples.py',
            f'model.budget={model.cost.name!r}: the histogram plots FLOPs '
            'against a FLOPs target; a latency-budget search has none',
        )
    mutator = model.mutator

    full = mutator.layer_channels(mutator.sample_choices('max'))
    layers = args.layers or mutator.unit_names
    for name in layers:
        if name not in full:
            close = difflib.get_close_matches(name, list(full), n=1)
            hint = f'; did you mean {close[0]}?' if close else ''
            cli.fail(
                'plot_samples.py',
                f'--layers: {name} is not a pruned layer of the model{hint}',
            )

    with torch.no_grad():
        generator = torch.Generator().manual_seed(args.seed)
        rows = mutator.sample_direct_batch(args.num, generator)
        flops = mutator.flops_table(rows).cpu().numpy()
        choices, _ = expected_sampling(mutator, model.target_flops)
        expected_flops = mutator.subnet_flops(choices)
        unit_expected = dict(
            zip(mutator.unit_names, mutator.expected_channels().tolist())
        )
    per_sample = [
        mutator.layer_channels(mutator.choices_from_row(r)) for r in rows
    ]
    samples = {n: np.array([s[n] for s in per_sample]) for n in layers}
    # expected channels of a layer: its unit's, times a depthwise multiplier
    expected = {}
    for spec in mutator.specs:
        for name in spec.producers + spec.followers:
            if name in samples:
                mult = full[name] // spec.num_channels
                expected[name] = unit_expected[spec.name] * mult

    remote = '://' in args.checkpoint
    out_dir = args.out_dir or (
        '.' if remote else osp.dirname(osp.abspath(args.checkpoint))
    )
    name = osp.basename(args.checkpoint)
    paths = [
        plot_flops_histogram(
            flops,
            model.target_flops,
            osp.join(out_dir, FLOPS_PNG),
            gamma=model.gamma,
            expected=expected_flops,
            title=f'FLOPs of {args.num} Direct Samples of {name}',
        ),
        plot_layer_distributions(
            samples,
            {n: full[n] for n in layers},
            osp.join(out_dir, CHANNELS_PNG),
            expected=expected,
        ),
    ]
    for path in paths:
        print(f'wrote {path}', flush=True)
    return paths


if __name__ == '__main__':
    main()
