# DMCP search on MobileNetV2 1.5x (paper Section 4.1): 15 channel groups
# (0.1x each), default target 211M (paper: 72.4% top-1 at 211M).
_base_ = './dmcp_resnet18_supernet_8xb64_in1k.py'

model = dict(
    architecture=dict(
        _delete_=True,
        type='ImageClassifier',
        backbone=dict(type='MobileNetV2', widen_factor=1.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=1000,
            in_channels=1920,  # MobileNetV2 widens its last conv above 1.0x
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, 5),
        ),
    ),
    mutator=dict(channel_unit_cfg=dict(num_groups=15)),
    target_flops='211M',
)

# mmpretrain's MobileNetV2 recipe uses weight decay 4e-5
optim_wrapper = dict(architecture=dict(optimizer=dict(weight_decay=4e-5)))
