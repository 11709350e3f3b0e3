"""The model zoo: model-index.yml and configs/pruning/dmcp/metafile.yml
parse with modelindex (what mim reads), name configs that exist, and state
what the configs build; the demo's entry is the shipped subnet, no
placeholder is left."""

import pytest
from mmengine.config import Config

import projects.dmcp  # noqa: F401  (compat shims + registration first)
from projects.dmcp.models import (
    count_flops,
    count_params,
    parse_flops,
    tensor_forward,
)
from projects.dmcp.registry import MODELS
from tests.helpers import DMCP_CONFIGS, REPO_ROOT

METAFILE = DMCP_CONFIGS / 'metafile.yml'
DEMO = 'dmcp_resnet18-cifar-w16_subnet_fashion-mnist'
# mmrazor's published subnets: name -> (published top-1, its file)
MMRAZOR = {
    'dmcp_resnet50_subnet_mmrazor-2g_in1k': (76.11, 'DMCP_R50_2G.json'),
    'dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k': (
        67.22,
        'DMCP_MBV2_100M.json',
    ),
}


@pytest.fixture(scope='module')
def index():
    from modelindex.load_model_index import load

    mi = load(str(REPO_ROOT / 'model-index.yml'))
    mi.build_models_with_collections()
    return mi


@pytest.fixture(scope='module')
def models(index):
    return {m.name: m for m in index.models}


def test_model_index_parses_and_checks(index, models):
    assert index.check(silent=True) == []
    assert [c.name for c in index.collections] == ['DMCP']
    paper = index.collections[0].paper
    assert paper['URL'] == 'https://arxiv.org/abs/2005.03354'
    assert len(models) == len(index.models) == 9  # names are unique
    for name, model in models.items():
        assert model.in_collection == 'DMCP'
        config = REPO_ROOT / model.config
        assert config.is_file(), model.config
        assert config.stem == name  # OpenMMLab: the name is the config's
        meta = model.metadata.data
        assert {'Training Data', 'Epochs', 'Batch Size'} <= set(meta)


def test_imagenet_entries_hold_no_unmeasured_results(models):
    for name, model in models.items():
        if name == DEMO or name in MMRAZOR:
            continue
        assert model.metadata.data['Training Data'] == 'ImageNet-1k'
        assert model.results is None or not model.results.data, name
        assert model.weights is None, name


@pytest.mark.parametrize('net', ['resnet50', 'resnet18', 'mobilenet-v2-1.5x'])
def test_flops_and_params_are_what_the_configs_build(models, net):
    """A supernet entry: the full network at 224x224 and the config's
    target; a subnet entry: the budget of the search it retrains."""
    supernet = models[f'dmcp_{net}_supernet_8xb64_in1k']
    cfg = Config.fromfile(str(REPO_ROOT / supernet.config))
    arch = MODELS.build(dict(cfg.model.architecture, _scope_='mmpretrain'))
    meta = supernet.metadata.data
    assert meta['FLOPs'] == count_flops(arch, (3, 224, 224), tensor_forward)
    assert meta['Parameters'] == count_params(arch)
    target = parse_flops(cfg.model.target_flops)
    assert meta['Target FLOPs'] == target
    assert meta['Epochs'] == cfg.train_cfg.max_epochs
    assert meta['Batch Size'] == cfg.auto_scale_lr.base_batch_size

    subnet = models[f'dmcp_{net}_subnet_32xb64_in1k']
    sub_cfg = Config.fromfile(str(REPO_ROOT / subnet.config))
    assert subnet.metadata.data['FLOPs'] == target
    assert subnet.metadata.data['Epochs'] == sub_cfg.train_cfg.max_epochs
    assert (
        subnet.metadata.data['Batch Size']
        == sub_cfg.auto_scale_lr.base_batch_size
    )


def test_demo_entry_metadata_and_no_todos(models):
    demo = models[DEMO]
    cfg = Config.fromfile(str(REPO_ROOT / demo.config))
    meta = demo.metadata.data
    assert meta['Training Data'] == 'Fashion-MNIST'
    assert meta['Epochs'] == cfg.train_cfg.max_epochs
    assert meta['Batch Size'] == cfg.train_dataloader.batch_size
    search = Config.fromfile(
        str(REPO_ROOT / cfg.filename.replace('subnet', 'supernet'))
    )
    assert meta['Target FLOPs'] == parse_flops(search.model.target_flops)
    (result,) = demo.results.data
    assert result.task == 'Image Classification'
    assert result.dataset == 'Fashion-MNIST'
    assert list(result.metrics) == ['Top 1 Accuracy']

    # no placeholder is left anywhere
    assert 'TODO' not in METAFILE.read_text()


def test_demo_entry_is_the_shipped_subnet(models):
    """The zoo's first entry: its arch yaml and checkpoint are in the repo,
    the checkpoint loads strictly into the pruned model its config builds
    from the yaml, and the FLOPs and parameters are that model's."""
    import torch
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint

    from projects.dmcp.models.flops import count_flops, count_params
    from projects.dmcp.registry import MODELS

    demo = models[DEMO]
    meta = demo.metadata.data
    arch = REPO_ROOT / meta['Architecture']
    weights = REPO_ROOT / demo.weights
    assert arch.is_file() and weights.is_file()
    cfg = Config.fromfile(str(REPO_ROOT / demo.config))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(cfg.model, subnet=str(arch)))
    load_checkpoint(
        model, str(weights), map_location='cpu', strict=True, logger='silent'
    )
    flops = count_flops(
        model, cfg.input_shape, lambda m, x: m(x, mode='tensor')
    )
    assert flops == meta['FLOPs']
    assert count_params(model) == meta['Parameters']
    with torch.no_grad():
        assert model(
            torch.zeros(2, *cfg.input_shape), mode='tensor'
        ).shape == (2, 10)


def test_demo_entry_sha256_is_the_files(models):
    import hashlib

    from projects.dmcp.zoo import zoo_sha256

    demo = models[DEMO]
    sha = demo.metadata.data['Weights SHA256']
    data = (REPO_ROOT / demo.weights).read_bytes()
    assert sha == hashlib.sha256(data).hexdigest()
    assert zoo_sha256(demo.weights) == sha
    assert zoo_sha256(str(REPO_ROOT / demo.weights)) == sha  # by path


@pytest.mark.parametrize(
    'name',
    [
        pytest.param(
            'dmcp_resnet50_subnet_mmrazor-2g_in1k', marks=pytest.mark.slow
        ),
        'dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k',
    ],
)
def test_mmrazor_entries(models, name):
    """Their published top-1 and weights; the config loads their file and
    URL; FLOPs and parameters are what get_flops counts."""
    import importlib.util

    top1, published = MMRAZOR[name]
    entry = models[name]
    cfg = Config.fromfile(str(REPO_ROOT / entry.config))
    assert cfg.load_from == entry.weights
    assert entry.weights.startswith(
        'https://download.openmmlab.com/mmrazor/v1/pruning/dmcp/'
    )
    assert cfg.model.subnet == f'tests/data/mmrazor/{published}'
    assert entry.metadata.data['Architecture'] == cfg.model.subnet
    (result,) = entry.results.data
    assert result.dataset == 'ImageNet-1k'
    assert result.metrics['Top 1 Accuracy'] == top1
    withdrawn = entry.metadata.data.get('Withdrawn', '')
    assert ('has bugs' in withdrawn) == ('resnet50' in name)

    spec = importlib.util.spec_from_file_location(
        'get_flops_tool', REPO_ROOT / 'tools' / 'analysis' / 'get_flops.py'
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    counted = tool.count(cfg)
    assert counted['flops'] == entry.metadata.data['FLOPs']
    assert counted['params'] == entry.metadata.data['Parameters']
