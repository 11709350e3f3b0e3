"""DMCP's models, in the order of the flow.

The search (:mod:`.markov`, :mod:`.unit`, :mod:`.mutator`, :mod:`.flops`,
:mod:`.losses`, :mod:`.algorithm`, :mod:`.wrapper`) -> its export
(:mod:`.export`) -> the subnet file (:mod:`.subnet_file`) <- the retraining
(:mod:`.prune`). The tracer, the dynamic layers and the FLOPs table sit
below both.
"""

from ..fileio import atomic_write_text
from ..utils import tensor_forward
from .algorithm import DMCP, all_reduce_grads
from .export import (
    draw_direct_samples,
    expected_sampling,
    export_search_results,
    subnet_meta,
)
from .flops import (
    FlopsTable,
    count_flops,
    count_params,
    format_flops,
    parse_flops,
)
from .layers import (
    DynamicBatchNorm2d,
    DynamicConv2d,
    DynamicLinear,
    convert_layer,
    reference_path,
)
from .losses import DMCPBudgetLoss, budget_loss
from .markov import (
    channel_scale,
    expected_channels,
    group_ends,
    marginal_probs,
    sample_num_groups,
    transition_probs,
)
from .mutator import SAMPLING_MODES, DMCPChannelMutator
from .prune import (
    DMCPSubnet,
    SubnetPlan,
    build_subnet,
    plan_subnet,
    prune_model,
)
from .subnet_file import (
    DEFAULT_SUBNET,
    SUBNET_FILE,
    check_channels,
    check_subnet_doc,
    dump_subnet,
    load_subnet,
)
from .tracer import (
    ChannelTrace,
    LayerRecord,
    UnitSpec,
    find_units,
    trace_channels,
)
from .unit import DMCPChannelUnit, MarkovChannelUnit
from .wrapper import DMCPDDP, DMCPDistributedWrapper

__all__ = [
    'DMCP',
    'all_reduce_grads',
    'tensor_forward',
    'draw_direct_samples',
    'expected_sampling',
    'export_search_results',
    'subnet_meta',
    'atomic_write_text',
    'dump_subnet',
    'load_subnet',
    'check_subnet_doc',
    'check_channels',
    'SubnetPlan',
    'plan_subnet',
    'prune_model',
    'DMCPSubnet',
    'build_subnet',
    'DEFAULT_SUBNET',
    'SUBNET_FILE',
    'DMCPDDP',
    'DMCPDistributedWrapper',
    'FlopsTable',
    'count_flops',
    'count_params',
    'format_flops',
    'parse_flops',
    'DynamicBatchNorm2d',
    'DynamicConv2d',
    'DynamicLinear',
    'convert_layer',
    'reference_path',
    'DMCPBudgetLoss',
    'budget_loss',
    'channel_scale',
    'expected_channels',
    'group_ends',
    'marginal_probs',
    'sample_num_groups',
    'transition_probs',
    'SAMPLING_MODES',
    'DMCPChannelMutator',
    'ChannelTrace',
    'LayerRecord',
    'UnitSpec',
    'find_units',
    'trace_channels',
    'DMCPChannelUnit',
    'MarkovChannelUnit',
]
