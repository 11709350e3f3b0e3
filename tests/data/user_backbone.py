"""A user's own backbone, registered in mmpretrain's ``MODELS`` from its own
module: what "Prune your own backbone" in the README walks through.

``TinyUserNet`` is a small residual network written with plain torch layers:
a stem, three stages of basic blocks (two 3x3 convolutions and a residual
addition; a strided block's shortcut is a 1x1 convolution) and a 1x1
convolution to ``out_channels``. Nothing in it knows about DMCP: the config
``tests/data/configs/dmcp_user_backbone_supernet.py`` imports this module
(``custom_imports``) and DMCP finds its channel units by tracing it.
"""

from typing import Optional, Sequence, Tuple

from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS
from torch import Tensor, nn


def conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1
) -> nn.Sequential:
    """A convolution without bias followed by a batch norm."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    )


class Block(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut, then relu.

    Args:
        cin (int): Input channels.
        cout (int): Output channels.
        stride (int): Stride of the first convolution. Defaults to 1.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3)
        self.shortcut = (
            conv_bn(cin, cout, 1, stride)
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


@MODELS.register_module()
class TinyUserNet(BaseBackbone):
    """A small residual network.

    Args:
        in_channels (int): Image channels. Defaults to 3.
        widths (Sequence[int]): Channels of the stages; the stem has the
            first stage's. Defaults to (64, 128, 256).
        blocks (Sequence[int]): Blocks per stage. Defaults to (2, 2, 2).
        out_channels (int): Channels of the last 1x1 convolution (the head's
            ``in_channels``). Defaults to 512.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256),
        blocks: Sequence[int] = (2, 2, 2),
        out_channels: int = 512,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg)
        self.stem = nn.Sequential(
            conv_bn(in_channels, widths[0], 3, 2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], widths[0]
        for i, (width, num) in enumerate(zip(widths, blocks)):
            for j in range(num):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(Block(cin, width, stride))
                cin = width
        self.stages = nn.Sequential(*layers)
        self.last = nn.Sequential(
            conv_bn(cin, out_channels, 1, 2), nn.ReLU(inplace=True)
        )

    def forward(self, x: Tensor) -> Tuple[Tensor]:
        return (self.last(self.stages(self.stem(x))),)
