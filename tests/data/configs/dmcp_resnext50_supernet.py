# DMCP on mmpretrain's ResNeXt-50 (32x4d) by inheritance: the ResNet-18
# search config with another backbone and the head's in_channels matched to
# its 2048 output channels. Its grouped 3x3 convolutions (and the 1x1
# convolutions feeding them) keep all their channels; the residual chains
# (stem, each stage's conv3/downsample) are pruned.
_base_ = '../../../configs/pruning/dmcp/dmcp_resnet18_supernet_8xb64_in1k.py'

model = dict(
    architecture=dict(
        backbone=dict(
            _delete_=True,
            type='ResNeXt',
            depth=50,
            groups=32,
            width_per_group=4,
        ),
        head=dict(in_channels=2048),
    ),
    target_flops='3.5G',
)
