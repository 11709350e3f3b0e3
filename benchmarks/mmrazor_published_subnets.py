"""FLOPs and parameters of mmrazor's two published DMCP subnets, counted by
this repository (``tools/analysis/get_flops.py``: MACs of convolution and
linear layers of the pruned model our reproduction config builds) and by
mmrazor 1.0.0 itself (its ``ResourceEstimator`` on mmrazor's own subnet
model, which also counts batch norms, activations and pooling).

    python benchmarks/mmrazor_published_subnets.py [--out FILE.md]

Both models come from the published files in ``tests/data/mmrazor/`` (the
mutator jsons, what mmrazor's ``dmcp_*_subnet_32xb64.py`` configs load) at
1x3x224x224; weights do not matter for counts.
"""

import argparse
import datetime
import os.path as osp
import platform
import sys
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import projects.dmcp  # noqa: E402,F401  (shims + our classes)

CASES = [
    (
        'ResNet-50 2G',
        'configs/pruning/dmcp/dmcp_resnet50_subnet_mmrazor-2g_in1k.py',
        'tests/data/mmrazor/DMCP_R50_2G.json',
    ),
    (
        'MobileNetV2 1.0x 100M',
        'configs/pruning/dmcp/dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k.py',
        'tests/data/mmrazor/DMCP_MBV2_100M.json',
    ),
]


def count(config: str, subnet: str) -> dict:
    """Our count and mmrazor's of one published subnet.

    Args:
        config (str): Our reproduction config.
        subnet (str): mmrazor's published file.

    Returns:
        dict: ``ours`` (flops MACs, params) and ``mmrazor`` (flops and
        params in M, as its estimator reports them).
    """
    import torch
    from mmengine.config import Config
    from mmrazor.models.task_modules import ResourceEstimator

    from tests.helpers.mmrazor import build_mmrazor_subnet
    from tools.analysis.get_flops import count as our_count

    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    ours = our_count(cfg, osp.join(REPO_ROOT, subnet))
    theirs = build_mmrazor_subnet(
        cfg.model.architecture, osp.join(REPO_ROOT, subnet)
    ).eval()
    estimator = ResourceEstimator(input_shape=(1, 3, 224, 224))
    with torch.no_grad():
        razor = estimator.estimate(theirs)
    razor_params = sum(p.numel() for p in theirs.parameters())
    return dict(ours=ours, mmrazor=razor, mmrazor_params=razor_params)


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Count both subnets and print a Markdown table.

    Args:
        argv (list[str], optional): Arguments. Defaults to None.

    Returns:
        list[dict]: One row per subnet.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', help='also write the table to this file')
    args = parser.parse_args(argv)
    rows = []
    lines = [
        '| subnet | ours: FLOPs (conv+linear MACs) | ours: params | '
        'mmrazor ResourceEstimator: FLOPs | mmrazor: params |',
        '|---|---|---|---|---|',
    ]
    for name, config, subnet in CASES:
        got = count(config, subnet)
        rows.append(dict(name=name, **got))
        lines.append(
            f'| {name} | {got["ours"]["flops"]:,} | '
            f'{got["ours"]["params"]:,} | {got["mmrazor"]["flops"]} M | '
            f'{got["mmrazor"]["params"]} M ({got["mmrazor_params"]:,}) |'
        )
    table = '\n'.join(lines)
    print(table, flush=True)
    if args.out:
        stamp = datetime.date.today().isoformat()
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(
                f'{table}\n\nMeasured {stamp} on {platform.platform()} with '
                '`python benchmarks/mmrazor_published_subnets.py`.\n'
            )
    return rows


if __name__ == '__main__':
    main()
