"""The subnet yaml at retraining: reading, validation and the physically
pruned classifier (projects/dmcp/models/subnet_file.py and prune.py)."""

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from mmengine.config import Config
from torch import nn
from torch.overrides import TorchFunctionMode

import projects.dmcp  # noqa: F401  (compat shims + registration first)
from projects.dmcp.models import (
    DMCPChannelMutator,
    build_subnet,
    count_flops,
    count_params,
    dump_subnet,
    load_subnet,
    tensor_forward,
)
from projects.dmcp.models.layers import DYNAMIC_LAYERS
from projects.dmcp.models.prune import layer_shapes, resize_layers
from projects.dmcp.registry import MODELS
from tests.helpers import DMCP_CONFIGS
from tests.helpers.models import randomize_norms

CONFIGS = DMCP_CONFIGS
SUPERNETS = {
    'resnet18': 'dmcp_resnet18_supernet_8xb64_in1k.py',
    'resnet50': 'dmcp_resnet50_supernet_8xb64_in1k.py',
    'mbv2_1.5x': 'dmcp_mobilenet-v2-1.5x_supernet_8xb64_in1k.py',
}
SIZE = 64
SHAPE = (3, SIZE, SIZE)


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny forward passes: one thread avoids oversubscribing a busy
    2-core machine (ten times faster there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def supernet_cfg(arch: str) -> Config:
    return Config.fromfile(str(CONFIGS / SUPERNETS[arch]))


def architecture(arch: str) -> dict:
    return dict(copy.deepcopy(supernet_cfg(arch).model.architecture))


def build_plain(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS.build(dict(architecture(arch), _scope_='mmpretrain'))


def prepared(arch: str, seed: int = 0):
    """A supernet (dynamic layers, random BN statistics) and its mutator."""
    cfg = supernet_cfg(arch)
    model = build_plain(arch, seed)
    randomize_norms(model, seed)
    groups = cfg.model.mutator.channel_unit_cfg.num_groups
    mutator = DMCPChannelMutator(
        channel_unit_cfg=dict(type='DMCPChannelUnit', num_groups=groups)
    )
    mutator.prepare_from_supernet(model, SHAPE, tensor_forward)
    return model, mutator


def write_yaml(path: Path, mutator, choices, **meta) -> Path:
    meta = dict(
        algorithm='DMCP',
        sampling='direct',
        flops=mutator.subnet_flops(choices),
        input_shape=list(SHAPE),
        **meta,
    )
    dump_subnet(str(path), mutator.layer_channels(choices), meta)
    return path


class _UsedParams(TorchFunctionMode):
    """Counts the parameter elements that conv, batch norm and linear calls
    receive: for a supernet running a subnet, the weight slices it uses."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.conv2d, torch.conv2d, F.linear):
            names, first = ('weight', 'bias'), 1
        elif func is F.batch_norm:
            names, first = ('weight', 'bias'), 3
        else:
            names, first = (), 0
        for i, name in enumerate(names):
            t = args[first + i] if len(args) > first + i else kwargs.get(name)
            self.total += 0 if t is None else t.numel()
        return func(*args, **kwargs)


def used_params(model, x) -> int:
    counter = _UsedParams()
    model.eval()
    with torch.no_grad(), counter:
        model(x, mode='tensor')
    return counter.total


def copy_prefixes(pruned: nn.Module, supernet: nn.Module) -> None:
    """Give ``pruned`` the leading slices of the supernet's tensors."""
    src = supernet.state_dict()
    dst = pruned.state_dict()
    for key, value in dst.items():
        s = src[key]
        if value.dim():
            s = s[tuple(slice(0, n) for n in value.shape)]
        value.copy_(s)


# ------------------------------------------------------- pruned == searched
@pytest.mark.parametrize('arch', list(SUPERNETS))
def test_random_subnets_flops_params_and_outputs(arch, tmp_path):
    """20 subnets per backbone (min, max and 18 Direct Samples of randomly
    set alphas): the pruned model's counted FLOPs equal the yaml's and the
    mutator's exactly, its parameters are those the supernet's subnet uses,
    its layers are plain torch layers of the yaml's widths, and with the
    supernet's weight prefixes it computes what the supernet's subnet
    computes."""
    supernet, mutator = prepared(arch)
    arch_cfg = architecture(arch)
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    samples = [mutator.sample_choices('min'), mutator.sample_choices('max')]
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g) * 2)
    samples += [mutator.sample_choices('direct', g) for _ in range(18)]
    assert len({tuple(s.values()) for s in samples}) == 20

    for i, choices in enumerate(samples):
        path = write_yaml(tmp_path / f'subnet_{i}.yaml', mutator, choices)
        doc = yaml.safe_load(path.read_text())
        pruned = build_subnet(arch_cfg, str(path))

        assert type(pruned).__name__ == 'ImageClassifier'
        assert type(pruned).__module__.startswith('mmpretrain.')
        flops = count_flops(pruned, SHAPE, tensor_forward)
        assert flops == doc['meta']['flops'] == mutator.subnet_flops(choices)

        mutator.set_subnet(choices)
        assert count_params(pruned) == used_params(supernet, x)

        modules = dict(pruned.named_modules())
        for name, width in doc['channels'].items():
            assert modules[name].out_channels == width, name
        for m in pruned.modules():
            assert type(m) not in DYNAMIC_LAYERS.values()
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                assert m.groups == m.in_channels == m.out_channels

        if i < 3:  # same structure: same outputs from the same weights
            copy_prefixes(pruned, supernet)
            pruned.eval()
            supernet.eval()
            with torch.no_grad():
                expected = supernet(x, mode='tensor')
                got = pruned(x, mode='tensor')
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    mutator.set_subnet('max')


@pytest.mark.parametrize('arch', ['resnet18', 'mbv2_1.5x'])
def test_layer_shapes_and_resize_layers_without_a_yaml(arch, tmp_path):
    """A subnet pruned straight from the mutator's choices (no file, the
    search-step benchmark's limit) has the structure build_subnet gives
    the same choices through a yaml, and the FLOPs of the mutator."""
    supernet, mutator = prepared(arch)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for a in mutator.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g) * 2)
    choices = mutator.sample_choices('direct', g)
    layers, norms = layer_shapes(mutator.trace, mutator.specs, choices)
    assert layers and norms
    pruned = resize_layers(build_plain(arch), layers, norms)
    assert count_flops(pruned, SHAPE, tensor_forward) == mutator.subnet_flops(
        choices
    )
    path = write_yaml(tmp_path / 'subnet.yaml', mutator, choices)
    from_yaml = build_subnet(architecture(arch), str(path))
    shapes = {k: v.shape for k, v in pruned.state_dict().items()}
    assert shapes == {k: v.shape for k, v in from_yaml.state_dict().items()}
    for m in pruned.modules():
        assert type(m) not in DYNAMIC_LAYERS.values()
    mutator.set_subnet('max')


def test_pruned_model_is_plain_mmpretrain(tmp_path):
    """Same state_dict keys as the unpruned classifier, fresh torch layers,
    built through the registry with the runner's data_preprocessor, and
    mmpretrain's init_weights reaches the replaced layers."""
    _, mutator = prepared('resnet18')
    path = write_yaml(
        tmp_path / 's.yaml', mutator, mutator.sample_choices('min')
    )
    cfg = supernet_cfg('resnet18')
    model = MODELS.build(
        dict(
            type='mmrazor.DMCPSubnet',
            architecture=cfg.model.architecture,
            subnet=str(path),
            data_preprocessor=cfg.data_preprocessor,
        )
    )
    plain = build_plain('resnet18')
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert torch.allclose(
        model.data_preprocessor.mean.flatten(),
        torch.tensor(cfg.data_preprocessor.mean),
    )
    block = model.backbone.layer1[0]
    assert block.norm2.num_features == block.conv2.out_channels < 64
    model.init_weights()  # ResNet's zero_init_residual on the pruned norm
    assert torch.count_nonzero(block.norm2.weight) == 0
    assert torch.count_nonzero(block.norm1.weight) == block.norm1.num_features


def test_subnet_as_dict_and_input_shape(tmp_path):
    _, mutator = prepared('mbv2_1.5x')
    choices = mutator.sample_choices('min')
    channels = mutator.layer_channels(choices)
    model = build_subnet(
        architecture('mbv2_1.5x'),
        dict(channels=channels),
        input_shape=(3, 32, 32),
    )
    assert count_flops(model, (3, SIZE, SIZE), tensor_forward) == (
        mutator.subnet_flops(choices)
    )


# --------------------------------------------------------------- bad yamls
@pytest.fixture(scope='module')
def r18():
    """ResNet-18's architecture config and a valid channels dict."""
    torch.set_num_threads(1)
    _, mutator = prepared('resnet18')
    return mutator.layer_channels(mutator.sample_choices('min'))


def _yaml(channels, meta=None):
    meta = dict(algorithm='DMCP', input_shape=[3, 32, 32], **(meta or {}))
    return yaml.safe_dump(dict(meta=meta, channels=channels), sort_keys=False)


def _edit(**changes):
    def make(channels):
        out = dict(channels)
        for key, value in changes.items():
            key = key.replace('__', '.')
            if value is None:
                del out[key]
            else:
                out[key] = value
        return _yaml(out)

    return make


def _rename(old, new):
    def make(channels):
        return _yaml({new if k == old else k: v for k, v in channels.items()})

    return make


def _other_supernet(channels):
    _, mutator = prepared('resnet50')
    return _yaml(
        mutator.layer_channels(mutator.sample_choices('min')),
        dict(
            supernet='configs/pruning/dmcp/dmcp_resnet50_supernet_8xb64_in1k.py'
        ),
    )


L10 = 'backbone.layer1.0'
BAD_YAMLS = {
    # name: (content: str | bytes | callable(valid channels), message regex)
    'empty': ('', r'empty file'),
    'only a comment': ('# nothing\n', r'empty file'),
    'binary checkpoint': (None, r'binary file, not a subnet yaml'),
    'latin-1 bytes': (b'channels:\n  caf\xe9: 3\n', r'binary file'),
    'invalid yaml': (
        'channels: [1, 2\n',
        r'not valid yaml \(.* at line \d+\)',
    ),
    'a list': ('- 1\n- 2\n', r'holds a list, not a subnet yaml'),
    'a string': ('hello\n', r'holds a str, not a subnet yaml'),
    'unknown top-level key': (
        'channels: {a: 1}\nextra: 2\n',
        r'extra: unknown top-level key',
    ),
    'no channels': ('meta: {algorithm: DMCP}\n', r'channels: missing'),
    'empty channels': (
        'meta: {}\nchannels: {}\n',
        r'channels: expected a mapping .* got an empty mapping',
    ),
    'channels a list': (
        'channels: [1, 2]\n',
        r'channels: expected a mapping .* got a list',
    ),
    'meta not a mapping': ('meta: 3\nchannels: {a: 1}\n', r'meta: expected'),
    'bad input_shape': (
        'meta: {input_shape: [3, 32]}\nchannels: {a: 1}\n',
        r'meta\.input_shape: \[3, 32\] is not \[C, H, W\]',
    ),
    'negative flops': (
        'meta: {flops: -1}\nchannels: {a: 1}\n',
        r'meta\.flops: -1 is not a number of MACs',
    ),
    'string width': (
        _edit(backbone__conv1='32'),
        r"channels\.backbone\.conv1: '32' is not an integer",
    ),
    'float width': (
        _edit(backbone__conv1=3.5),
        r'channels\.backbone\.conv1: 3\.5 is not an integer',
    ),
    'bool width': (
        _edit(backbone__conv1=True),
        r'channels\.backbone\.conv1: True is not an integer',
    ),
    'unknown layer (typo)': (
        _rename(f'{L10}.conv1', f'{L10}.conv_1'),
        rf'channels\.{L10}\.conv_1: unknown layer: no convolution or linear '
        rf'layer of that name; did you mean {L10}\.conv1\?',
    ),
    'not a pruned layer': (
        _edit(head__fc=10),
        r'channels\.head\.fc: not a pruned layer: its output channels are '
        r'fixed \(model output\)',
    ),
    'missing layer': (
        _edit(**{f'{L10}.conv1'.replace('.', '__'): None}),
        rf'channels\.{L10}\.conv1: missing; every pruned layer needs a '
        r'width \(this one has at most 64\)',
    ),
    'too wide': (
        _edit(**{f'{L10}.conv1'.replace('.', '__'): 70}),
        rf'channels\.{L10}\.conv1: 70 is outside \[1, 64\]$',
    ),
    'zero width': (
        _edit(**{f'{L10}.conv1'.replace('.', '__'): 0}),
        rf'channels\.{L10}\.conv1: 0 is outside \[1, 64\]',
    ),
    'coupled layers disagree': (
        _edit(**{f'{L10}.conv2'.replace('.', '__'): 13}),
        rf'channels\.{L10}\.conv2: 13 differs from channels\.backbone\.'
        r'conv1: \d+; the two layers are coupled',
    ),
    'another supernet (ResNet-50 on ResNet-18)': (
        _other_supernet,
        r'written for another supernet \(meta\.supernet: configs/pruning/'
        r'dmcp/dmcp_resnet50_supernet_8xb64_in1k\.py\): 33 of its 53 layers'
        r' are not pruned layers of this architecture \(first: channels\.'
        r'backbone\.layer1\.0\.conv3\)$',
    ),
}


@pytest.mark.parametrize('case', list(BAD_YAMLS))
def test_bad_yaml(case, r18, tmp_path):
    content, pattern = BAD_YAMLS[case]
    path = tmp_path / 'subnet.yaml'
    if content is None:
        torch.save({'state_dict': {'w': torch.zeros(3)}}, path)
    elif callable(content):
        path.write_text(content(r18))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError) as info:
        build_subnet(architecture('resnet18'), str(path), (3, 32, 32))
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith(f'{path}: ')
    assert re.search(pattern, message), message


def test_missing_file_says_how_to_pass_the_yaml(tmp_path):
    missing = tmp_path / 'nope.yaml'
    with pytest.raises(FileNotFoundError, match=r'no such subnet file'):
        load_subnet(missing)
    with pytest.raises(FileNotFoundError) as info:
        build_subnet(architecture('resnet18'))  # the configs' default path
    message = str(info.value)
    assert message.startswith(
        'configs/pruning/dmcp/DMCP_SUBNET_IMAGENET.yaml: the subnet configs '
        'read this path by default, and it does not exist; pass'
    )
    assert 'model.subnet=<work_dir>/DMCP_SUBNET_IMAGENET.yaml' in message


def test_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r'is a directory'):
        load_subnet(tmp_path)


def test_yaml_of_a_wider_supernet_with_the_same_names(tmp_path):
    """A MobileNetV2 1.5x yaml on MobileNetV2 1.0x: same layer names, widths
    above the architecture's: the range error points at the supernet."""
    _, mutator = prepared('mbv2_1.5x')
    path = write_yaml(
        tmp_path / 's.yaml',
        mutator,
        mutator.sample_choices('max'),
        supernet='dmcp_mobilenet-v2-1.5x_supernet_8xb64_in1k.py',
    )
    arch = architecture('mbv2_1.5x')
    arch['backbone']['widen_factor'] = 1.0
    arch['head']['in_channels'] = 1280
    with pytest.raises(ValueError) as info:
        build_subnet(arch, str(path), (3, 32, 32))
    assert re.fullmatch(
        rf'{path}: channels\.backbone\.conv1\.conv: 48 is outside \[1, 32\] '
        r'\(meta\.supernet: dmcp_mobilenet-v2-1\.5x_supernet_8xb64_in1k\.py;'
        r' another supernet\?\)',
        str(info.value),
    )


def test_load_subnet_keeps_order_and_meta(tmp_path):
    path = tmp_path / 's.yaml'
    dump_subnet(
        str(path), {'b': 2, 'a': 1}, dict(flops=5, input_shape=[3, 8, 8])
    )
    doc = load_subnet(path)
    assert list(doc['channels'].items()) == [('b', 2), ('a', 1)]
    assert doc['meta'] == dict(flops=5, input_shape=[3, 8, 8])


def test_yaml_of_a_smaller_supernet(tmp_path):
    """A ResNet-18 yaml on ResNet-50: its names exist there, but most of
    ResNet-50's pruned layers are missing."""
    _, mutator = prepared('resnet18')
    path = write_yaml(
        tmp_path / 's.yaml', mutator, mutator.sample_choices('min')
    )
    with pytest.raises(ValueError) as info:
        build_subnet(architecture('resnet50'), str(path), (3, 32, 32))
    assert re.fullmatch(
        rf'{path}: written for another supernet: 33 of the architecture.s '
        r'53 pruned layers are missing \(first: channels\.backbone\.layer1'
        r'\.0\.conv3\)',
        str(info.value),
    )
