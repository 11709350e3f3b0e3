# DMCP search on ResNet-50 (paper Section 4.1): the ResNet-18 search settings
# with ResNet-50 as the supernet; default target 2.2G (paper: 76.2% top-1).
_base_ = './dmcp_resnet18_supernet_8xb64_in1k.py'

model = dict(
    architecture=dict(backbone=dict(depth=50), head=dict(in_channels=2048)),
    target_flops='2.2G',
)
