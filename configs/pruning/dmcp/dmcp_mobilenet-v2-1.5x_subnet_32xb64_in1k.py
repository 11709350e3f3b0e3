# Retrain the MobileNetV2 1.5x subnet found by DMCP, from scratch: the ResNet-18
# subnet recipe (paper Section 4.1, "Pruned network training": batch 2048 =
# 32 GPUs x 64, the learning rate warmed up linearly from 0.2 to 0.8 in the
# first epoch, then cosine to 0; SGD with Nesterov momentum 0.9) for 250
# epochs with weight decay 4e-5, on the MobileNetV2 1.5x of the search config.
# The model is the physically pruned mmpretrain classifier of the searched
# yaml (plain layers, fresh initialisation); point it at the search's result:
#   --cfg-options model.subnet=<search work_dir>/DMCP_SUBNET_IMAGENET.yaml
_base_ = './dmcp_resnet18_subnet_32xb64_in1k.py'

max_epochs = 250

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
    )
)

optim_wrapper = dict(optimizer=dict(weight_decay=4e-5))

# the ResNet-18 schedule, its cosine part stretched to 250 epochs
param_scheduler = _base_.param_scheduler
param_scheduler[1].T_max = max_epochs - 1
param_scheduler[1].end = max_epochs

train_cfg = dict(max_epochs=max_epochs)
