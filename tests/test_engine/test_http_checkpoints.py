"""Supernet and subnet checkpoints load by URL: ``load_checkpoint``, a
Runner's ``load_from`` and ``init_cfg=dict(type='Pretrained', ...)``, from a
local HTTP server on 127.0.0.1.

The checkpoints carry mmengine's non-tensor metadata (the message hub's
``HistoryBuffer``), which a bare ``torch.load(..., weights_only=True)``
refuses; they load with ``weights_only=True`` and the allowlist of
``projects/dmcp/compat.py: checkpoint_safe_globals``. A search checkpoint
given to a subnet config is refused in one line.
"""

from pathlib import Path
from typing import Dict, Iterator

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.runner import Runner, load_checkpoint, save_checkpoint

import projects.dmcp  # noqa: F401  (registers DMCP's classes)
from projects.dmcp.models import DMCP, dump_subnet
from projects.dmcp.registry import MODELS
from tests.helpers import DMCP_CONFIGS
from tests.helpers.http import Served, serve_directory
from tests.helpers.search import tiny_config

R18_SUBNET = DMCP_CONFIGS / 'dmcp_resnet18_subnet_32xb64_in1k.py'
DATA_ROOT = 'data/never_read'  # the runners below only load checkpoints


def supernet_config() -> Config:
    """The ResNet-18 supernet config at 32x32."""
    return tiny_config(DATA_ROOT)


def subnet_config(subnet: Path) -> Config:
    """The ResNet-18 subnet config, pruned to ``subnet``, at 32x32."""
    cfg = Config.fromfile(str(R18_SUBNET))
    cfg.merge_from_dict(
        {'model.subnet': str(subnet), 'model.input_shape': (3, 32, 32)}
    )
    return cfg


def build(cfg: Config) -> torch.nn.Module:
    """The config's model, as the runner builds it."""
    model_cfg = dict(cfg.model)
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    return MODELS.build(model_cfg)


def runner_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Save ``model`` as a Runner does: state dict plus a message hub (a
    ``HistoryBuffer``, not loadable by a bare ``weights_only=True`` load)."""
    hub = MessageHub('http_checkpoint_test')
    hub.update_scalar('train/loss', 1.5)
    save_checkpoint(
        dict(
            meta=dict(epoch=1, iter=3, cfg='fake config text'),
            state_dict=model.state_dict(),
            message_hub=hub.state_dict(),
        ),
        str(path),
    )


def assert_same_state(model: torch.nn.Module, ref: Dict) -> None:
    state = model.state_dict()
    assert state.keys() == ref.keys()
    for key, value in ref.items():
        assert torch.equal(state[key], value), key


@pytest.fixture(scope='module')
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict]:
    """A trained-looking supernet checkpoint (random alpha and sampler
    state) and a subnet checkpoint of one of its Direct Samples, served on
    127.0.0.1."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp('served')
    torch.manual_seed(1)
    supernet = build(supernet_config())
    assert isinstance(supernet, DMCP)
    with torch.no_grad():
        for alpha in supernet.mutator.arch_parameters():
            alpha.normal_()
    supernet.sampler.manual_seed(123)
    runner_checkpoint(supernet, folder / 'supernet.pth')
    choices = supernet.mutator.sample_choices(
        'direct', torch.Generator().manual_seed(0)
    )
    subnet_yaml = folder / 'subnet.yaml'
    dump_subnet(
        str(subnet_yaml),
        supernet.mutator.layer_channels(choices),
        dict(input_shape=[3, 32, 32]),
    )
    torch.manual_seed(2)
    subnet = build(subnet_config(subnet_yaml))
    runner_checkpoint(subnet, folder / 'subnet.pth')
    with serve_directory(folder) as server:
        yield dict(
            server=server,
            subnet_yaml=subnet_yaml,
            states=dict(
                supernet=supernet.state_dict(), subnet=subnet.state_dict()
            ),
        )


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh download cache for each test, so each one downloads."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


def _config(kind: str, served: Dict) -> Config:
    if kind == 'supernet':
        return supernet_config()
    return subnet_config(served['subnet_yaml'])


def _url(kind: str, served: Dict) -> str:
    server: Served = served['server']
    return f'{server.url}/{kind}.pth'


def _downloaded(kind: str, served: Dict, torch_home: Path) -> None:
    assert f'/{kind}.pth' in served['server'].requests
    assert (torch_home / 'hub' / 'checkpoints' / f'{kind}.pth').is_file()
    served['server'].requests.clear()


@pytest.mark.parametrize('kind', ['supernet', 'subnet'])
def test_load_checkpoint_by_url(kind, served, torch_home):
    torch.manual_seed(7)
    model = build(_config(kind, served))
    ckpt = load_checkpoint(
        model, _url(kind, served), map_location='cpu', strict=True
    )
    assert ckpt['message_hub']['log_scalars']['train/loss'].mean() == 1.5
    assert_same_state(model, served['states'][kind])
    _downloaded(kind, served, torch_home)


@pytest.mark.parametrize('kind', ['supernet', 'subnet'])
def test_runner_load_from_url(kind, served, torch_home, tmp_path):
    torch.manual_seed(7)
    cfg = _config(kind, served)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = _url(kind, served)
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    assert_same_state(runner.model, served['states'][kind])
    if kind == 'supernet':  # the sampler continues where the search stopped
        ref = torch.Generator()
        ref.set_state(served['states'][kind]['sampler_state'])
        assert torch.equal(runner.model.sampler.get_state(), ref.get_state())
    _downloaded(kind, served, torch_home)


@pytest.mark.parametrize('kind', ['supernet', 'subnet'])
def test_pretrained_init_cfg_by_url(kind, served, torch_home, tmp_path):
    """The search takes ``model.init_cfg``; the pruned classifier that
    ``DMCPSubnet`` returns takes ``model.architecture.init_cfg``."""
    torch.manual_seed(7)
    cfg = _config(kind, served)
    pretrained = dict(type='Pretrained', checkpoint=_url(kind, served))
    if kind == 'supernet':
        cfg.model.init_cfg = pretrained
    else:
        cfg.model.architecture.init_cfg = pretrained
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    assert_same_state(runner.model, served['states'][kind])
    _downloaded(kind, served, torch_home)


def test_supernet_checkpoint_into_subnet_config_is_refused(
    served, torch_home, tmp_path
):
    cfg = _config('subnet', served)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = _url('supernet', served)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError) as info:
        runner.load_or_resume()
    message = str(info.value)
    assert message.startswith('checkpoint key backbone.conv1.weight: shape')
    assert 'a search (supernet) checkpoint' in message
    assert 'mutator.' in message and '\n' not in message
