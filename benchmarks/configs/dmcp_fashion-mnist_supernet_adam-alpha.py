# The demo's Fashion-MNIST search with alpha stepped by Adam (0.05 -> 0.005 by
# cosine, no weight decay), the demo config's optimizer before the normalised
# gradient steps replaced it. Adam's per-parameter normalisation moves every
# alpha by about the same amount, so the searched widths stay nearly uniform.
# Used by benchmarks/search_quality.py --supernet to reproduce that result.
_base_ = '../../configs/pruning/dmcp/dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py'

optim_wrapper = dict(
    mutator=dict(
        _delete_=True,
        type='OptimWrapper',
        optimizer=dict(
            type='Adam', lr=0.05, betas=(0.9, 0.999), weight_decay=0.0
        ),
    )
)
param_scheduler = dict(
    mutator=[
        dict(
            type='CosineAnnealingLR',
            T_max=3,
            eta_min=0.005,
            by_epoch=True,
            begin=3,
            end=6,
            convert_to_iter_based=True,
        )
    ]
)
