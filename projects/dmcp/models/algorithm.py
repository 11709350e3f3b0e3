"""The DMCP algorithm: one training step of the search (Section 3.2)."""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import all_reduce_params, get_world_size
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import DefaultScope
from mmrazor.models.algorithms.base import BaseAlgorithm
from torch import Tensor, nn

from ..registry import MODELS, build_model
from ..utils import check_input_shape, is_number, tensor_forward
from .cost import BUDGETS, FlopsCost, build_cost
from .distill import captured_output, kl_to_teacher
from .flops import format_flops, parse_flops
from .latency import load_latency_table
from .losses import DMCPBudgetLoss
from .mutator import DMCPChannelMutator
from .tracer import check_input_size

__all__ = [
    'DMCP',
    'all_reduce_grads',
    'check_optim_wrapper_keys',
    'raise_if_not_finite',
]

WEIGHTS_KEY = 'architecture'
ARCH_KEY = 'mutator'

#: Values of the ablation switches (see :class:`DMCP`).
SANDWICH_RULES = ('variant', 'original')
ARCH_LOSSES = ('full', 'flops_only')
DISTILL_MODES = ('none', 'inplace')


def check_choice(value: object, allowed: Sequence, key: str) -> None:
    """Refuse a config value outside ``allowed`` in one line naming the key.

    Args:
        value (object): The configured value.
        allowed (Sequence): The accepted values.
        key (str): The config key, e.g. ``'model.sandwich'``.
    """
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(
            f'{key} must be one of {tuple(allowed)}, got {value!r}'
        )


def check_optim_wrapper_keys(optim_wrapper: OptimWrapperDict) -> None:
    """Refuse optimizer wrappers without DMCP's two keys, in one line.

    Args:
        optim_wrapper (OptimWrapperDict): The runner's optimizer wrappers.

    Raises:
        KeyError: ``'architecture'`` (the weights) or ``'mutator'`` (alpha)
            is missing.
    """
    keys = set(getattr(optim_wrapper, 'optim_wrappers', {}))
    missing = sorted({WEIGHTS_KEY, ARCH_KEY} - keys)
    if missing:
        raise KeyError(
            f'optim_wrapper is missing {missing}: DMCP needs two wrappers, '
            f"'{WEIGHTS_KEY}' for the weights and '{ARCH_KEY}' for alpha "
            "(constructor='mmrazor.SeparateOptimWrapperConstructor')"
        )


def all_reduce_grads(params: Sequence[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over all processes (a no-op in a
    single process). DMCP's step runs several forward/backward passes before
    one optimizer step, so it reduces once per step instead of letting
    DistributedDataParallel reduce after every backward.

    Args:
        params (Sequence[nn.Parameter]): Parameters whose ``.grad`` to reduce.
    """
    world_size = get_world_size()
    if world_size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        all_reduce_params(grads, op='mean')


def raise_if_not_finite(checks: Sequence[Tuple[str, Tensor]]) -> None:
    """Stop the search if any checked tensor holds a NaN or an infinity.

    The checks of a whole step are read in one host sync at its end (one
    ``.tolist()``), not one ``float()`` per loss: on CUDA every read waits
    for the device. A step that produced a non-finite value raises before
    the runner's hooks run, so no checkpoint and no subnet is written from
    it.

    Args:
        checks (Sequence[tuple[str, Tensor]]): What each tensor is (for the
            message) and the tensor.
    """
    if not checks:
        return
    flags = torch.stack(
        [torch.isfinite(t.detach()).all() for _, t in checks]
    ).tolist()
    for (what, value), ok in zip(checks, flags):
        if not ok:
            v = value.detach().flatten()[:8].tolist()
            raise FloatingPointError(
                f'{what} is not finite ({v}); the search stopped before '
                'writing any subnet from it'
            )


@MODELS.register_module(name='DMCP', force=True)
class DMCP(BaseAlgorithm):
    """Differentiable Markov Channel Pruning (Guo et al., CVPR 2020).

    Each call of :meth:`train_step` runs

    * stage 1, the weight update with the variant sandwich rule: the ``max``
      subnet, the ``min`` subnet and ``num_direct_samples`` subnets drawn by
      the Markov chains (Direct Sampling) each run forward and backward on
      the batch with the cross entropy loss only (Eq. 14); their gradients
      accumulate and the weight optimizer takes **one** step. Subnets run on
      weight slices and without the Markov scaling; only the ``max`` subnet
      updates the batch norms' running statistics.
    * stage 2 (unless ``update_arch=False``, as in warmup), the architecture
      update: the full network runs with every unit's channels scaled by their
      marginals after each batch norm (Eq. 7), the loss is
      ``loss_cls + lambda_reg * loss_reg`` (Eq. 15) and only ``alpha`` gets
      gradients and steps. Batch norms use batch statistics there and keep
      their running statistics.

    The optimizers come as an ``OptimWrapperDict`` whose key
    ``'architecture'`` optimises the network weights and ``'mutator'`` the
    architecture parameters (mmrazor's ``SeparateOptimWrapperConstructor``
    builds it from the two submodules of the same names).

    Args:
        architecture (dict | BaseModel): The supernet, an mmpretrain
            classifier or its config.
        target_flops (int | float | str, optional): Target FLOPs ``T``, as
            MACs or a string such as ``'2.2G'`` or ``'300M'`` (see
            :mod:`projects.dmcp.models.flops` for the convention); required
            with ``budget='flops'``, None with ``budget='latency'``.
            Defaults to None.
        mutator (dict | DMCPChannelMutator, optional): The channel mutator or
            its config. Defaults to None (``dict(type='DMCPChannelMutator')``).
        input_shape (Sequence[int]): ``(C, H, W)`` of one input, at which the
            FLOPs are counted. Defaults to ``(3, 224, 224)``.
        gamma (float): Tolerance ratio of the budget loss margin, in
            ``(0, 1]``. Defaults to 0.99.
        lambda_reg (float): Weight of the budget loss (Eq. 15). Defaults to
            0.1.
        budget_mode (str): Form of the budget loss: ``'bounded'``, whose
            gradient is bounded and, above ``T``, constant;
            ``'official'``, the official code's log form; or ``'paper'``,
            Eq. 13's ``log|E - T|`` as written (see
            :func:`~projects.dmcp.models.losses.budget_loss`). Defaults to
            ``'bounded'``.
        budget (str): What the budget counts: ``'flops'`` (the paper:
            E[FLOPs] against ``target_flops``) or ``'latency'`` (beyond the
            paper: E[latency] from ``latency_table`` against
            ``target_latency``; the same budget loss, band and export,
            :mod:`projects.dmcp.models.cost`). Defaults to ``'flops'``.
        latency_table (str, optional): The per-layer latency table (yaml)
            measured on the target device by
            ``tools/analysis/latency_table.py``; required with
            ``budget='latency'``. Defaults to None.
        target_latency (float, optional): Target latency ``T`` in
            milliseconds, in the table's terms (its device, backend,
            threads and batch); required with ``budget='latency'``.
            Defaults to None.
        num_direct_samples (int): Subnets drawn by Direct Sampling in each
            stage 1 (the sandwich rule's random subnets). Defaults to 2.
        sandwich (str): Stage 1's random subnets: ``'variant'``, the
            paper's variant sandwich rule (each unit's width drawn by its
            own Markov chain, Section 3.2), or ``'original'``, the original
            sandwich rule (one width ratio for every unit, uniform over the
            group boundaries; the ablation of Table 4). Defaults to
            ``'variant'``.
        arch_loss (str): Loss of stage 2: ``'full'``, Eq. 15's
            ``loss_cls + lambda_reg * loss_reg``, or ``'flops_only'``, the
            budget loss alone (no forward pass, alpha gets no task
            gradient; Table 5, first row). Defaults to ``'full'``.
        update_weights_after_warmup (bool): Whether stage 1 also runs in the
            iterative phase. False updates only alpha after warmup (Table 5,
            first two rows) and, with ``lambda_reg=0``, is the
            recoverability experiment of Section 4.2 (Fig. 4). Defaults to
            True.
        distill (str): Stage 1's loss for the subnets other than ``max``:
            ``'none'``, the head's loss on the labels (the paper, Eq. 14), or
            ``'inplace'``, the official code's in-place distillation: the
            KL divergence (T = 1) to the ``max`` subnet's detached output,
            while ``max`` learns from the labels. Label smoothing (the
            official MobileNetV2 setting, 0.1) is the head's
            ``loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)``.
            Defaults to ``'none'``.
        seed (int, optional): Seed of the generator that draws subnets.
            Defaults to None (drawn from torch's global generator, which the
            runner seeds identically on every rank).
        data_preprocessor (dict | nn.Module, optional): Defaults to None (the
            architecture's).
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(
        self,
        architecture: Union[BaseModel, Dict],
        target_flops: Optional[Union[int, float, str]] = None,
        mutator: Optional[Union[DMCPChannelMutator, Dict]] = None,
        input_shape: Sequence[int] = (3, 224, 224),
        gamma: float = 0.99,
        lambda_reg: float = 0.1,
        budget_mode: str = 'bounded',
        budget: str = 'flops',
        latency_table: Optional[str] = None,
        target_latency: Optional[float] = None,
        num_direct_samples: int = 2,
        sandwich: str = 'variant',
        arch_loss: str = 'full',
        update_weights_after_warmup: bool = True,
        distill: str = 'none',
        seed: Optional[int] = None,
        data_preprocessor: Optional[Union[Dict, nn.Module]] = None,
        init_cfg: Optional[Dict] = None,
    ) -> None:
        if (
            isinstance(data_preprocessor, dict)
            and 'type' not in data_preprocessor
            and isinstance(architecture, dict)
        ):
            # The runner passes mmpretrain's top-level, type-less
            # `data_preprocessor` here: it belongs to the classifier.
            architecture = dict(architecture)
            architecture.setdefault('data_preprocessor', data_preprocessor)
            data_preprocessor = None
        if (
            isinstance(architecture, dict)
            and '_scope_' not in architecture
            and DefaultScope.get_current_instance() is None
        ):
            # Built outside a runner: the classifier is mmpretrain's.
            architecture = dict(architecture, _scope_='mmpretrain')
        super().__init__(architecture, data_preprocessor, init_cfg)
        if not (
            isinstance(num_direct_samples, int) and num_direct_samples >= 0
        ):
            raise ValueError(
                'model.num_direct_samples must be an integer '
                f'>= 0, got {num_direct_samples!r}'
            )
        check_choice(budget, BUDGETS, 'model.budget')
        check_choice(sandwich, SANDWICH_RULES, 'model.sandwich')
        check_choice(arch_loss, ARCH_LOSSES, 'model.arch_loss')
        check_choice(distill, DISTILL_MODES, 'model.distill')
        if not isinstance(update_weights_after_warmup, bool):
            raise ValueError(
                'model.update_weights_after_warmup must be True or False, '
                f'got {update_weights_after_warmup!r}'
            )
        if arch_loss == 'flops_only' and not lambda_reg:
            raise ValueError(
                "model.arch_loss='flops_only' needs model.lambda_reg > 0: "
                'with lambda_reg=0 alpha would get no gradient at all'
            )
        if distill == 'inplace' and not isinstance(
            getattr(self.architecture, 'head', None), nn.Module
        ):
            raise ValueError(
                "model.distill='inplace' needs a classifier with a head "
                "module (the max subnet's logits are read from it)"
            )
        self.sandwich = sandwich
        self.arch_loss = arch_loss
        self.update_weights_after_warmup = update_weights_after_warmup
        self.distill = distill
        self.input_shape = check_input_shape(input_shape)
        if mutator is None:
            mutator = dict(type='DMCPChannelMutator')
        if isinstance(mutator, dict):
            mutator = build_model(mutator)
        if not isinstance(mutator, DMCPChannelMutator):
            raise TypeError(
                "model.mutator must build projects.dmcp's "
                f'DMCPChannelMutator, got {type(mutator)}'
            )
        self.mutator = mutator
        try:
            self.mutator.prepare_from_supernet(
                self.architecture, self.input_shape, tensor_forward
            )
        except RuntimeError as e:
            raise ValueError(
                f'model.input_shape={list(self.input_shape)} '
                'does not run through the network: '
                f'{str(e).strip().splitlines()[0]}'
            ) from e
        try:
            check_input_size(self.mutator.trace)
        except ValueError as e:
            raise ValueError(f'model.input_shape: {e}') from e
        self.full_flops = self.mutator.flops_of('max')
        self.min_flops = self.mutator.flops_of('min')
        self.target_flops: Optional[float] = None
        self.target_latency: Optional[float] = None
        if budget == 'flops':
            self.cost = self._flops_cost(
                target_flops, latency_table, target_latency
            )
        else:
            self.cost = self._latency_cost(
                target_flops, latency_table, target_latency
            )
        self.budget = DMCPBudgetLoss(
            self.cost.target, gamma, lambda_reg, budget_mode, self.cost.unit
        )
        self.num_direct_samples = num_direct_samples
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.sampler = torch.Generator().manual_seed(int(seed))
        # Figures of the last step: the stage 1 subnets' FLOPs (host ints,
        # logged by the estimator hook), and the budget's expectation
        # (E[FLOPs] or E[latency]) as a tensor on the model's device.
        self.last_subnet_flops: Dict[str, int] = {}
        self.last_expected: Optional[Tensor] = None

    def _flops_cost(
        self,
        target_flops: Optional[Union[int, float, str]],
        latency_table: Optional[str],
        target_latency: Optional[float],
    ) -> FlopsCost:
        """The FLOPs budget, its target checked in one line."""
        for key, value in (
            ('latency_table', latency_table),
            ('target_latency', target_latency),
        ):
            if value is not None:
                raise ValueError(
                    f'model.{key}={value!r} is set, but model.budget is '
                    "'flops'; set model.budget='latency' to budget latency"
                )
        if target_flops is None:
            raise ValueError(
                "model.target_flops is required with model.budget='flops'"
            )
        try:
            self.target_flops = parse_flops(target_flops)
        except (TypeError, ValueError) as e:
            raise ValueError(f'model.target_flops: {e}') from e
        if not self.min_flops <= self.target_flops <= self.full_flops:
            raise ValueError(
                f'model.target_flops={format_flops(self.target_flops)} is '
                f'outside what the supernet can reach at input '
                f'{list(self.input_shape)}: from '
                f'{format_flops(self.min_flops)} (min subnet) to '
                f'{format_flops(self.full_flops)} (full network)'
            )
        return build_cost('flops', self.mutator, self.target_flops)

    def _latency_cost(
        self,
        target_flops: Optional[Union[int, float, str]],
        latency_table: Optional[str],
        target_latency: Optional[float],
    ) -> FlopsCost:
        """The latency budget: reads the table and checks it and the
        target, each in one line naming the key or the file."""
        if target_flops is not None:
            raise ValueError(
                f'model.target_flops={target_flops!r} is set, but '
                "model.budget='latency' budgets model.target_latency (ms); "
                'set model.target_flops=None'
            )
        if latency_table is None:
            raise ValueError(
                "model.budget='latency' needs model.latency_table, a yaml "
                'measured on the target device by '
                'tools/analysis/latency_table.py'
            )
        try:
            doc = load_latency_table(str(latency_table))
            self.mutator.set_latency_table(
                doc, f'model.latency_table={latency_table}'
            )
        except (FileNotFoundError, ValueError) as e:
            message = str(e)
            if not message.startswith('model.latency_table'):
                message = f'model.latency_table: {message}'
            raise ValueError(message) from None
        if not (is_number(target_latency) and target_latency > 0):
            raise ValueError(
                "model.budget='latency' needs model.target_latency, a "
                f'number of milliseconds > 0, got {target_latency!r}'
            )
        table = self.mutator.latency_table
        groups = self.mutator.units[0].num_groups
        full = table.lookup([groups] * table.num_units)
        low = table.lookup([1] * table.num_units)
        if not low <= target_latency <= full:
            raise ValueError(
                f'model.target_latency={target_latency} ms is outside what '
                f'the supernet can reach by {latency_table}: from '
                f'{low:.3f} ms (min subnet) to {full:.3f} ms (full network)'
            )
        self.target_latency = float(target_latency)
        return build_cost(
            'latency', self.mutator, self.target_latency, str(latency_table)
        )

    @property
    def gamma(self) -> float:
        """Tolerance ratio of the budget margin."""
        return self.budget.gamma

    @property
    def target(self) -> float:
        """The budget's target ``T``: MACs, or ms under the latency
        budget."""
        return self.cost.target

    # ------------------------------------------------------------- training
    def train_step(
        self,
        data: Union[dict, tuple, list],
        optim_wrapper: OptimWrapperDict,
        update_arch: bool = True,
    ) -> Dict[str, Tensor]:
        """One DMCP iteration: stage 1, then stage 2 unless ``update_arch``
        is False (warmup).

        Args:
            data (dict | tuple | list): A batch from the dataloader.
            optim_wrapper (OptimWrapperDict): Wrappers under the keys
                ``'architecture'`` (weights) and ``'mutator'`` (alpha).
            update_arch (bool): Whether to run stage 2. Defaults to True.

        Returns:
            dict[str, Tensor]: Losses to log.
        """
        weights_ow, arch_ow = self._split_optim_wrapper(optim_wrapper)
        checks = [('alpha', self.mutator.alphas())]
        data = self.data_preprocessor(data, True)
        if update_arch and not self.update_weights_after_warmup:
            log_vars, self.last_subnet_flops = {}, {}
        else:
            log_vars = self._weight_step(data, weights_ow, checks)
        if update_arch:
            log_vars.update(self._arch_step(data, arch_ow, checks))
        raise_if_not_finite(checks)
        return log_vars

    def _weight_step(
        self,
        data: dict,
        optim_wrapper: OptimWrapper,
        checks: Optional[list] = None,
    ) -> Dict[str, Tensor]:
        """Stage 1: the variant sandwich rule, one optimizer step. What to
        check for finiteness is appended to ``checks``."""
        checks = [] if checks is None else checks
        if self.sandwich == 'original':
            rows = self.mutator.sample_uniform_batch(
                self.num_direct_samples, self.sampler
            )
        else:
            rows = self.mutator.sample_direct_batch(
                self.num_direct_samples, self.sampler
            )
        plan = [('max', 'max'), ('min', 'min')] + [
            (f'direct{i}', choices)
            for i, choices in enumerate(self.mutator.choices_from_rows(rows))
        ]
        log_vars, total = {}, 0.0
        self.last_subnet_flops = {}
        teacher = None
        for tag, subnet in plan:
            choices = self.mutator.set_subnet(subnet)
            self.last_subnet_flops[tag] = self.mutator.subnet_flops(choices)
            with optim_wrapper.optim_context(self):
                if tag == 'max':
                    losses, teacher = self._max_forward(data)
                else:
                    with self.mutator.frozen_norm_stats():
                        losses = self._student_forward(data, teacher)
            loss, parsed = self.parse_losses(losses)
            checks.append((f'the task loss of the {tag} subnet', loss))
            optim_wrapper.backward(loss)
            log_vars[f'{tag}.loss'] = parsed['loss']
            total += parsed['loss']
        self.mutator.set_subnet('max')
        all_reduce_grads(self._weight_params())
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        log_vars['loss'] = total
        return log_vars

    def _max_forward(self, data: dict) -> Tuple[dict, Optional[Tensor]]:
        """The ``max`` subnet's losses on the labels and, for in-place
        distillation, its logits (read from the head inside the same
        forward pass)."""
        if self.distill == 'none':
            return self.architecture(**data, mode='loss'), None
        with captured_output(self.architecture.head) as outputs:
            losses = self.architecture(**data, mode='loss')
        return losses, outputs[-1].detach()

    def _student_forward(self, data: dict, teacher: Optional[Tensor]) -> dict:
        """A smaller subnet's losses: on the labels, or the KL divergence to
        the ``max`` subnet's logits under in-place distillation."""
        if teacher is None:
            return self.architecture(**data, mode='loss')
        logits = self.architecture(**data, mode='tensor')
        return {'loss_kd': kl_to_teacher(logits, teacher)}

    def _arch_step(
        self,
        data: dict,
        optim_wrapper: OptimWrapper,
        checks: Optional[list] = None,
    ) -> Dict[str, Tensor]:
        """Stage 2: Markov-scaled full network, alpha-only step (Eq. 15).
        What to check for finiteness is appended to ``checks``."""
        checks = [] if checks is None else checks
        if self.arch_loss == 'flops_only':
            return self._flops_only_step(optim_wrapper, checks)
        with (
            optim_wrapper.optim_context(self.mutator),
            self.mutator.markov_scaling(),
        ):
            losses = self.architecture(**data, mode='loss')
            loss_cls, _ = self.parse_losses(losses)
            expected = self.cost.expected()
            loss_reg = self.budget(expected).to(loss_cls.dtype)
            loss = loss_cls + loss_reg
        checks.append(('the task loss of the architecture step', loss_cls))
        checks.append(('the budget loss (loss_reg)', loss_reg))
        self._step_alpha(optim_wrapper, loss, expected, checks)
        return {
            'arch.loss_cls': loss_cls.detach(),
            'arch.loss_reg': loss_reg.detach(),
        }

    def _flops_only_step(
        self, optim_wrapper: OptimWrapper, checks: list
    ) -> Dict[str, Tensor]:
        """Stage 2 of Table 5's first row: alpha steps on the budget loss
        alone; no forward pass, so no task gradient reaches alpha."""
        with optim_wrapper.optim_context(self.mutator):
            expected = self.cost.expected()
            loss_reg = self.budget(expected).float()
        checks.append(('the budget loss (loss_reg)', loss_reg))
        self._step_alpha(optim_wrapper, loss_reg, expected, checks)
        return {'arch.loss_reg': loss_reg.detach()}

    def _step_alpha(
        self,
        optim_wrapper: OptimWrapper,
        loss: Tensor,
        expected: Tensor,
        checks: list,
    ) -> None:
        """Back-propagate ``loss`` to alpha only, average over ranks, step,
        and record the budget's expectation (E[FLOPs] or E[latency])."""
        alphas = self.mutator.arch_parameters()
        optim_wrapper.backward(loss, inputs=alphas)
        all_reduce_grads(alphas)
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        checks.append(('alpha after the update', self.mutator.alphas()))
        self.last_expected = expected.detach()

    def _weight_params(self) -> List[nn.Parameter]:
        return [p for p in self.architecture.parameters() if p.requires_grad]

    def _split_optim_wrapper(self, optim_wrapper: OptimWrapperDict) -> tuple:
        check_optim_wrapper_keys(optim_wrapper)
        return optim_wrapper[WEIGHTS_KEY], optim_wrapper[ARCH_KEY]

    # ---------------------------------------------------- sampler in ckpt
    def _save_to_state_dict(
        self, destination: dict, prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + 'sampler_state'] = self.sampler.get_state()

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
        key = prefix + 'sampler_state'
        if key in state_dict:
            self.sampler.set_state(state_dict[key].cpu().to(torch.uint8))
            if key in unexpected_keys:
                unexpected_keys.remove(key)
