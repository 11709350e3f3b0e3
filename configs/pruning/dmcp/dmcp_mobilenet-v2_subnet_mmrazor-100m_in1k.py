# mmrazor 1.0.0's published DMCP MobileNetV2 subnet (100M FLOPs budget) with
# this repository's classes: the subnet is mmrazor's own file (its units
# resolved by mmrazor's channel analyzer, projects/dmcp/models/
# mmrazor_subnet.py) and the weights are mmrazor's checkpoint, mapped onto
# the pruned mmpretrain classifier. mmrazor reports 67.22 top-1 for it.
# mmrazor's MobileNetV2 is the 1.0x width (this repository's own MobileNetV2
# configs are 1.5x, as in the paper).
#   python tools/test.py configs/pruning/dmcp/dmcp_mobilenet-v2_subnet_mmrazor-100m_in1k.py \
#       https://download.openmmlab.com/mmrazor/v1/pruning/dmcp/mobilenetv2/100M/DMCP_MBV2_100M.pth
# Training with it fine-tunes from load_from with this repository's subnet
# recipe (dmcp_mobilenet-v2-1.5x_subnet_32xb64_in1k.py), not mmrazor's.
_base_ = './dmcp_mobilenet-v2-1.5x_subnet_32xb64_in1k.py'

model = dict(
    subnet='tests/data/mmrazor/DMCP_MBV2_100M.json',
    architecture=dict(
        backbone=dict(widen_factor=1.0), head=dict(in_channels=1280)
    ),
)
load_from = (
    'https://download.openmmlab.com/mmrazor/v1/pruning/dmcp/mobilenetv2/'
    '100M/DMCP_MBV2_100M.pth'
)
