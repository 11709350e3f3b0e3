# Retraining the subnet searched on the user's backbone: the ResNet-18
# subnet config (its schedule) with the same backbone swap as the search
# config, tests/data/configs/dmcp_user_backbone_supernet.py.
#   --cfg-options model.subnet=<search work_dir>/DMCP_SUBNET_IMAGENET.yaml
_base_ = '../../../configs/pruning/dmcp/dmcp_resnet18_subnet_32xb64_in1k.py'

custom_imports = dict(
    imports=['projects.dmcp', 'tests.data.user_backbone'],
    allow_failed_imports=False,
)

model = dict(
    architecture=dict(
        backbone=dict(_delete_=True, type='TinyUserNet', out_channels=512)
    )
)
