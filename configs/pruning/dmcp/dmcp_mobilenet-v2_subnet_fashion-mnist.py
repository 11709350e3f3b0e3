# Retrain the MobileNetV2 (widen factor 0.5) subnet searched on Fashion-MNIST,
# from scratch: the architecture, input size (56x56) and data of the search
# config below, and the demo's retraining (dmcp_resnet18-cifar-w16_subnet_
# fashion-mnist.py: all 60,000 training images, 3 epochs, SGD with Nesterov
# momentum, the learning rate warmed up linearly in the first epoch, then
# cosine to 0, peak 0.2) with the search's weight decay.
#   --cfg-options model.subnet=<search work_dir>/DMCP_SUBNET_IMAGENET.yaml
_base_ = './dmcp_mobilenet-v2_supernet_fashion-mnist.py'

max_epochs = 3

model = dict(
    _delete_=True,
    type='mmrazor.DMCPSubnet',
    architecture=_base_.model.architecture,
    subnet='configs/pruning/dmcp/DMCP_SUBNET_IMAGENET.yaml',
    input_shape=_base_.input_shape,
)

train_dataloader = dict(dataset=dict(indices=None))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='SGD',
        lr=0.2,
        momentum=0.9,
        weight_decay=_base_.optim_wrapper.architecture.optimizer.weight_decay,
        nesterov=True,
    ),
)
param_scheduler = [
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
    val_interval=max_epochs,
)
custom_hooks = []
model_wrapper_cfg = None
default_hooks = dict(checkpoint=dict(interval=max_epochs))
