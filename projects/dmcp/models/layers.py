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
"""

import math
from typing import Optional

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
    'DYNAMIC_LAYERS',
]


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
            weight, groups = self.weight[:cout], cin
        else:
            cout = self.out_width or self.out_channels
            if cin == self.in_channels and cout == self.out_channels:
                return super().forward(x)
            weight, groups = self.weight[:cout, :cin], 1
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
    """

    update_stats: bool = True

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the input with the matching prefix of the parameters.

        Args:
            x (Tensor): Input of shape ``(N, C', H, W)``.

        Returns:
            Tensor: Normalised input, same shape.
        """
        c = x.shape[1]
        if c == self.num_features and (self.update_stats or not self.training):
            return super().forward(x)
        weight = None if self.weight is None else self.weight[:c]
        bias = None if self.bias is None else self.bias[:c]
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
        return F.linear(x, self.weight[:fout, :fin], bias)


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
