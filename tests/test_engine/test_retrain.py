"""End-to-end retraining of a searched subnet: search -> yaml -> subnet config
trains (tools/train.py and 2-process tools/dist_train.sh) -> tools/test.py
evaluates the checkpoint -> tools/export_subnet.py writes a file that a
fresh interpreter loads without this repository."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from projects.dmcp.registry import MODELS
from tests.helpers import DMCP_CONFIGS, REPO_ROOT, free_port, load_weights_only
from tests.helpers.search import (
    RESNET18_SUPERNET,
    make_tiny_imagenet,
    run_tool,
    tiny_search_options,
)

R18_SUBNET = DMCP_CONFIGS / 'dmcp_resnet18_subnet_32xb64_in1k.py'

# Loads an exported subnet in a fresh interpreter that cannot import
# anything named `projects`, runs it on saved inputs and saves the logits.
LOADER = r"""
import glob
import importlib.abc
import importlib.util
import os
import sys


class NoProjects(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'projects':
            raise ImportError(f'the standalone load imported {name}')
        return None


sys.meta_path.insert(0, NoProjects())
import torch

# On this repository's pinned CPU stack torchvision's compiled ops do not
# load beside torch; mmpretrain imports torchvision, which then needs the two
# op schemas (what projects/dmcp/compat.py does; a matching install does not).
folder = importlib.util.find_spec('torchvision').submodule_search_locations[0]
try:
    for lib in glob.glob(os.path.join(folder, '_C*.so')):
        torch.ops.load_library(lib)
except (OSError, RuntimeError):
    frag = torch.library.Library('torchvision', 'FRAGMENT')
    frag.define(
        'nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    frag.define(
        'qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor')

path, inputs, out = sys.argv[1:4]
model = torch.load(path, map_location='cpu', weights_only=False)['model']
with torch.no_grad():
    logits = model(torch.load(inputs), mode='tensor')
torch.save(logits, out)
assert not [m for m in sys.modules if m.split('.')[0] == 'projects']
print(type(model).__module__ + '.' + type(model).__name__)
"""


@pytest.fixture(scope='module')
def searched(tmp_path_factory):
    """A tiny search: 2 iterations (1 warmup, 1 with the architecture
    step) on 12 images; returns the data root and the yaml."""
    root = tmp_path_factory.mktemp('retrain')
    data = make_tiny_imagenet(root / 'data', num_classes=3, num_train=4)
    work = root / 'search'
    opts = tiny_search_options(
        data,
        max_epochs=2,
        warmup_epochs=1,
        extra=['train_dataloader.batch_size=12'],
    )
    run_tool(
        [
            'python',
            'tools/train.py',
            str(RESNET18_SUPERNET),
            '--work-dir',
            str(work),
            '--cfg-options',
            *opts,
        ]
    )
    return data, work / 'DMCP_SUBNET_IMAGENET.yaml'


def retrain_options(data_root, subnet, batch_size=6):
    """--cfg-options shrinking a subnet config onto the tiny data: 32x32
    deterministic pipelines, 12 images in batches of 6 (2 iterations, one
    epoch)."""
    opts = [
        f'model.subnet={subnet}',
        'train_cfg.max_epochs=1',
        'train_dataloader.dataset.pipeline.1.type=Resize',
        'train_dataloader.dataset.pipeline.1.scale=32',
        'train_dataloader.dataset.pipeline.2.prob=0.0',
        'val_dataloader.dataset.pipeline.1.scale=32',
        'val_dataloader.dataset.pipeline.2.crop_size=32',
        'test_dataloader.dataset.pipeline.1.scale=32',
        'test_dataloader.dataset.pipeline.2.crop_size=32',
        'default_hooks.logger.interval=1',
        'randomness.seed=0',
    ]
    for loader in ('train', 'val', 'test'):
        opts += [
            f'{loader}_dataloader.dataset.data_root={data_root}',
            f'{loader}_dataloader.batch_size={batch_size}',
            f'{loader}_dataloader.num_workers=0',
            f'{loader}_dataloader.persistent_workers=False',
        ]
    return opts


@pytest.mark.slow
def test_retrain_test_and_export(searched, tmp_path):
    data, subnet = searched
    channels = yaml.safe_load(subnet.read_text())['channels']
    work = tmp_path / 'retrain'
    opts = retrain_options(data, subnet)
    proc = run_tool(
        [
            'python',
            'tools/train.py',
            str(R18_SUBNET),
            '--work-dir',
            str(work),
            '--cfg-options',
            *opts,
        ]
    )
    log = proc.stdout + proc.stderr
    # the paper's warmup: 0.2 at the first iteration, 0.8 after one epoch
    assert 'Epoch(train) [1][1/2]  lr: 2.0000e-01' in log
    assert 'Epoch(train) [1][2/2]  lr: 8.0000e-01' in log
    assert f'DMCP subnet {subnet}' in log

    ckpt = work / 'epoch_1.pth'
    state = load_weights_only(ckpt)
    weights = state['state_dict']
    assert not any(
        k.startswith(('architecture.', 'mutator.')) for k in weights
    )
    for name, width in channels.items():
        assert weights[f'{name}.weight'].shape[0] == width, name
    assert (
        weights['head.fc.weight'].shape[1]
        == (channels['backbone.layer4.1.conv2'])
    )

    proc = run_tool(
        [
            'python',
            'tools/test.py',
            str(R18_SUBNET),
            str(ckpt),
            '--work-dir',
            str(tmp_path / 'test'),
            '--cfg-options',
            *opts,
        ]
    )
    assert 'accuracy/top1' in proc.stdout + proc.stderr

    # reference logits: the config's model with the checkpoint, here
    cfg = Config.fromfile(str(R18_SUBNET))

    def build_model(subnet_file):
        return MODELS.build(
            dict(
                cfg.model,
                subnet=str(subnet_file),
                data_preprocessor=cfg.data_preprocessor,
            )
        )

    model = build_model(subnet)
    load_checkpoint(model, str(ckpt), map_location='cpu')
    model.eval()
    inputs = torch.randn(
        2, 3, 32, 32, generator=torch.Generator().manual_seed(0)
    )
    torch.save(inputs, tmp_path / 'inputs.pt')
    with torch.no_grad():
        expected = model(inputs, mode='tensor')

    def export(out, *flags):
        return run_tool(
            ['python', 'tools/export_subnet.py', str(R18_SUBNET), str(ckpt)]
            + [str(out), *flags, '--cfg-options', f'model.subnet={subnet}']
        ).stdout

    # default export: a state dict (weights_only=True) and the subnet yaml
    exported = tmp_path / 'dmcp_r18_subnet.pth'
    assert 'loads with torch.load(..., weights_only=True)' in export(exported)
    saved = torch.load(exported, map_location='cpu', weights_only=True)
    exported_yaml = tmp_path / 'dmcp_r18_subnet.yaml'
    assert yaml.safe_load(exported_yaml.read_text())['channels'] == channels
    assert saved['meta']['channels'] == channels
    rebuilt = build_model(exported_yaml)
    load_checkpoint(rebuilt, str(exported), map_location='cpu', strict=True)
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs, mode='tensor'), expected)

    # --pickle-module: the pickled classifier, loadable without the repo
    exported = tmp_path / 'dmcp_r18_subnet_module.pth'
    assert 'loads with mmpretrain, torch' in export(
        exported, '--pickle-module'
    )

    script = tmp_path / 'load_standalone.py'
    script.write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    loaded = subprocess.run(
        [
            sys.executable,
            str(script),
            str(exported),
            str(tmp_path / 'inputs.pt'),
            str(tmp_path / 'logits.pt'),
        ],
        cwd=tmp_path,  # not the repository: `projects` is not importable
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-4000:]
    assert loaded.stdout.strip().endswith(
        'mmpretrain.models.classifiers.image.ImageClassifier'
    )
    assert torch.equal(torch.load(tmp_path / 'logits.pt'), expected)


@pytest.mark.slow
def test_dist_train_subnet_on_cpu(searched, tmp_path):
    """2 processes (gloo), mmengine's default MMDistributedDataParallel."""
    data, subnet = searched
    proc = run_tool(
        [
            'bash',
            'tools/dist_train.sh',
            str(R18_SUBNET),
            '2',
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            *retrain_options(data, subnet, batch_size=6),
            'train_dataloader.batch_size=3',
        ],
        env={'PORT': str(free_port())},
    )
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    assert "type='MMDistributedDataParallel'" in log
    assert 'Epoch(train) [1][2/2]' in log
    assert (tmp_path / 'epoch_1.pth').exists()


@pytest.mark.slow
def test_bad_yaml_stops_before_training(searched, tmp_path):
    data, subnet = searched
    doc = yaml.safe_load(subnet.read_text())
    doc['channels']['backbone.layer1.0.conv1'] = 70
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.run(
        [
            sys.executable,
            'tools/train.py',
            str(R18_SUBNET),
            '--work-dir',
            str(tmp_path / 'work'),
            '--cfg-options',
            *retrain_options(data, bad),
        ],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode != 0
    message = f'{bad}: channels.backbone.layer1.0.conv1: 70 is outside [1, 64]'
    assert message in proc.stderr
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
    assert not list(Path(tmp_path / 'work').rglob('*.pth'))
