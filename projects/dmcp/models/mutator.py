"""DMCPChannelMutator: finds the units of a supernet, owns their architecture
parameters, sets subnets and computes expected FLOPs."""

import contextlib
import logging
from typing import (
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..registry import MODELS, build_model
from .bernoulli import keep_marginals, sample_groups
from .flops import FlopsTable
from .latency import LatencyTable
from .layers import DynamicBatchNorm2d, convert_layer, shortcuts_enabled
from .markov import channel_scale, expected_channels
from .tracer import (
    ChannelTrace,
    UnitSpec,
    find_units,
    trace_channels,
    why_no_units,
)

__all__ = ['DMCPChannelMutator', 'SAMPLING_MODES']

SAMPLING_MODES = ('max', 'min', 'direct', 'expected')
Choices = Dict[str, int]


@MODELS.register_module(name='DMCPChannelMutator', force=True)
class DMCPChannelMutator(BaseModule):
    """Owns the Markov channel units of a supernet.

    :meth:`prepare_from_supernet` runs the supernet once to find its units
    (layers joined by a residual addition share one; see
    :mod:`projects.dmcp.models.tracer`), turns its conv/BN/linear layers into
    prefix-slicing ones (:mod:`projects.dmcp.models.layers`) and records the
    shapes for the expected FLOPs. A subnet is then a dict from unit name to
    retained channels, set with :meth:`set_subnet`.

    Args:
        channel_unit_cfg (dict, optional): Config of every unit; its ``type``
            is a registered unit class and the other keys its arguments (e.g.
            ``num_groups``). Defaults to None, i.e.
            ``dict(type='DMCPChannelUnit', num_groups=10)``.
        units (list[list[str]], optional): Explicit units, each a list of
            producing layer names whose output channels must stay equal, for
            models whose coupling the tracer cannot see. Defaults to None
            (found by tracing).
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(
        self,
        channel_unit_cfg: Optional[dict] = None,
        units: Optional[List[List[str]]] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg)
        cfg = dict(type='DMCPChannelUnit', num_groups=10)
        cfg.update(channel_unit_cfg or {})
        self.channel_unit_cfg = cfg
        self.explicit_units = units
        self.units = nn.ModuleList()
        self.specs: List[UnitSpec] = []
        self.process = 'markov'
        self.whole_specs: List[UnitSpec] = []
        self.trace: Optional[ChannelTrace] = None
        self.flops_table: Optional[FlopsTable] = None
        self.input_shape: Sequence[int] = ()
        self._layers: Dict[str, nn.Module] = {}
        self._norms: List[DynamicBatchNorm2d] = []
        self.latency_table: Optional[LatencyTable] = None

    # ------------------------------------------------------------------ build
    def prepare_from_supernet(
        self,
        supernet: nn.Module,
        input_shape: Sequence[int] = (3, 224, 224),
        forward: Optional[Callable] = None,
    ) -> None:
        """Find the units of ``supernet`` and make it prunable.

        Args:
            supernet (nn.Module): The model to prune; converted in place.
            input_shape (Sequence[int]): ``(C, H, W)`` at which FLOPs are
                counted. Defaults to ``(3, 224, 224)``.
            forward (callable, optional): ``forward(model, x)`` used for the
                trace. Defaults to None (``model(x)``).
        """
        self.input_shape = tuple(input_shape)
        self.trace = trace_channels(supernet, input_shape, forward)
        specs = find_units(self.trace, self.explicit_units)
        if not specs:
            raise ValueError(
                'found no prunable channels in the model: every '
                'convolution and linear layer is fixed ('
                f'{why_no_units(self.trace)})'
            )
        # units narrower than num_groups (e.g. the squeeze of a
        # squeeze-and-excitation gate) are kept whole, unless all are
        groups = self.channel_unit_cfg.get('num_groups')
        wide = [
            s
            for s in specs
            if not isinstance(groups, int) or s.num_channels >= groups
        ]
        self.specs = wide or [max(specs, key=lambda s: s.num_channels)]
        self.whole_specs = [s for s in specs if s not in self.specs]
        if self.whole_specs:
            print_log(
                f'{len(self.whole_specs)} units narrower than '
                f'num_groups={groups} are kept whole (first: '
                f'{self.whole_specs[0].name}, '
                f'{self.whole_specs[0].num_channels} channels)',
                logger='current',
                level=logging.WARNING,
            )
        modules = dict(supernet.named_modules())
        for module in modules.values():
            convert_layer(module)
        self.units = nn.ModuleList()
        for spec in self.specs:
            cfg = dict(
                self.channel_unit_cfg,
                name=spec.name,
                num_channels=spec.num_channels,
                layers=spec.producers + spec.followers,
            )
            try:
                self.units.append(build_model(cfg))
            except (TypeError, ValueError) as e:
                raise ValueError(f'model.mutator.channel_unit_cfg: {e}') from e
        if len({u.num_groups for u in self.units}) != 1:
            raise ValueError('all units must have the same num_groups')
        self.process = self.units[0].process
        if any(u.process != self.process for u in self.units):
            raise ValueError('all units must have the same process')
        self._layers = {
            name: modules[name]
            for spec in self.specs
            for name in spec.producers + spec.followers + spec.scale_points
        }
        self._norms = [
            m for m in supernet.modules() if isinstance(m, DynamicBatchNorm2d)
        ]
        self.flops_table = FlopsTable(self.trace, self.specs)
        self.register_buffer(
            'group_ends',
            torch.tensor([u.ends for u in self.units]),
            persistent=False,
        )
        self.set_subnet('max')

    # ------------------------------------------------------------ properties
    @property
    def unit_names(self) -> List[str]:
        """Names of the units, in order."""
        return [u.name for u in self.units]

    @property
    def divisor(self) -> int:
        """The units' channel divisor (``channel_unit_cfg.divisor``)."""
        return getattr(self.units[0], 'divisor', 1) if len(self.units) else 1

    def alphas(self) -> Tensor:
        """Architecture parameters of all units stacked, ``(U, G - 1)``."""
        return torch.stack([u.alpha for u in self.units])

    def group_sizes(self) -> Tensor:
        """Channels per group of all units stacked, ``(U, G)``."""
        return torch.stack([u.group_sizes for u in self.units])

    def arch_parameters(self) -> List[nn.Parameter]:
        """The ``alpha`` of every unit."""
        return [u.alpha for u in self.units]

    # -------------------------------------------------------------- subnets
    def sample_choices(
        self, mode: str, generator: Optional[torch.Generator] = None
    ) -> Choices:
        """Choose channels for every unit.

        Args:
            mode (str): ``'max'`` (all channels), ``'min'`` (one group per
                unit), ``'direct'`` (Direct Sampling: run each unit's Markov
                chain) or ``'expected'`` (Expected Sampling: round each unit's
                expected channels).
            generator (torch.Generator, optional): Randomness for
                ``'direct'``. Defaults to None.

        Returns:
            dict[str, int]: Unit name -> retained channels.
        """
        if mode == 'max':
            return {u.name: u.num_channels for u in self.units}
        if mode == 'min':
            return {u.name: u.min_channels for u in self.units}
        if mode == 'direct':
            rows = self.sample_direct_batch(1, generator)
            return self.choices_from_rows(rows)[0]
        if mode == 'expected':
            return {u.name: u.expected_choice() for u in self.units}
        raise ValueError(
            f'unknown sampling mode {mode!r}; expected one of '
            f'{SAMPLING_MODES} or a dict of channels'
        )

    def set_subnet(
        self,
        subnet: Union[str, Choices],
        generator: Optional[torch.Generator] = None,
    ) -> Choices:
        """Make the supernet run as a subnet.

        Args:
            subnet (str | dict): A mode of :meth:`sample_choices` or a dict
                from unit name to retained channels.
            generator (torch.Generator, optional): Randomness for
                ``'direct'``. Defaults to None.

        Returns:
            dict[str, int]: The choices that were set.
        """
        choices = (
            self.sample_choices(subnet, generator)
            if isinstance(subnet, str)
            else self.check_choices(subnet)
        )
        for unit in self.units:
            width = choices[unit.name]
            unit.choice = width
            full = width == unit.num_channels
            for name in self.specs[self._index(unit.name)].producers:
                self._layers[name].out_width = None if full else width
        return choices

    def check_choices(self, choices: Choices) -> Choices:
        """Validate an explicit choice dict.

        Args:
            choices (dict[str, int]): Unit name -> retained channels.

        Returns:
            dict[str, int]: The same choices, as ints.
        """
        names = set(self.unit_names)
        unknown = sorted(set(choices) - names)
        missing = sorted(names - set(choices))
        if unknown or missing:
            raise KeyError(
                f'choices do not match the units: unknown '
                f'{unknown}, missing {missing}'
            )
        out = {}
        for unit in self.units:
            width = int(choices[unit.name])
            if not 1 <= width <= unit.num_channels:
                raise ValueError(
                    f'unit {unit.name}: {width} channels is '
                    f'outside [1, {unit.num_channels}]'
                )
            out[unit.name] = width
        return out

    def current_choices(self) -> Choices:
        """The channels currently set, unit name -> channels."""
        return {u.name: u.choice for u in self.units}

    def layer_channels(
        self, choices: Optional[Choices] = None
    ) -> Dict[str, int]:
        """Retained output channels of every pruned layer (the producers and
        the depthwise followers of each unit), in model order.

        Args:
            choices (dict[str, int], optional): Unit choices. Defaults to None
                (the current ones).

        Returns:
            dict[str, int]: Layer name -> channels; coupled layers carry the
            same value.
        """
        choices = dict(choices or self.current_choices())
        choices.update({s.name: s.num_channels for s in self.whole_specs})
        by_layer = {}
        for spec in self.specs + self.whole_specs:
            for name in spec.producers:
                by_layer[name] = choices[spec.name]
            for name in spec.followers:
                rec = self.trace.layer(name)
                by_layer[name] = choices[spec.name] * (
                    rec.out_channels // rec.in_channels
                )
        return {
            r.name: by_layer[r.name]
            for r in self.trace.layers
            if r.name in by_layer
        }

    def _index(self, name: str) -> int:
        if not hasattr(self, '_name_index') or len(self._name_index) != len(
            self.units
        ):
            self._name_index = {u.name: i for i, u in enumerate(self.units)}
        return self._name_index[name]

    # ---------------------------------------------------------------- FLOPs
    def marginals(self) -> Tensor:
        """``p(w)`` of every unit (Eq. 6, or the independent keep
        probabilities of the units' ``process='bernoulli'``), shape
        ``(U, G)``."""
        return keep_marginals(self.alphas(), self.process)

    def expected_channels(self) -> Tensor:
        """``E(channel)`` of every unit (Eq. 8), shape ``(U,)``."""
        return expected_channels(self.marginals(), self.group_sizes())

    def expected_flops(self) -> Tensor:
        """``E(N_FLOPs)`` (Eq. 12), a differentiable float64 scalar."""
        return self.flops_table(self.expected_channels())

    def set_latency_table(
        self, doc: dict, where: str = 'latency table'
    ) -> None:
        """Use a per-layer latency table (:mod:`.latency`) for
        :meth:`expected_latency`; call after :meth:`prepare_from_supernet`.

        Args:
            doc (dict): The table file's content.
            where (str): The file, for errors. Defaults to
                ``'latency table'``.

        Raises:
            ValueError: The table does not fit this network.
        """
        table = LatencyTable(
            self.trace,
            self.specs,
            self.units[0].num_groups,
            doc,
            where,
            input_shape=self.input_shape,
            divisor=self.divisor,
        )
        self.latency_table = table.to(self.alphas().device)

    def expected_latency(self) -> Tensor:
        """E[latency] in milliseconds from the latency table, a
        differentiable float64 scalar (on alpha's device)."""
        return self._table()(self.marginals())

    def subnet_latency(self, choices: Optional[Choices] = None) -> float:
        """The latency table's milliseconds of a subnet (widths between
        group ends interpolated, :func:`.latency.interpolation_weights`),
        computed on the host.

        Args:
            choices (dict[str, int], optional): Unit choices. Defaults to None
                (the current ones).

        Returns:
            float: Milliseconds.
        """
        choices = self.check_choices(choices or self.current_choices())
        widths = [choices[n] for n in self.unit_names]
        ends = torch.tensor([u.ends for u in self.units])
        return self._table().of_subnet(widths, ends)

    def latency_of_rows(self, rows: Tensor) -> Tensor:
        """The latency table's milliseconds of many subnets, on the table's
        device (no host sync).

        Args:
            rows (Tensor): Channels, ``(N, U)``, in unit order.

        Returns:
            Tensor: Float64 milliseconds, ``(N,)``.
        """
        return self._table().of_widths(rows, self.group_ends)

    def _table(self) -> LatencyTable:
        if self.latency_table is None:
            raise ValueError('no latency table: call set_latency_table')
        return self.latency_table

    def subnet_flops(self, choices: Optional[Choices] = None) -> int:
        """Exact FLOPs of a subnet.

        Args:
            choices (dict[str, int], optional): Unit choices. Defaults to None
                (the current ones).

        Returns:
            int: Conv + linear MACs at ``input_shape``.
        """
        choices = self.check_choices(choices or self.current_choices())
        return self.flops_table.count([choices[n] for n in self.unit_names])

    def sample_direct_batch(
        self, num: int, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Draw ``num`` Direct Samples at once, on alpha's device (no host
        sync). The generator is used as ``num`` draws one after another
        would use it.

        Args:
            num (int): Number of subnets.
            generator (torch.Generator, optional): Randomness, on any device
                (draws are made on its device and moved). Defaults to None.

        Returns:
            Tensor: Retained channels, long, shape ``(num, U)``, columns in
            ``unit_names`` order, on alpha's device.
        """
        alphas = self.alphas().detach()
        groups = sample_groups(
            alphas.expand(num, *alphas.shape), generator, self.process
        )
        return self.group_ends.gather(1, (groups - 1).T).T

    def sample_uniform_batch(
        self, num: int, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Draw ``num`` subnets of the original sandwich rule (Yu & Huang,
        the paper's reference [24]; Table 4): one width ratio per subnet,
        the same for every unit, uniform over the ``G`` group boundaries.
        Like :meth:`sample_direct_batch`, on alpha's device, no host sync.

        Args:
            num (int): Number of subnets.
            generator (torch.Generator, optional): Randomness, on any
                device (drawn on its device and moved). Defaults to None.

        Returns:
            Tensor: Retained channels, long, shape ``(num, U)``; every unit
            of a row keeps the same number of groups.
        """
        ends = self.group_ends
        device = ends.device if generator is None else generator.device
        groups = torch.randint(
            0, ends.shape[1], (num, 1), generator=generator, device=device
        ).to(ends.device)
        return ends.gather(1, groups.expand(num, ends.shape[0]).T).T

    def choices_from_rows(self, rows: Tensor) -> List[Choices]:
        """Unit choices from rows of :meth:`sample_direct_batch`: the one
        host read of a search step (layer widths are Python ints).

        Args:
            rows (Tensor): Channels, shape ``(N, U)``, on any device.

        Returns:
            list[dict[str, int]]: One choice dict per row.
        """
        return [dict(zip(self.unit_names, row)) for row in rows.tolist()]

    def choices_from_row(self, row: Tensor) -> Choices:
        """Unit choices from one row of :meth:`sample_direct_batch`."""
        return self.choices_from_rows(row[None])[0]

    def fit_widths(
        self,
        widths: Sequence[float],
        target: float,
        floor: str = 'group',
        cost: Optional[Callable[[Choices], float]] = None,
    ) -> Tuple[Choices, float]:
        """Scale every unit's width by the largest common factor ``s`` in
        ``[0, 1]`` for which the rounded subnet's cost (FLOPs unless
        ``cost`` says otherwise) does not exceed ``target`` (bisection).
        Widths round to multiples of the units' divisor
        (:meth:`DMCPChannelUnit.round_width`).

        Args:
            widths (Sequence[float]): Width of each unit, in unit order (e.g.
                expected channels, or full channels for a uniform-width
                network).
            target (float): FLOPs not to exceed.
            floor (str): Smallest width of a unit: ``'group'`` (its first
                group) or ``'channel'`` (one channel; the divisor with
                one). Defaults to ``'group'``.
            cost (callable, optional): ``cost(choices)``, the value to
                keep within ``target``, non-decreasing in every width
                (e.g. :meth:`subnet_latency`). Defaults to None
                (:meth:`subnet_flops`).

        Returns:
            tuple[dict[str, int], float]: The choices and ``s``.
        """
        if floor not in ('group', 'channel'):
            raise ValueError(
                f"floor must be 'group' or 'channel', got {floor!r}"
            )
        lows = [u.min_channels if floor == 'group' else 1 for u in self.units]

        def scaled(s: float) -> Choices:
            return {
                u.name: u.round_width(s * w, low)
                for u, w, low in zip(self.units, widths, lows)
            }

        cost = self.subnet_flops if cost is None else cost
        if cost(scaled(1.0)) <= target:
            return scaled(1.0), 1.0
        low, high = 0.0, 1.0
        for _ in range(50):
            mid = (low + high) / 2
            if cost(scaled(mid)) <= target:
                low = mid
            else:
                high = mid
        return scaled(low), low

    def uniform_choices(
        self,
        target: float,
        cost: Optional[Callable[[Choices], float]] = None,
    ) -> Tuple[Choices, float]:
        """The uniform-width subnet (every unit keeps the same fraction of
        its channels, as in ``0.5x`` networks) with the most FLOPs (or
        ``cost``) not above ``target``: the baseline DMCP is compared with.

        Args:
            target (float): FLOPs (or cost) not to exceed.
            cost (callable, optional): As in :meth:`fit_widths`. Defaults
                to None (FLOPs).

        Returns:
            tuple[dict[str, int], float]: The choices and the width ratio.
        """
        return self.fit_widths(
            [u.num_channels for u in self.units],
            target,
            floor='channel',
            cost=cost,
        )

    def flops_of(self, mode: str) -> int:
        """Exact FLOPs of the ``'max'``, ``'min'`` or ``'expected'`` subnet."""
        return self.subnet_flops(self.sample_choices(mode))

    # ------------------------------------------------------- Markov scaling
    @contextlib.contextmanager
    def markov_scaling(self) -> Iterator[None]:
        """Within the context the full network runs with every unit's output
        channels scaled by their marginals after each batch norm (Eq. 7,
        Fig. 2b), and batch norms use batch statistics without updating their
        running statistics. The subnet set before is restored on exit.

        A scale point that is a batch norm folds the scale into its affine
        (``DynamicBatchNorm2d.markov_scale``); any other, or every one
        inside :func:`~.layers.reference_path` (as it stands at entry),
        multiplies its output in a forward hook.
        """
        previous = self.current_choices()
        self.set_subnet('max')
        marg = self.marginals()
        handles = []
        folded = []
        fold = shortcuts_enabled()
        try:
            for i, (spec, unit) in enumerate(zip(self.specs, self.units)):
                scale = channel_scale(
                    marg[i], unit.group_sizes, unit.num_channels
                )
                for name in spec.scale_points:
                    layer = self._layers[name]
                    if fold and isinstance(layer, DynamicBatchNorm2d):
                        # into the norm's affine (layers.py), no multiply
                        if layer.markov_scale is not None:
                            scale = layer.markov_scale * scale
                        layer.markov_scale = scale
                        folded.append(layer)
                    else:
                        handles.append(
                            layer.register_forward_hook(_ScaleHook(scale))
                        )
            with self.frozen_norm_stats():
                yield
        finally:
            for h in handles:
                h.remove()
            for layer in folded:
                layer.markov_scale = None
            self.set_subnet(previous)

    @contextlib.contextmanager
    def frozen_norm_stats(self) -> Iterator[None]:
        """Inside the context every batch norm of the supernet normalises with
        batch statistics and leaves its running statistics untouched."""
        for m in self._norms:
            m.update_stats = False
        try:
            yield
        finally:
            for m in self._norms:
                m.update_stats = True


class _ScaleHook:
    """Forward hook multiplying a layer's output channels by a scale."""

    def __init__(self, scale: Tensor) -> None:
        self.scale = scale

    def __call__(self, module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        if isinstance(module, nn.Linear):  # features in the last dim
            return out * self.scale.to(out.dtype)
        shape = (1, -1) + (1,) * (out.dim() - 2)
        # in the output's dtype: under autocast a float32 scale would turn
        # every later activation to float32
        return out * self.scale.to(out.dtype).view(shape)
