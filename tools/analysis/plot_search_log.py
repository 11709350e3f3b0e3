"""Plot a search's log: the expected FLOPs against the target, and the
architecture step's ``loss_cls`` and ``loss_reg``, over the iterations.

Usage::

    python tools/analysis/plot_search_log.py WORK_DIR_OR_JSON [--out PNG]
        [--title TITLE]

Reads mmengine's ``vis_data/scalars.json`` (the keys ``expected_mflops``,
``target_mflops``, ``arch.loss_cls``, ``arch.loss_reg``, ``max.loss`` and
``step``; a latency-budget search's ``expected_latency_ms`` and
``target_latency_ms`` instead of the FLOPs). Given a work dir, all its
runs are joined, a resumed run continuing the log of the one it resumed.
The PNG goes to ``--out``, else ``search_curves.png`` in the work dir
(beside the json when a json is given); its path is printed.
"""

import os.path as osp
import sys

sys.path.insert(
    0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
)

import argparse
from typing import List, Optional

from projects.dmcp import cli
from projects.dmcp.visualization import plot_search_curves, read_scalars

CURVES_PNG = 'search_curves.png'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments. Defaults to None
            (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = cli.parser(
        description='Plot E[FLOPs], loss_cls and loss_reg of a DMCP search'
    )
    parser.add_argument(
        'path', help='the work dir of a search, or a vis_data/scalars.json'
    )
    parser.add_argument('--out', help='PNG to write')
    parser.add_argument('--title', help='figure title')
    return parser.parse_args(argv)


@cli.entry
def main(argv: Optional[List[str]] = None) -> str:
    """Read, plot and print the path.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        str: The PNG written.
    """

    args = parse_args(argv)
    records = read_scalars(args.path)
    folder = args.path if osp.isdir(args.path) else osp.dirname(args.path)
    out = args.out or osp.join(folder, CURVES_PNG)
    path = plot_search_curves(records, out, title=args.title)
    print(f'wrote {path}', flush=True)
    return path


if __name__ == '__main__':
    main()
