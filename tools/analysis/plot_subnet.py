"""Plot the retained channels of searched subnets, layer by layer (the
paper's Fig. 5).

Usage::

    python tools/analysis/plot_subnet.py YAML [YAML ...] [--out PNG] [--diff]
        [--config SUPERNET_CONFIG] [--cfg-options KEY=VALUE ...]

Several yamls are drawn side by side; ``--diff`` draws the second minus the
first. The full width of every layer (grey bars) comes from the supernet
config (``--config``, else the first yaml's ``meta.supernet``): its
architecture is built and each layer's ``out_channels`` read. Without a
config that builds, only the retained channels are drawn. The PNG goes to
``--out``, else beside the first yaml (``<stem>.png``, ``<stem>_compare.png``
or ``<stem>_diff.png``); its path is printed.
"""

import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import argparse
import warnings
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config, DictAction

from projects.dmcp import cli
from projects.dmcp.model_config import read_model_config
from projects.dmcp.models import format_flops, load_subnet
from projects.dmcp.registry import MODELS
from projects.dmcp.utils import REPO_ROOT
from projects.dmcp.visualization import plot_subnets, unique_labels


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = cli.parser(
        description='Plot retained vs full channels of subnet yamls'
    )
    parser.add_argument('yamls', nargs='+', help='subnet yaml files')
    parser.add_argument('--out', help='PNG to write')
    parser.add_argument(
        '--diff',
        action='store_true',
        help='plot the second yaml minus the first (needs two yamls)',
    )
    parser.add_argument(
        '--config',
        help='supernet config giving the full widths (default: the first '
        "yaml's meta.supernet)",
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs',
    )
    args = parser.parse_args(argv)
    if args.diff and len(args.yamls) != 2:
        parser.error('--diff needs exactly two yamls')
    return args


def _find_config(path: str) -> Optional[str]:
    for candidate in (path, osp.join(REPO_ROOT, path)):
        if candidate and osp.isfile(candidate):
            return candidate
    return None


def full_channels(
    config: str, layers: Sequence[str], cfg_options: Optional[dict] = None
) -> Dict[str, int]:
    """Full output channels of ``layers`` in the architecture a config
    builds.

    Args:
        config (str): A supernet (or subnet, or plain classifier) config.
        layers (Sequence[str]): Layer names.
        cfg_options (dict, optional): Overrides. Defaults to None.

    Returns:
        dict[str, int]: Layer name -> channels, for the layers found.
    """

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    arch = read_model_config(cfg).architecture
    modules = dict(MODELS.build(arch).named_modules())
    out = {}
    for name in layers:
        m = modules.get(name)
        width = getattr(m, 'out_channels', getattr(m, 'out_features', None))
        if width is not None:
            out[name] = int(width)
    return out


@cli.entry
def main(argv: Optional[List[str]] = None) -> str:
    """Plot and print the path.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        str: The PNG written.
    """

    args = parse_args(argv)
    docs = [load_subnet(p) for p in args.yamls]
    labels = unique_labels(args.yamls)
    for i, doc in enumerate(docs):
        flops = doc['meta'].get('flops')
        if flops is not None:
            labels[i] += f' ({format_flops(flops)})'
    layers: List[str] = []
    for doc in docs:
        layers += [n for n in doc['channels'] if n not in layers]

    full = None
    config = args.config or docs[0]['meta'].get('supernet')
    if config:
        found = _find_config(config)
        if found is None:
            warnings.warn(
                f'cannot find the supernet config {config}: plotting the '
                'retained channels only',
                stacklevel=1,
            )
        else:
            try:
                full = full_channels(found, layers, args.cfg_options)
            except Exception as e:  # any failure: still draw what we have
                warnings.warn(
                    f'cannot build {found} ({type(e).__name__}: {e}): '
                    'plotting the retained channels only',
                    stacklevel=1,
                )
    out = args.out
    if out is None:
        stem = osp.splitext(args.yamls[0])[0]
        suffix = '_diff' if args.diff else '_compare' if len(docs) > 1 else ''
        out = f'{stem}{suffix}.png'
    path = plot_subnets(
        [(label, doc['channels']) for label, doc in zip(labels, docs)],
        out,
        full=full,
        diff=args.diff,
    )
    print(f'wrote {path}', flush=True)
    return path


if __name__ == '__main__':
    main()
