# DMCP on mmpretrain's RegNetX-400MF by inheritance: the ResNet-18 search
# config with another backbone, the head's in_channels matched to its 384
# output channels and a budget below its 0.40G. Its blocks' grouped 3x3
# convolutions (and the 1x1 convolutions feeding them) keep all their
# channels; the residual chains (stem, each stage's conv3/downsample) are
# pruned.
_base_ = '../../../configs/pruning/dmcp/dmcp_resnet18_supernet_8xb64_in1k.py'

model = dict(
    architecture=dict(
        backbone=dict(_delete_=True, type='RegNet', arch='regnetx_400mf'),
        head=dict(in_channels=384),
    ),
    target_flops='300M',
)
