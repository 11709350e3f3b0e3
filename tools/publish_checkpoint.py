"""Slim a trained checkpoint for release, as mmpretrain's publish_model.py:
keep the weights and meta, drop the optimizer and the message hub, and name
the file with the first 8 hex digits of its sha256.

    python tools/publish_checkpoint.py work_dirs/x/epoch_3.pth \
        checkpoints/dmcp_x.pth   # -> checkpoints/dmcp_x-1a2b3c4d.pth
"""

import argparse
import hashlib
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from projects.dmcp import compat  # noqa: E402

compat.apply_all()

import torch  # noqa: E402

from projects.dmcp.fileio import atomic_write  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Slim a checkpoint.')
    parser.add_argument('checkpoint', help='checkpoint written by training')
    parser.add_argument('out', help='output path; the hash is appended')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=False)
    meta = {
        k: v
        for k, v in ckpt.get('meta', {}).items()
        if k in ('epoch', 'iter', 'seed', 'experiment_name', 'mmengine')
    }
    slim = dict(state_dict=ckpt['state_dict'], meta=meta)
    tmp = args.out + '.tmp'
    torch.save(slim, tmp)
    data = open(tmp, 'rb').read()
    os.remove(tmp)
    stem, ext = osp.splitext(args.out)
    out = f'{stem}-{hashlib.sha256(data).hexdigest()[:8]}{ext or ".pth"}'
    atomic_write(out, data)
    print(out)


if __name__ == '__main__':
    main()
