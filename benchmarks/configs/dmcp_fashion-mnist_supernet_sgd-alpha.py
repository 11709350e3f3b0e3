# The demo's Fashion-MNIST search with alpha stepped by plain SGD (momentum
# 0.9, lr 3.0 -> 0.3 by cosine, no weight decay, no gradient clipping): SGD
# keeps the relative sizes of the gradients that tell layers apart, but at
# this learning rate the budget loss's pull near the target threw two of
# three 50% searches to the min subnet. Used by benchmarks/search_quality.py
# --supernet to reproduce that result.
_base_ = '../../configs/pruning/dmcp/dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py'

optim_wrapper = dict(
    mutator=dict(
        _delete_=True,
        type='OptimWrapper',
        optimizer=dict(type='SGD', lr=3.0, momentum=0.9, weight_decay=0.0),
    )
)
param_scheduler = dict(
    mutator=[
        dict(
            type='CosineAnnealingLR',
            T_max=3,
            eta_min=0.3,
            by_epoch=True,
            begin=3,
            end=6,
            convert_to_iter_based=True,
        )
    ]
)
