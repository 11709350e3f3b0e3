# Retrain the MobileNetV2 (widen factor 0.5) subnet searched on Fashion-MNIST,
# from scratch: the demo's retraining (the ResNet config below: all 60,000
# training images, 3 epochs, SGD with Nesterov momentum, the learning rate
# warmed up linearly in the first epoch, then cosine to 0, peak 0.2) on the
# search config's network, input size (56x56) and pipelines (the _base_ file
# below), with its weight decay.
#   --cfg-options model.subnet=<search work_dir>/DMCP_SUBNET_IMAGENET.yaml
_base_ = [
    './dmcp_resnet18-cifar-w16_subnet_fashion-mnist.py',
    './_base_/mobilenet-v2-w0.5_fashion-mnist.py',
]

input_shape = _base_.mobilenet_v2_input_shape

model = dict(
    architecture=dict(_delete_=True, **_base_.mobilenet_v2_architecture),
    input_shape=input_shape,
)

train_pipeline = _base_.mobilenet_v2_train_pipeline
test_pipeline = _base_.mobilenet_v2_test_pipeline
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(weight_decay=_base_.mobilenet_v2_weight_decay)
)
