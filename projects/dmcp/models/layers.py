"""Layers that run on a prefix of their channels.

DMCP only ever keeps the first ``k`` channels of a layer (Section 3.1), so a
subnet runs on *slices* of the supernet's weights (views, no gathered copies):

* a convolution's input width is read off its input tensor, its output width is
  set by the unit that owns it (``out_width``; ``None`` means all channels);
* a depthwise convolution follows its input;
* a batch norm follows its input;
* a linear layer reads its input width off the input and has an ``out_width``.

The classes subclass the plain torch layers and add no parameters, so a model
is converted in place (:func:`convert_layer` swaps the class of a module) and
keeps its module names, parameters, buffers and ``state_dict`` keys. At full
width the forward is the plain layer's forward.

Two shortcuts keep a search step close to the cost of the subnets themselves;
neither changes a value the algorithm computes (``tests/test_models/
test_shortcuts.py`` compares the gradients with :func:`reference_path`):

* a sliced convolution or linear weight adds its gradient straight into its
  slice of the full weight's ``.grad`` (:func:`weight_prefix`), instead of
  autograd's full-size zero-padded gradient per subnet and layer that is then
  added to ``.grad``;
* a batch norm with a ``markov_scale`` (set by the mutator's Markov scaling,
  Eq. 7) folds the per-channel scale into its affine,
  ``BN(x) * s = x_hat * (w * s) + b * s``, instead of a separate multiply of
  its output.

Inside :func:`reference_path` both are off and the layers run the plain
slicing and a separate multiply; so do traced (``torch.jit``) and compiled
forwards, which keep the plain slicing.
"""

import contextlib
import math
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks import wrappers as mmcv_wrappers
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
from torch import Tensor, nn

__all__ = [
    'DynamicConv2d',
    'DynamicConv2dAdaptivePadding',
    'DynamicBatchNorm2d',
    'DynamicLinear',
    'convert_layer',
    'is_depthwise',
    'reference_path',
    'shortcuts_enabled',
    'weight_prefix',
    'DYNAMIC_LAYERS',
]

_REFERENCE = [False]  # inside reference_path()


@contextlib.contextmanager
def reference_path() -> Iterator[None]:
    """Inside the context the dynamic layers run their unoptimised path: the
    plain slicing of weights (autograd's zero-padded gradients) and the
    Markov scale as a separate multiply after the batch norm (a forward
    hook). The values computed are the same, up to the order of floating
    point operations; tests compare the two paths. Contexts nest.
    """
    previous = _REFERENCE[0]
    _REFERENCE[0] = True
    try:
        yield
    finally:
        _REFERENCE[0] = previous


def shortcuts_enabled() -> bool:
    """Whether the layers' shortcuts apply now: not inside
    :func:`reference_path`, not while ``torch.jit`` traces or scripts and not
    while ``torch.compile`` compiles.

    Returns:
        bool: True if the shortcuts are on.
    """
    if _REFERENCE[0]:
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    compiler = getattr(torch, 'compiler', None)
    return not (compiler is not None and compiler.is_compiling())


class _PrefixSlice(torch.autograd.Function):
    """``weight[:rows, :cols]`` whose backward adds the incoming gradient
    into that slice of ``weight.grad`` in place and hands autograd nothing
    for ``weight``, so no full-size zero-padded gradient is allocated."""

    @staticmethod
    def forward(ctx, weight: Tensor, rows: int, cols: Optional[int]) -> Tensor:
        ctx.weight = weight
        ctx.index = (slice(None, rows),) + (
            () if cols is None else (slice(None, cols),)
        )
        return weight[ctx.index]

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[None, None, None]:
        weight = ctx.weight
        with torch.no_grad():
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            weight.grad[ctx.index].add_(grad)
        return None, None, None


def weight_prefix(weight: Tensor, rows: int, cols: Optional[int]) -> Tensor:
    """The first ``rows`` output (and ``cols`` input) channels of a weight.

    While a weight step records gradients (the weight is a leaf that requires
    grad, grad mode is on and :func:`shortcuts_enabled`), the slice's
    gradient is added in place into ``weight.grad[:rows, :cols]`` (created
    as zeros if None) during the backward, and autograd sees no gradient for
    ``weight``: ``torch.autograd.grad`` with respect to a sliced weight
    therefore needs :func:`reference_path`. Otherwise it is the plain view
    ``weight[:rows, :cols]``.

    Args:
        weight (Tensor): A convolution or linear weight, output channels
            first.
        rows (int): Output channels kept.
        cols (int, optional): Input channels kept; None keeps every one
            (a depthwise convolution).

    Returns:
        Tensor: The slice.
    """
    if (
        weight.requires_grad
        and weight.is_leaf
        and torch.is_grad_enabled()
        and shortcuts_enabled()
    ):
        return _PrefixSlice.apply(weight, rows, cols)
    return weight[:rows] if cols is None else weight[:rows, :cols]


def is_depthwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a depthwise convolution (``groups == in_channels``,
    any channel multiplier), whose output channels follow its input.

    Args:
        conv (nn.Conv2d): The convolution.

    Returns:
        bool: True for a depthwise convolution with more than one channel.
    """
    return (
        conv.groups > 1
        and conv.groups == conv.in_channels
        and conv.out_channels % conv.in_channels == 0
    )


class DynamicConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs on the first ``out_width`` filters and on as
    many input channels as its input has."""

    out_width: Optional[int] = None

    def forward(self, x: Tensor) -> Tensor:
        """Convolve with the weight prefix matching the current widths.

        Args:
            x (Tensor): Input of shape ``(N, C_in', H, W)``, ``C_in'`` no more
                than ``in_channels``.

        Returns:
            Tensor: Output of shape ``(N, C_out', H', W')``.
        """
        cin = x.shape[1]
        if self.groups > 1:  # depthwise: output follows the input
            if cin == self.in_channels:
                return super().forward(x)
            cout = cin * (self.out_channels // self.in_channels)
            weight, groups = weight_prefix(self.weight, cout, None), cin
        else:
            cout = self.out_width or self.out_channels
            if cin == self.in_channels and cout == self.out_channels:
                return super().forward(x)
            weight, groups = weight_prefix(self.weight, cout, cin), 1
        bias = None if self.bias is None else self.bias[:cout]
        if self.padding_mode != 'zeros':
            return F.conv2d(
                F.pad(
                    x,
                    self._reversed_padding_repeated_twice,
                    mode=self.padding_mode,
                ),
                weight,
                bias,
                self.stride,
                0,
                self.dilation,
                groups,
            )
        return F.conv2d(
            x, weight, bias, self.stride, self.padding, self.dilation, groups
        )


def same_padding(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Pad ``x`` as mmcv's ``Conv2dAdaptivePadding`` does (TensorFlow's
    ``'same'``: the output covers ``ceil(size / stride)`` positions).

    Args:
        conv (nn.Conv2d): The convolution (its kernel, stride, dilation).
        x (Tensor): Input of shape ``(N, C, H, W)``.

    Returns:
        Tensor: The padded input.
    """
    pads = []
    for size, k, s, d in zip(
        x.shape[-2:], conv.weight.shape[-2:], conv.stride, conv.dilation
    ):
        out = math.ceil(size / s)
        pads.append(max((out - 1) * s + (k - 1) * d + 1 - size, 0))
    pad_h, pad_w = pads
    if pad_h > 0 or pad_w > 0:
        x = F.pad(
            x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
        )
    return x


class DynamicConv2dAdaptivePadding(DynamicConv2d):
    """mmcv's ``Conv2dAdaptivePadding`` (EfficientNet's convolutions) on a
    channel prefix: the same 'same' padding, then :class:`DynamicConv2d`."""

    def forward(self, x: Tensor) -> Tensor:
        """Pad like the original, then convolve the current widths.

        Args:
            x (Tensor): Input of shape ``(N, C_in', H, W)``.

        Returns:
            Tensor: Output of shape ``(N, C_out', H', W')``.
        """
        return super().forward(same_padding(self, x))


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` on the first ``C`` channels of its input.

    When ``update_stats`` is False (set while DMCP trains on a subnet that
    should not move the running statistics, and during the Markov-scaled
    architecture step) it normalises with the batch statistics and leaves the
    running statistics and ``num_batches_tracked`` untouched.

    When ``markov_scale`` is a tensor (set by the mutator's Markov scaling,
    Eq. 7, outside :func:`reference_path`) the output channels are scaled by
    it, folded into the affine: ``x_hat * (w * s) + b * s``.
    """

    update_stats: bool = True
    markov_scale: Optional[Tensor] = None

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the input with the matching prefix of the parameters.

        Args:
            x (Tensor): Input of shape ``(N, C', H, W)``.

        Returns:
            Tensor: Normalised input, same shape.
        """
        c = x.shape[1]
        scale = self.markov_scale
        if (
            scale is None
            and c == self.num_features
            and (self.update_stats or not self.training)
        ):
            return super().forward(x)
        weight = None if self.weight is None else self.weight[:c]
        bias = None if self.bias is None else self.bias[:c]
        if scale is not None:
            scale = scale.to(x.dtype if weight is None else weight.dtype)
            weight = scale if weight is None else weight * scale
            bias = None if bias is None else bias * scale
        if self.training and not self.update_stats:
            return F.batch_norm(
                x, None, None, weight, bias, True, 0.0, self.eps
            )
        if self.training and self.track_running_stats:
            # Same bookkeeping as nn.BatchNorm2d, on a prefix of the buffers.
            self.num_batches_tracked.add_(1)
            momentum = (
                1.0 / float(self.num_batches_tracked)
                if self.momentum is None
                else self.momentum
            )
            return F.batch_norm(
                x,
                self.running_mean[:c],
                self.running_var[:c],
                weight,
                bias,
                True,
                momentum,
                self.eps,
            )
        use_batch = self.training or not self.track_running_stats
        mean = None if self.running_mean is None else self.running_mean[:c]
        var = None if self.running_var is None else self.running_var[:c]
        return F.batch_norm(
            x,
            mean,
            var,
            weight,
            bias,
            use_batch,
            self.momentum or 0.0,
            self.eps,
        )


class DynamicLinear(nn.Linear):
    """``nn.Linear`` on the first ``in`` features of its input and the first
    ``out_width`` outputs."""

    out_width: Optional[int] = None

    def forward(self, x: Tensor) -> Tensor:
        """Apply the weight prefix matching the current widths.

        Args:
            x (Tensor): Input of shape ``(..., F_in')``.

        Returns:
            Tensor: Output of shape ``(..., F_out')``.
        """
        fin = x.shape[-1]
        fout = self.out_width or self.out_features
        if fin == self.in_features and fout == self.out_features:
            return super().forward(x)
        bias = None if self.bias is None else self.bias[:fout]
        return F.linear(x, weight_prefix(self.weight, fout, fin), bias)


DYNAMIC_LAYERS = {
    nn.Conv2d: DynamicConv2d,
    nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.Linear: DynamicLinear,
}
# mmcv's wrappers (used by mmpretrain's VAN, PoolFormer, ...) only add a
# path for empty inputs of torch < 1.5 to the plain forward.
DYNAMIC_LAYERS.update({mmcv_wrappers.Conv2d: DynamicConv2d})
DYNAMIC_LAYERS.update({mmcv_wrappers.Linear: DynamicLinear})
DYNAMIC_LAYERS.update({Conv2dAdaptivePadding: DynamicConv2dAdaptivePadding})


def convert_layer(module: nn.Module) -> bool:
    """Turn a plain ``Conv2d``/``BatchNorm2d``/``Linear`` into its dynamic
    twin in place (its class is swapped; parameters, buffers, hooks and names
    are kept).

    Only the exact torch classes (and mmcv's thin wrappers of them) are
    converted, and only plain or depthwise convolutions: a subclass may have
    a forward of its own that slicing would bypass, and grouped convolutions
    cannot drop a channel prefix.

    Args:
        module (nn.Module): The layer.

    Returns:
        bool: True if ``module`` is (now) dynamic.
    """
    if type(module) in DYNAMIC_LAYERS.values():
        return True
    target = DYNAMIC_LAYERS.get(type(module))
    if target is None:
        return False
    if (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and not is_depthwise(module)
    ):
        return False
    module.__class__ = target
    return True
