# Retrain the MobileNetV2 1.5x subnet found by DMCP, from scratch (paper Section 4.1,
# "Pruned network training"): batch 2048 (32 GPUs x 64), 250 epochs, the
# learning rate warmed up linearly from 0.2 to 0.8 in the first epoch, then
# cosine to 0; SGD with Nesterov momentum 0.9, weight decay 4e-5.
# The model is the physically pruned mmpretrain classifier of the searched
# yaml (plain layers, fresh initialisation); point it at the search's result:
#   --cfg-options model.subnet=<search work_dir>/DMCP_SUBNET_IMAGENET.yaml
_base_ = './dmcp_mobilenet-v2-1.5x_supernet_8xb64_in1k.py'

max_epochs = 250

model = dict(
    _delete_=True,
    type='mmrazor.DMCPSubnet',
    architecture=_base_.model.architecture,
    subnet='configs/pruning/dmcp/DMCP_SUBNET_IMAGENET.yaml',
)

train_dataloader = dict(batch_size=64)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='SGD', lr=0.8, momentum=0.9, weight_decay=4e-5, nesterov=True
    ),
)

param_scheduler = [
    # 0.2 -> 0.8 over the first epoch, updated every iteration
    dict(
        type='LinearLR',
        start_factor=0.25,
        end_factor=1.0,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True,
    ),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - 1,
        eta_min=0.0,
        by_epoch=True,
        begin=1,
        end=max_epochs,
        convert_to_iter_based=True,
    ),
]

train_cfg = dict(
    _delete_=True,
    type='EpochBasedTrainLoop',
    max_epochs=max_epochs,
    val_interval=1,
)

# no search hooks; mmengine's default MMDistributedDataParallel
custom_hooks = []
model_wrapper_cfg = None

# Total batch of the paper: 32 GPUs x 64.
auto_scale_lr = dict(base_batch_size=2048)
