"""DMCP's models: the Markov process, units, mutator, FLOPs and losses."""

from .algorithm import DMCP, all_reduce_grads, tensor_forward
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
from .subnet import (
    DEFAULT_SUBNET,
    SubnetPlan,
    atomic_write_text,
    build_subnet,
    check_channels,
    check_subnet_doc,
    dump_subnet,
    load_subnet,
    plan_subnet,
    prune_model,
)
from .tracer import (
    ChannelTrace,
    LayerRecord,
    UnitSpec,
    find_units,
    trace_channels,
)
from .unit import MarkovChannelUnit
from .wrapper import DMCPDistributedWrapper

__all__ = [
    'DMCP',
    'all_reduce_grads',
    'tensor_forward',
    'atomic_write_text',
    'dump_subnet',
    'load_subnet',
    'check_subnet_doc',
    'check_channels',
    'SubnetPlan',
    'plan_subnet',
    'prune_model',
    'build_subnet',
    'DEFAULT_SUBNET',
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
    'MarkovChannelUnit',
]
