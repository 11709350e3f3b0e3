"""DMCP's engine parts: the search loop and the FLOPs estimator hook."""

from .hooks import DMCPFlopsEstimatorHook
from .loop import DMCPTrainLoop, check_optim_wrappers

__all__ = [
    'DMCPFlopsEstimatorHook',
    'DMCPTrainLoop',
    'check_optim_wrappers',
]
