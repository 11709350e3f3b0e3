"""mmpretrain's classifiers through the stages of ``benchmarks/coverage.py``,
one per architecture family, as timm's tests run every model.

The fast test builds the DMCP search (trace, mutator, units) on one model of
each CNN family that needed the tracer to follow more than plain
convolutions; the slow one runs every stage (search step, export, pruned
model, FLOPs and output checks) on them. Transformers whose channels cannot
be pruned by channel groups are refused in one line that says why.
"""

import importlib.util
import os
import sys

import pytest
import torch
from torch import nn

from projects.dmcp.models import DMCPChannelMutator
from tests.helpers import REPO_ROOT

_spec = importlib.util.spec_from_file_location(
    'coverage_benchmark', REPO_ROOT / 'benchmarks' / 'coverage.py'
)
coverage = importlib.util.module_from_spec(_spec)
sys.modules.setdefault('coverage_benchmark', coverage)
_spec.loader.exec_module(coverage)

# one model per family: what each exercises
FAMILIES = {
    'resnet18_8xb16_cifar10': 'residual additions',
    'seresnet50_8xb32_in1k': 'squeeze-and-excitation gates',
    'mobilenet-v2_8xb32_in1k': 'depthwise convolutions',
    'mobilenet-v3-small-050_3rdparty_in1k': 'SE squeezes narrower than G',
    'efficientnet-b0_3rdparty-ra-noisystudent_in1k': "mmcv's same padding",
    'regnetx-400mf_8xb128_in1k': 'grouped convolutions kept whole',
    'shufflenet-v2-1x_16xb64_in1k': 'channel split, shuffle, concat',
    'densenet121_3rdparty_in1k': 'concatenations',
    'convnext-tiny_32xb128-noema_in1k': 'channel-last linear, layer scale',
    'van-tiny_3rdparty_in1k': "mmcv's Conv2d wrapper",
    'mobileone-s0_8xb32_in1k': 're-parameterisable branches',
}


pytestmark = pytest.mark.usefixtures('torch_single_thread')


def config(name: str):
    from mmpretrain.apis.model import ModelHub

    return ModelHub.get(name).config


@pytest.mark.parametrize('name', list(FAMILIES))
def test_search_builds(name):
    row = coverage.run_stages(config(name), coverage.STAGES.index('stage 1'))
    assert row['status'] == 'pass', row.get('reason')
    assert row['units'] > 0 and 0.3 < row['share'] <= 1.0
    assert 0 < row['target'] < 1


@pytest.mark.slow
@pytest.mark.parametrize('name', list(FAMILIES))
def test_every_stage(name):
    row = coverage.run_stages(config(name))
    assert row['status'] == 'pass', row.get('reason')
    assert 0 < row['flops'] <= row['target'] + 1e-9


@pytest.mark.parametrize(
    'name, why',
    [
        ('shufflenet-v1-1x_16xb64_in1k', 'cat joins channels'),
        ('convnext-v2-atto_fcmae-pre_3rdparty_in1k', 'with parameter of'),
    ],
)
def test_unprunable_cnn_refused_in_one_line(name, why):
    row = coverage.run_stages(config(name), coverage.STAGES.index('stage 1'))
    assert row['status'] == 'trace'
    assert '\n' not in row['reason']
    assert 'found no prunable channels' in row['reason']
    assert why in row['reason']


def test_attention_only_transformer_refused_with_the_reason():
    """Tokens through attention heads only (no MLP of prunable width): the
    search refuses it, in one line that says it is a transformer's."""

    class Attention(nn.Module):
        def __init__(self, dim: int = 16, heads: int = 2) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, dim, 4, 4)
            self.norm = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.heads = heads
            self.head = nn.Linear(dim, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.embed(x).flatten(2).transpose(1, 2)
            n, length, dim = x.shape
            qkv = self.qkv(self.norm(x)).reshape(n, length, 3, self.heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            att = (q @ k.transpose(-2, -1)).softmax(-1)
            x = x + self.proj(
                (att @ v).transpose(1, 2).reshape(n, length, dim)
            )
            return self.head(x.mean(1))

    with pytest.raises(ValueError) as info:
        DMCPChannelMutator().prepare_from_supernet(Attention(), (3, 16, 16))
    msg = str(info.value)
    assert '\n' not in msg
    assert msg.startswith('found no prunable channels')
    assert 'as in a transformer' in msg


def test_isolated_row_survives_a_crash(monkeypatch):
    """A row whose process dies is a failing row, not a failed run."""
    monkeypatch.setattr(coverage, 'run_stages', lambda cfg, n: os._exit(3))
    row = coverage.run_isolated(None, timeout=30)
    assert row['status'] == 'build'
    assert row['reason'] == 'process died (exit code 3)'


@pytest.mark.slow  # reads the zoo's 448 configs (about 30 s)
def test_families_are_one_per_backbone_class():
    rows = coverage.zoo_candidates()
    families = [family for _, family, _ in rows]
    assert len(families) == len(set(families))
    cnn = [f for f in families if coverage.kind_of(f) == 'CNN']
    assert {'ResNet', 'MobileNetV2', 'ConvNeXt', 'EfficientNet'} <= set(cnn)
    assert coverage.kind_of('SwinTransformer') == 'transformer'
