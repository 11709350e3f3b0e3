"""Slim a trained checkpoint for release, as mmpretrain's publish_model.py:
keep the weights and meta, drop the optimizer and the message hub, and name
the file with the first 8 hex digits of its sha256 (put the full sha256,
which the tool prints, in the zoo entry's ``Weights SHA256``). The input is
loaded with ``weights_only=True``; the output holds only tensors and plain
data.

    python tools/publish_checkpoint.py work_dirs/x/epoch_3.pth \
        checkpoints/dmcp_x.pth   # -> checkpoints/dmcp_x-1a2b3c4d.pth
"""

import argparse
import hashlib
import io
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch

from projects.dmcp import cli, compat
from projects.dmcp.fileio import atomic_write


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = cli.parser(description='Slim a checkpoint.')
    parser.add_argument('checkpoint', help='checkpoint written by training')
    parser.add_argument('out', help='output path; the hash is appended')
    return parser.parse_args(argv)


@cli.entry
def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    ckpt = compat.load_checkpoint_file(args.checkpoint, map_location='cpu')
    meta = {
        k: v.item() if hasattr(v, 'item') else v  # numpy scalars -> Python
        for k, v in ckpt.get('meta', {}).items()
        if k in ('epoch', 'iter', 'seed', 'experiment_name', 'mmengine')
    }
    slim = dict(state_dict=ckpt['state_dict'], meta=meta)
    buf = io.BytesIO()
    torch.save(slim, buf)
    data = buf.getvalue()
    stem, ext = osp.splitext(args.out)
    out = f'{stem}-{hashlib.sha256(data).hexdigest()[:8]}{ext or ".pth"}'
    atomic_write(out, data)
    print(out)
    print(f'sha256: {hashlib.sha256(data).hexdigest()}')


if __name__ == '__main__':
    main()
