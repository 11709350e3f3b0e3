# mmpretrain's MobileNetV2 (widen factor 0.5) on Fashion-MNIST: the network,
# input size and pipelines shared by the MobileNetV2 search and retraining
# configs beside the ResNet ones (issue 14, part 4). The keys are prefixed
# `mobilenet_v2_` because mmengine refuses a key defined in two bases, and
# both configs also inherit from a ResNet Fashion-MNIST config.
#
# mmpretrain's MobileNetV2 has a fixed 3-channel stem and downsamples 32x
# (stem and four stages at stride 2): at 28x28 its last four stages would run
# at 2x2 and 1x1. So the images are resized to 56x56 (mmcv's Resize,
# bilinear), which puts the stem's output at 28x28, the last stages at 4x4
# and 2x2, like a CIFAR-style stem of stride 1 on the 28x28 images; and the
# data preprocessor's 3-value mean and std broadcast the grey channel to the
# three the stem reads (`(x - mean) / std` with `x` of shape (N, 1, H, W) and
# `mean` of shape (3, 1, 1) is (N, 3, H, W), three equal channels): no
# change to the backbone. FLOPs are counted at (3, 56, 56) accordingly.
mobilenet_v2_input_shape = (3, 56, 56)

mobilenet_v2_architecture = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        type='ClsDataPreprocessor',
        num_classes=10,
        mean=[72.94, 72.94, 72.94],  # grey -> 3 equal channels
        std=[90.02, 90.02, 90.02],
        to_rgb=False,
    ),
    backbone=dict(type='MobileNetV2', widen_factor=0.5),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=1280,  # kept at 1280 for widen factors up to 1.0
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1,),
    ),
)

mobilenet_v2_resize = dict(
    type='Resize', scale=(56, 56), interpolation='bilinear'
)
mobilenet_v2_train_pipeline = [
    mobilenet_v2_resize,
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
mobilenet_v2_test_pipeline = [mobilenet_v2_resize, dict(type='PackInputs')]

# mmpretrain's MobileNetV2 weight decay, in the search and the retraining.
mobilenet_v2_weight_decay = 4e-5
