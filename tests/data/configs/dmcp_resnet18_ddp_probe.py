"""The ResNet-18 supernet config plus a hook that compares alpha and the
weights across ranks after every iteration (tests/helpers/dist_probe.py)."""

_base_ = '../../../configs/pruning/dmcp/dmcp_resnet18_supernet_8xb64_in1k.py'

custom_imports = dict(
    imports=['projects.dmcp', 'tests.helpers.dist_probe'], allow_failed_imports=False
)

custom_hooks = [
    dict(
        type='mmrazor.DMCPFlopsEstimatorHook',
        width_interval=0,
        num_direct_samples=2,
    ),
    dict(type='RankStateProbeHook'),
]
