# DMCP on a user's own backbone: the ResNet-18 search config with another
# backbone, registered in mmpretrain's MODELS by the user's module
# (tests/data/user_backbone.py). Its last convolution has 512 channels, like
# ResNet-18's, so the head stays; its 1.2G FLOPs at 224x224 contain the
# 1.04G target. Nothing under projects/ knows about it.
_base_ = '../../../configs/pruning/dmcp/dmcp_resnet18_supernet_8xb64_in1k.py'

custom_imports = dict(
    imports=['projects.dmcp', 'tests.data.user_backbone'],
    allow_failed_imports=False,
)

model = dict(
    architecture=dict(
        backbone=dict(_delete_=True, type='TinyUserNet', out_channels=512)
    )
)
