# Ablation (issue 14): the demo's Fashion-MNIST search with alpha stepped by
# Adam instead of normalised gradient descent. On a frozen network with
# planted dead channels (benchmarks/planted.py) Adam's per-parameter steps
# move the dead groups' alphas, which only the budget's small gradient
# reaches, as fast as any other; a globally normalised step moves them by
# their small share of the whole gradient and ends near-uniform.
# benchmarks/search_quality.py --supernet <this file> compares the two.
_base_ = ['../dmcp_resnet18-cifar-w16_supernet_fashion-mnist.py']

optim_wrapper = dict(
    mutator=dict(
        optimizer=dict(_delete_=True, type='Adam', lr=0.3, weight_decay=0.0),
        clip_grad=None,
    )
)
# the base's alpha schedule, from 0.3 down to 0.01 (a list replaces the
# base's whole list)
max_epochs = 6
warmup_epochs = 3
param_scheduler = dict(
    mutator=[
        dict(
            type='CosineAnnealingLR',
            T_max=max_epochs - warmup_epochs,
            eta_min=0.01,
            by_epoch=True,
            begin=warmup_epochs,
            end=max_epochs,
            convert_to_iter_based=True,
        )
    ]
)
