"""Find a model's channel units by running it once.

:func:`trace_channels` runs one forward pass of the model on a dummy input
under a ``TorchFunctionMode`` that sees every torch call. Each tensor carries a
*channel node*: the thing that decides its channel count (dim 1). A convolution
or linear layer starts a new node for its output; batch norm, activations,
pooling and other shape-preserving ops pass their input's node on; an
element-wise op on several tensors with the same channel count (a residual
addition, an attention product) joins their nodes, because those channel
counts must stay equal (Section 3.1.2 of the paper). A depthwise convolution's
output keeps its input's node. Anything the tracer does not understand (a
concatenation, a reshape that mixes channels into other dims, an op that takes
a parameter of its own such as GroupNorm or a layer scale) marks the nodes it
touches as fixed, so they are never pruned; so are the network input and the
model output.

The pass also records, per convolution and linear layer, the shapes that the
expected-FLOPs table of :mod:`projects.dmcp.models.flops` needs.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .layers import DYNAMIC_LAYERS, is_depthwise

__all__ = [
    'check_input_size',
    'dummy_input',
    'LayerRecord',
    'ChannelTrace',
    'UnitSpec',
    'trace_channels',
    'find_units',
]


@dataclass
class LayerRecord:
    """A convolution or linear layer as seen by one forward pass.

    Args:
        name (str): Module name in the traced model.
        kind (str): ``'conv'`` or ``'linear'``.
        in_channels (int): Input channels (features).
        out_channels (int): Output channels (features).
        groups (int): Convolution groups (1 for linear).
        depthwise (bool): Whether the output channels follow the input.
        kernel_area (int): ``k_h * k_w`` (1 for linear).
        out_spatial (int): Output positions per sample: ``H_out * W_out`` for
            a convolution, the product of the leading dims for a linear.
        in_node (int): Channel node of the input.
        out_node (int): Channel node of the output.
        norm (str, optional): Name of the batch norm that directly normalises
            this layer's output, if any.
        dynamic (bool): Whether the layer can run on a channel prefix.
        stride (int): Largest stride of a convolution (1 for linear).
        in_size (tuple[int, int]): Input height and width of a convolution
            (``(1, 1)`` for linear).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    depthwise: bool
    kernel_area: int
    out_spatial: int
    in_node: int
    out_node: int
    norm: Optional[str] = None
    dynamic: bool = True
    stride: int = 1
    in_size: Tuple[int, int] = (1, 1)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the full layer for one sample."""
        return (
            self.out_channels
            * (self.in_channels // self.groups)
            * self.kernel_area
            * self.out_spatial
        )


@dataclass
class ChannelTrace:
    """What one forward pass taught about a model's channels.

    Args:
        layers (list[LayerRecord]): Convolution and linear layers in call
            order.
        norms (dict[str, int]): Batch norm name -> channel node.
        parent (list[int]): Union-find parents of the channel nodes.
        fixed (set[int]): Nodes that must not be pruned (before union).
        reasons (dict[int, str]): Why a node was fixed.
        input_shape (tuple): Shape of the traced input without the batch dim.
    """

    layers: List[LayerRecord] = field(default_factory=list)
    norms: Dict[str, int] = field(default_factory=dict)
    parent: List[int] = field(default_factory=list)
    fixed: set = field(default_factory=set)
    reasons: Dict[int, str] = field(default_factory=dict)
    input_shape: Tuple[int, ...] = ()

    def new_node(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, node: int) -> int:
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, nodes: Sequence[int]) -> int:
        roots = sorted({self.find(n) for n in nodes})
        for r in roots[1:]:
            self.parent[r] = roots[0]
        return roots[0]

    def fix(self, node: int, reason: str) -> None:
        self.fixed.add(node)
        self.reasons.setdefault(node, reason)

    def fixed_reason(self, node: int) -> Optional[str]:
        """Why the node's group is fixed, or None if it may be pruned."""
        root = self.find(node)
        for n in self.fixed:
            if self.find(n) == root:
                return self.reasons.get(n, 'fixed')
        return None

    def layer(self, name: str) -> LayerRecord:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)


@dataclass
class UnitSpec:
    """A group of channels that are pruned together.

    Args:
        name (str): The unit's name: its first producing layer.
        num_channels (int): Channels of the unit.
        producers (list[str]): Layers whose output channels the unit sets.
        followers (list[str]): Depthwise convolutions that follow the unit.
        consumers (list[str]): Layers that take the unit's channels as input.
        scale_points (list[str]): Modules after which the Markov scale of
            Eq. 7 is applied (a layer's batch norm, else the layer itself).
    """

    name: str
    num_channels: int
    producers: List[str]
    followers: List[str]
    consumers: List[str]
    scale_points: List[str]


def _max_stride(stride) -> int:
    if stride is None:
        return 1
    return max(stride) if isinstance(stride, (tuple, list)) else int(stride)


def _sliceable(module: Optional[nn.Module]) -> bool:
    """Whether a layer can run on a channel prefix (see ``layers.py``)."""
    kinds = tuple(DYNAMIC_LAYERS) + tuple(DYNAMIC_LAYERS.values())
    if module is None or type(module) not in kinds:
        return False
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return is_depthwise(module)
    return True


class _ChannelTracer(TorchFunctionMode):
    """Tags tensors with channel nodes while the model runs."""

    def __init__(self, model: nn.Module, trace: ChannelTrace) -> None:
        super().__init__()
        self.trace = trace
        self.tags: Dict[int, int] = {}
        self.keep: List[Tensor] = []  # keeps tagged tensors (and ids) alive
        self.produced_by: Dict[int, LayerRecord] = {}
        self.owner: Dict[int, Tuple[str, nn.Module]] = {}
        for name, module in model.named_modules():
            for t in list(module.parameters(recurse=False)) + list(
                module.buffers(recurse=False)
            ):
                self.owner[id(t)] = (name, module)

    def tag(self, t: Tensor, node: int) -> None:
        self.tags[id(t)] = node
        self.keep.append(t)

    def node_of(self, t: Tensor) -> Optional[int]:
        n = self.tags.get(id(t))
        return None if n is None else self.trace.find(n)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.conv2d or func is torch.conv2d:
            self._layer('conv', args, kwargs, out)
        elif func is F.linear:
            self._layer('linear', args, kwargs, out)
        elif func is F.batch_norm:
            self._norm(args, kwargs, out)
        else:
            self._generic(func, args, kwargs, out)
        return out

    def _arg(self, args: tuple, kwargs: dict, idx: int, key: str):
        return args[idx] if len(args) > idx else kwargs.get(key)

    def _input_node(self, x: Tensor, what: str) -> int:
        node = self.node_of(x)
        if node is None:  # a tensor the tracer has not seen: fixed channels
            node = self.trace.new_node()
            self.trace.fix(node, f'input of {what} has unknown origin')
            self.tag(x, node)
        return node

    def _layer(self, kind: str, args: tuple, kwargs: dict, out: Tensor):
        x = self._arg(args, kwargs, 0, 'input')
        weight = self._arg(args, kwargs, 1, 'weight')
        name, module = self.owner.get(id(weight), (None, None))
        what = name or f'an anonymous {kind}'
        in_node = self._input_node(x, what)
        n = x.shape[0]
        if kind == 'conv':
            groups = int(self._arg(args, kwargs, 6, 'groups') or 1)
            depthwise = module is not None and is_depthwise(module)
            multiplier = out.shape[1] // max(x.shape[1], 1)
            if depthwise and multiplier != 1:
                # m output channels per input channel: the unit feeding it
                # is kept whole, as the output would be m times its width.
                self.trace.fix(
                    in_node,
                    f'{what} is depthwise with channel '
                    f'multiplier {multiplier}',
                )
            rec = LayerRecord(
                name=name or '',
                kind='conv',
                in_channels=x.shape[1],
                out_channels=out.shape[1],
                groups=groups,
                depthwise=depthwise,
                kernel_area=weight.shape[2] * weight.shape[3],
                stride=_max_stride(self._arg(args, kwargs, 3, 'stride')),
                in_size=(x.shape[2], x.shape[3]),
                out_spatial=out.shape[2] * out.shape[3],
                in_node=in_node,
                out_node=in_node
                if depthwise and multiplier == 1
                else self.trace.new_node(),
            )
            if depthwise and multiplier != 1:
                self.trace.fix(
                    rec.out_node, f'{what} has a channel multiplier'
                )
        else:
            rec = LayerRecord(
                name=name or '',
                kind='linear',
                in_channels=x.shape[-1],
                out_channels=out.shape[-1],
                groups=1,
                depthwise=False,
                kernel_area=1,
                out_spatial=out.numel() // (n * out.shape[-1]),
                in_node=in_node,
                out_node=self.trace.new_node(),
            )
            if x.dim() != 2:  # features are not dim 1: keep them fixed
                self.trace.fix(in_node, f'{what} takes a {x.dim()}-d input')
                self.trace.fix(
                    rec.out_node, f'{what} has a {x.dim()}-d output'
                )
        dynamic = _sliceable(module)
        rec.dynamic = dynamic
        if not dynamic:
            kind_name = type(module).__name__
            if kind == 'conv' and rec.groups > 1 and not rec.depthwise:
                kind_name = f'grouped {kind_name}, groups={rec.groups}'
            reason = f'{what} ({kind_name}) cannot be sliced'
            self.trace.fix(in_node, reason)
            self.trace.fix(rec.out_node, reason)
        if name in {r.name for r in self.trace.layers}:
            self.trace.fix(in_node, f'{what} is called more than once')
            self.trace.fix(rec.out_node, f'{what} is called more than once')
        self.trace.layers.append(rec)
        self.produced_by[id(out)] = rec
        self.tag(out, rec.out_node)

    def _norm(self, args: tuple, kwargs: dict, out: Tensor) -> None:
        x = self._arg(args, kwargs, 0, 'input')
        stat = self._arg(args, kwargs, 1, 'running_mean')
        weight = self._arg(args, kwargs, 3, 'weight')
        name, module = self.owner.get(
            id(stat), self.owner.get(id(weight), (None, None))
        )
        node = self._input_node(x, name or 'a batch norm')
        if not _sliceable(module):
            self.trace.fix(
                node,
                f'{name or "a batch norm"} '
                f'({type(module).__name__}) cannot be sliced',
            )
        else:
            self.trace.norms[name] = node
            producer = self.produced_by.get(id(x))
            if producer is not None and producer.norm is None:
                producer.norm = name
        self.tag(out, node)

    def _generic(self, func, args: tuple, kwargs: dict, out) -> None:
        inputs = [
            t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)
        ]
        tagged = [
            (t, self.node_of(t)) for t in inputs if self.node_of(t) is not None
        ]
        if not tagged:
            return
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        fname = getattr(func, '__name__', str(func))
        owned = [self.owner[id(t)][0] for t in inputs if id(t) in self.owner]
        if owned or fname in ('cat', 'concat', 'concatenate', 'stack'):
            why = (
                f'{fname} with parameter of {owned[0]}'
                if owned
                else f'{fname} joins channels'
            )
            for _, node in tagged:
                self.trace.fix(node, why)
            for o in outs:
                node = self.trace.new_node()
                self.trace.fix(node, why)
                self.tag(o, node)
            return
        for o in outs:
            if o.dim() < 2:
                continue
            same = [
                n
                for t, n in tagged
                if t.dim() >= 2
                and t.shape[1] == o.shape[1]
                and t.shape[0] == o.shape[0]
            ]
            other = [n for t, n in tagged if n not in same]
            for node in other:
                self.trace.fix(node, f'{fname} changes the channel dim')
            if same:
                self.tag(o, self.trace.union(same))
            else:
                node = self.trace.new_node()
                self.trace.fix(node, f'{fname} output')
                self.tag(o, node)


def dummy_input(model: nn.Module, input_shape: Sequence[int]) -> Tensor:
    """Zeros of shape ``(1, *input_shape)`` on the device and in the dtype
    of the model's first parameter.

    Args:
        model (nn.Module): The model.
        input_shape (Sequence[int]): ``(C, H, W)``.

    Returns:
        Tensor: The input.
    """
    param = next(model.parameters(), None)
    if param is None:
        return torch.zeros((1, *input_shape))
    return torch.zeros(
        (1, *input_shape), device=param.device, dtype=param.dtype
    )


def trace_channels(
    model: nn.Module, input_shape: Sequence[int], forward=None
) -> ChannelTrace:
    """Run ``model`` once on zeros of ``(1, *input_shape)`` and record its
    channel graph.

    Args:
        model (nn.Module): The model (left in the mode it was in).
        input_shape (Sequence[int]): ``(C, H, W)`` of one input.
        forward (callable, optional): ``forward(model, x)`` to call instead of
            ``model(x)``. Defaults to None.

    Returns:
        ChannelTrace: Layers, norms and the union-find of channel nodes.
    """
    trace = ChannelTrace(input_shape=tuple(input_shape))
    was_training = model.training
    model.eval()
    try:
        x = dummy_input(model, input_shape)
        tracer = _ChannelTracer(model, trace)
        in_node = trace.new_node()
        trace.fix(in_node, 'network input')
        tracer.tag(x, in_node)
        with torch.no_grad(), tracer:
            out = forward(model, x) if forward else model(x)
        for o in tree_flatten(out)[0]:
            if isinstance(o, Tensor):
                node = tracer.node_of(o)
                if node is not None:
                    trace.fix(node, 'model output')
    finally:
        model.train(was_training)
    return trace


def check_input_size(trace: ChannelTrace) -> None:
    """Refuse an input so small that a strided convolution downsamples a
    1x1 feature map (the later layers then see only padding).

    Args:
        trace (ChannelTrace): A trace at the input size to check.
    """
    for rec in trace.layers:
        if rec.kind == 'conv' and rec.stride > 1 and min(rec.in_size) == 1:
            raise ValueError(
                f'input {list(trace.input_shape)} is too small for the '
                f'network: it is down to 1x1 before {rec.name} (stride '
                f'{rec.stride}), whose output and everything after would be '
                'computed from padding; give a larger input'
            )


def find_units(
    trace: ChannelTrace, groups: Optional[List[List[str]]] = None
) -> List[UnitSpec]:
    """Group the traced layers into prunable units.

    Args:
        trace (ChannelTrace): Result of :func:`trace_channels`.
        groups (list[list[str]], optional): Explicit units, each a list of
            producing layer names whose outputs must stay equal; replaces the
            coupling the tracer found (for models whose coupling it cannot
            see). Defaults to None.

    Returns:
        list[UnitSpec]: Prunable units, in the order their first producer
        runs.
    """
    if groups is not None:
        names = {r.name for r in trace.layers}
        for group in groups:
            for name in group:
                if name not in names:
                    raise ValueError(
                        f'explicit unit layer {name!r} is not a convolution '
                        'or linear layer of the model'
                    )
            trace.union([trace.layer(n).out_node for n in group])

    by_root: Dict[int, List[LayerRecord]] = {}
    for rec in trace.layers:
        if not rec.depthwise:
            by_root.setdefault(trace.find(rec.out_node), []).append(rec)
    units = []
    for root, producers in by_root.items():
        if trace.fixed_reason(root) is not None:
            continue
        widths = {r.out_channels for r in producers}
        if len(widths) != 1:
            continue  # coupled layers of different widths: leave them alone
        members = [r for r in trace.layers if trace.find(r.out_node) == root]
        consumers = [
            r.name
            for r in trace.layers
            if trace.find(r.in_node) == root and not r.depthwise
        ]
        followers = [r.name for r in members if r.depthwise]
        scale_points = [r.norm or r.name for r in members]
        units.append(
            UnitSpec(
                name=producers[0].name,
                num_channels=widths.pop(),
                producers=[r.name for r in producers],
                followers=followers,
                consumers=consumers,
                scale_points=scale_points,
            )
        )
    return units
