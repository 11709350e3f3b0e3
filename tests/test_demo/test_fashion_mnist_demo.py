"""``make demo`` end to end on a few hundred synthetic Fashion-MNIST-format
images: search, the three retrainings side by side, evaluation, the table."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import REPO_ROOT

DEMO = REPO_ROOT / 'demo' / 'fashion_mnist_demo.py'


def write_idx(root: Path, split: str, num: int, seed: int) -> None:
    """Write idx files of ``num`` 28x28 images whose class is drawn into
    them (a bright band at a class-dependent row), so they are learnable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, num).astype(np.uint8)
    images = rng.integers(0, 60, (num, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 + 2 * label : 4 + 2 * label] = 255
    with open(root / f'{split}-images-idx3-ubyte', 'wb') as f:
        f.write(struct.pack('>IIII', 0x803, num, 28, 28) + images.tobytes())
    with open(root / f'{split}-labels-idx1-ubyte', 'wb') as f:
        f.write(struct.pack('>II', 0x801, num) + labels.tobytes())


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / 'data'
    data.mkdir()
    write_idx(data, 'train', 256, 0)
    write_idx(data, 't10k', 100, 1)
    work = tmp_path / 'work'
    proc = subprocess.run(
        [
            sys.executable,
            str(DEMO),
            '--work-dir',
            str(work),
            '--data-dir',
            str(data),
            '--search-epochs',
            '2',
            '--retrain-epochs',
            '1',
            '--jobs',
            '2',
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # The full and uniform retrainings started before the search ended.
    assert out.index('[full] $') < out.index('[search] done')
    assert '| DMCP subnet (Expected Sampling) |' in out
    results = json.loads((work / 'results.json').read_text())
    assert set(results) == {'full', 'uniform', 'dmcp', 'search'}
    target = yaml.safe_load((work / 'uniform.yaml').read_text())['meta'][
        'target_flops'
    ]
    for name in ('uniform', 'dmcp'):
        assert results[name]['flops'] <= target
        assert results[name]['flops'] == results[name]['yaml_flops']
    assert results['full']['flops'] > target
    for name in ('full', 'uniform', 'dmcp'):
        assert 0.0 <= results[name]['top1'] <= 100.0
        assert (work / f'retrain_{name}' / 'train.log').exists()
    dmcp = yaml.safe_load((work / 'DMCP_SUBNET_IMAGENET.yaml').read_text())
    assert dmcp['channels'] and dmcp['meta']['sampling'] == 'expected'
    assert (work / 'results.md').read_text().startswith('| network |')
