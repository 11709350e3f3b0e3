# mmrazor 1.0.0's published DMCP ResNet-50 subnet (2G FLOPs budget) with
# this repository's classes: the subnet is mmrazor's own file (its units
# resolved by mmrazor's channel analyzer, projects/dmcp/models/
# mmrazor_subnet.py) and the weights are mmrazor's checkpoint, mapped onto
# the pruned mmpretrain classifier. mmrazor reports 76.11 top-1 for it and
# withdrew the result ("The result of Resnet50 has bugs").
#   python tools/test.py configs/pruning/dmcp/dmcp_resnet50_subnet_mmrazor-2g_in1k.py \
#       https://download.openmmlab.com/mmrazor/v1/pruning/dmcp/resnet50/2G/DMCP_R50_2G.pth
# Training with it fine-tunes from load_from with this repository's subnet
# recipe (dmcp_resnet50_subnet_32xb64_in1k.py), not mmrazor's.
_base_ = './dmcp_resnet50_subnet_32xb64_in1k.py'

model = dict(subnet='tests/data/mmrazor/DMCP_R50_2G.json')
load_from = (
    'https://download.openmmlab.com/mmrazor/v1/pruning/dmcp/resnet50/2G/'
    'DMCP_R50_2G.pth'
)
