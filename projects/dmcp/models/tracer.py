"""Find a model's channel units by running it once.

:func:`trace_channels` runs one forward pass of the model on a dummy input
under a ``TorchFunctionMode`` that sees every torch call. Each tensor carries a
*channel node*: the thing that decides its channel count (dim 1). A convolution
or linear layer starts a new node for its output; batch norm, activations,
pooling and other shape-preserving ops pass their input's node on; an
element-wise op on several tensors with the same channel count (a residual
addition, an attention product) joins their nodes, because those channel
counts must stay equal (Section 3.1.2 of the paper). A depthwise convolution's
output keeps its input's node. A node also knows which dim holds its
channels: 1, or the last after a ``permute``, so that a linear layer on
channel-last features (ConvNeXt's MLP) has its features as channels; a
reduction over the channels (a mean kept as a dim of one) yields a statistic
that couples nothing. Anything the tracer does not understand (a
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
        out_spatial (int): Output positions per traced sample: ``H_out *
            W_out`` for a convolution (times any patches folded into the
            batch dim), the product of the other dims for a linear.
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
        self.axes: Dict[int, int] = {}  # channel dim, when it is not 1
        self.keep: List[Tensor] = []  # keeps tagged tensors (and ids) alive
        self.produced_by: Dict[int, LayerRecord] = {}
        self.owner: Dict[int, Tuple[str, nn.Module]] = {}
        for name, module in model.named_modules():
            for t in list(module.parameters(recurse=False)) + list(
                module.buffers(recurse=False)
            ):
                self.owner[id(t)] = (name, module)

    def tag(self, t: Tensor, node: int, axis: int = 1) -> None:
        self.tags[id(t)] = node
        if axis % max(t.dim(), 1) != 1:
            self.axes[id(t)] = axis % t.dim()
        self.keep.append(t)

    def axis_of(self, t: Tensor) -> int:
        """The dim of ``t`` that holds its channels (1 unless permuted)."""
        return self.axes.get(id(t), 1)

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

    def _input_node(self, x: Tensor, what: str, axis: int = 1) -> int:
        """The node of the channels ``what`` reads from dim ``axis`` of
        ``x`` (fixed if the tracer has not seen ``x`` or its channels lie
        in another dim)."""
        node = self.node_of(x)
        if node is None:  # a tensor the tracer has not seen: fixed channels
            node = self.trace.new_node()
            self.trace.fix(node, f'input of {what} has unknown origin')
            self.tag(x, node)
        elif self.axis_of(x) != axis % x.dim():
            self.trace.fix(
                node,
                f'{what} reads dim {axis % x.dim()} of a tensor whose '
                f'channels are in dim {self.axis_of(x)}',
            )
            node = self.trace.new_node()
            self.trace.fix(node, f'{what} reads another dim than channels')
        return node

    def _layer(self, kind: str, args: tuple, kwargs: dict, out: Tensor):
        x = self._arg(args, kwargs, 0, 'input')
        weight = self._arg(args, kwargs, 1, 'weight')
        name, module = self.owner.get(id(weight), (None, None))
        what = name or f'an anonymous {kind}'
        in_node = self._input_node(x, what, 1 if kind == 'conv' else -1)
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
                # positions per traced sample (the trace runs one): a
                # network that folds patches into the batch dim runs more
                out_spatial=out.numel() // out.shape[1],
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
                out_spatial=out.numel() // out.shape[-1],
                in_node=in_node,
                out_node=self.trace.new_node(),
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
        self.tag(out, rec.out_node, 1 if kind == 'conv' else -1)

    def _norm(self, args: tuple, kwargs: dict, out: Tensor) -> None:
        x = self._arg(args, kwargs, 0, 'input')
        stat = self._arg(args, kwargs, 1, 'running_mean')
        weight = self._arg(args, kwargs, 3, 'weight')
        name, module = self.owner.get(
            id(stat), self.owner.get(id(weight), (None, None))
        )
        node = self._input_node(x, name or 'a batch norm', 1)
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
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        owners = [self.owner[id(t)] for t in inputs if id(t) in self.owner]
        if not tagged:
            # a view or function of a parameter (a layer scale's
            # ``weight.view(-1, 1, 1)``) stays the parameter's
            for o in outs if owners else ():
                self.owner[id(o)] = owners[0]
                self.keep.append(o)
            return
        fname = getattr(func, '__name__', str(func))
        owned = [name for name, _ in owners]
        if owned or fname in ('cat', 'concat', 'concatenate', 'stack'):
            why = (
                f'{fname} with parameter of {owned[0] or "the model"}'
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
        if fname in ('permute', 'transpose', 'swapaxes', 'swapdims'):
            self._move_axis(fname, args, kwargs, tagged, outs)
            return
        for o in outs:
            if o.dim() < 2:
                continue
            same, axes, reduced = [], set(), False
            for t, n in tagged:
                a = self.axis_of(t)
                if _keeps_channels(t, a, o):
                    same.append(n)
                    axes.add(a)
                elif fname in _REDUCTIONS and _reduces_channels(t, a, o):
                    reduced = True  # a statistic over the channels
                else:
                    self.trace.fix(n, f'{fname} changes the channel dim')
            if reduced and not same:
                continue  # untagged: it broadcasts over any width
            if same and len(axes) == 1:
                self.tag(o, self.trace.union(same), axes.pop())
            else:
                node = self.trace.new_node()
                self.trace.fix(node, f'{fname} output')
                for n in same:
                    self.trace.fix(n, f'{fname} mixes channel layouts')
                self.tag(o, node)

    def _move_axis(self, fname, args, kwargs, tagged, outs) -> None:
        """A permute or transpose moves the channel dim of its input."""
        (t, node), o = tagged[0], outs[0]
        ndim = t.dim()
        dims = [a for a in args[1:] if not isinstance(a, Tensor)]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = list(dims[0])
        dims = dims or list(kwargs.get('dims', kwargs.values()))
        order = list(range(ndim))
        if fname == 'permute':
            order = [int(d) % ndim for d in dims]
        elif len(dims) == 2:
            i, j = (int(d) % ndim for d in dims)
            order[i], order[j] = order[j], order[i]
        axis = self.axis_of(t)
        if sorted(order) != list(range(ndim)) or o.dim() != ndim:
            self.trace.fix(node, f'{fname} with arguments the tracer reads')
            self.tag(o, node)
            return
        self.tag(o, node, order.index(axis))


#: Reductions whose output, reduced over the channels to one, is a statistic
#: per position (e.g. the channel mean of global response normalisation).
_REDUCTIONS = frozenset(
    ('mean', 'sum', 'norm', 'amax', 'amin', 'std', 'var', 'logsumexp')
)


def _keeps_channels(t: Tensor, axis: int, o: Tensor) -> bool:
    """Whether ``o`` has ``t``'s channels (in the same dim, same batch)."""
    if t.dim() < 2 or o.dim() < 2 or t.shape[0] != o.shape[0]:
        return False
    if axis == 1:  # channels first: (N, C, ...) in, (N, C, ...) out
        return t.shape[1] == o.shape[1]
    return o.dim() == t.dim() and o.shape[axis] == t.shape[axis]


def _reduces_channels(t: Tensor, axis: int, o: Tensor) -> bool:
    """Whether ``o`` is ``t`` reduced over its channels, keeping the dim."""
    return (
        o.dim() == t.dim()
        and t.shape[axis] > 1
        and o.shape[axis] == 1
        and o.shape[0] == t.shape[0]
    )


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


def why_no_units(trace: ChannelTrace) -> str:
    """One line on why a trace has no prunable unit: the two reasons that
    fix the most layers' output channels, and, for a network of token-wise
    linear layers, what that means for a transformer.

    Args:
        trace (ChannelTrace): A trace :func:`find_units` found no unit in.

    Returns:
        str: The explanation.
    """
    counts: Dict[str, int] = {}
    for rec in trace.layers:
        if rec.depthwise:
            continue
        why = trace.fixed_reason(rec.out_node) or (
            'coupled with layers of other widths'
        )
        counts[why] = counts.get(why, 0) + 1
    if not counts:
        return 'the model has no convolution or linear layer'
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:2]
    text = '; '.join(f'{n} layers: {why}' for why, n in top)
    if any(r.kind == 'linear' and r.out_spatial > 1 for r in trace.layers):
        text += (
            '; its linear layers act on tokens whose features pass through '
            'normalisations with parameters, attention heads or token '
            'mixing, as in a transformer: DMCP prunes channel groups, not '
            'heads or tokens'
        )
    return text
