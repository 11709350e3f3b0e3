"""Tiny plain-mmpretrain config for the tools' end-to-end tests.

ResNet-18 from mmpretrain's own config, trained for 2 iterations on a
generated 32x32 image folder (``tests/utils.py:make_tiny_imagefolder``,
ImageNet layout ``data_root/{train,val}/<class>/<img>.png``). Point it at the
folder with ``--cfg-options`` (``tests/utils.py:tiny_cfg_options`` builds the
list)::

    python tools/train.py tests/data/configs/tiny_resnet18.py \
        --cfg-options train_dataloader.dataset.data_root=DATA \
        val_dataloader.dataset.data_root=DATA \
        test_dataloader.dataset.data_root=DATA

No pretrained weights and no downloads; ``num_workers=0`` everywhere.
"""

_base_ = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'

default_scope = 'mmpretrain'

num_classes = 3
data_root = 'data/tiny_imagefolder'

model = dict(head=dict(num_classes=num_classes, topk=(1,)))
data_preprocessor = dict(num_classes=num_classes)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='train',
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root=data_root,
        data_prefix='val',
        pipeline=test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)
)
param_scheduler = dict(
    _delete_=True, type='ConstantLR', factor=1.0, by_epoch=False
)
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=2, val_interval=2
)

default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=2),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=False)
