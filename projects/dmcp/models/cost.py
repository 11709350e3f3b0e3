"""What the search's budget counts: FLOPs (the paper) or latency (beyond it).

``model.budget`` selects one; the algorithm, the export and the estimator
hook see it only through the interface of :class:`FlopsCost`, so the FLOPs
and the latency budget share one code path:

* :meth:`~FlopsCost.expected`: the differentiable expectation the budget
  loss (Eq. 13) compares with the target (Eq. 12 for FLOPs; the latency
  table's E[latency], :mod:`.latency`), on alpha's device without a host
  sync;
* :meth:`~FlopsCost.of_choices`: one subnet's exact value, on the host
  (Expected Sampling fits widths to the target with it);
* :meth:`~FlopsCost.of_rows`: many subnets at once, on the device (the
  Direct Samples in the band);
* formatting, the scalars the hook logs and the subnet yaml's ``meta``.
"""

from typing import Any, Dict, Optional, Union

from torch import Tensor

from .flops import format_flops

__all__ = ['BUDGETS', 'FlopsCost', 'LatencyCost', 'build_cost']

#: Values of ``model.budget``.
BUDGETS = ('flops', 'latency')

Choices = Dict[str, int]


class FlopsCost:
    """The FLOPs budget: multiply-accumulates of the convolution and linear
    layers at the search's input shape (Eq. 9-12).

    Args:
        mutator (DMCPChannelMutator): The prepared mutator.
        target (float): Target FLOPs ``T`` (MACs).
    """

    #: ``model.budget``'s value.
    name = 'flops'
    #: What E[...] is of, in logs.
    label = 'FLOPs'
    #: The smallest meaningful amount (one MAC): the budget loss's clamp.
    unit = 1.0

    def __init__(self, mutator, target: float) -> None:
        self.mutator = mutator
        self.target = float(target)

    def expected(self) -> Tensor:
        """E[FLOPs] (Eq. 12), a differentiable float64 scalar."""
        return self.mutator.expected_flops()

    def of_choices(self, choices: Choices) -> float:
        """Exact FLOPs of one subnet.

        Args:
            choices (dict[str, int]): Unit name -> channels.

        Returns:
            float: MACs.
        """
        return float(self.mutator.subnet_flops(choices))

    def of_rows(self, rows: Tensor) -> Tensor:
        """FLOPs of many subnets, on their device.

        Args:
            rows (Tensor): Channels, ``(N, U)``, in unit order.

        Returns:
            Tensor: Float64 MACs, ``(N,)``, rounded to whole MACs.
        """
        return self.mutator.flops_table(rows).round()

    def format(self, value: Union[int, float]) -> str:
        """A value for logs (``7.0M``)."""
        return format_flops(value)

    def record(self, value: float) -> Union[int, float]:
        """A value as the yaml writes it (whole MACs)."""
        return int(round(value))

    def scalars(self) -> Dict[str, float]:
        """What the estimator hook logs after every iteration (one host
        read of E[FLOPs]).

        Returns:
            dict[str, float]: ``expected_mflops`` and ``target_mflops``.
        """
        expected = float(self.expected().detach())
        return dict(
            expected_mflops=expected / 1e6, target_mflops=self.target / 1e6
        )

    def meta(self, choices: Choices) -> Dict[str, Any]:
        """The budget's fields of a subnet yaml's ``meta``.

        Args:
            choices (dict[str, int]): The exported subnet.

        Returns:
            dict: ``target_flops``, ``flops`` (the subnet) and
            ``expected_flops`` (the search's final E[FLOPs]).
        """
        return dict(
            target_flops=int(self.target),
            flops=int(self.mutator.subnet_flops(choices)),
            expected_flops=self.record(float(self.expected().detach())),
        )


class LatencyCost(FlopsCost):
    """The latency budget: milliseconds from a per-layer latency table
    measured on the target device (:mod:`.latency`; the mutator holds it,
    :meth:`DMCPChannelMutator.set_latency_table`).

    Args:
        mutator (DMCPChannelMutator): The prepared mutator, with a table.
        target (float): Target latency ``T`` in milliseconds.
        table_file (str): The table's file, for the yaml's meta. Defaults
            to ''.
    """

    name = 'latency'
    label = 'latency'
    unit = 1e-6  # a nanosecond

    def __init__(self, mutator, target: float, table_file: str = '') -> None:
        super().__init__(mutator, target)
        self.table_file = table_file

    def expected(self) -> Tensor:
        """E[latency] in ms, a differentiable float64 scalar."""
        return self.mutator.expected_latency()

    def of_choices(self, choices: Choices) -> float:
        """The table's milliseconds of one subnet (interpolated between
        group ends), on the host."""
        return self.mutator.subnet_latency(choices)

    def of_rows(self, rows: Tensor) -> Tensor:
        """The table's milliseconds of many subnets, on their device."""
        return self.mutator.latency_of_rows(rows)

    def format(self, value: Union[int, float]) -> str:
        """A value for logs (``2.631 ms``)."""
        return f'{float(value):.3f} ms'

    def record(self, value: float) -> Union[int, float]:
        """A value as the yaml writes it (ms, to a nanosecond)."""
        return round(float(value), 6)

    def scalars(self) -> Dict[str, float]:
        """``expected_latency_ms``, ``target_latency_ms`` and, beside them,
        ``expected_mflops``."""
        expected = float(self.expected().detach())
        flops = float(self.mutator.expected_flops().detach())
        return dict(
            expected_latency_ms=expected,
            target_latency_ms=self.target,
            expected_mflops=flops / 1e6,
        )

    def meta(self, choices: Choices) -> Dict[str, Any]:
        """``budget``, ``target_latency_ms``, ``latency_ms`` (the table's
        value of the subnet), ``expected_latency_ms``, the table's
        ``latency_table`` (file, device, backend, threads, batch), and the
        subnet's ``flops`` and the final ``expected_flops``."""
        table = self.mutator.latency_table.meta
        expected = float(self.expected().detach())
        return dict(
            budget='latency',
            target_latency_ms=self.record(self.target),
            latency_ms=self.record(self.of_choices(choices)),
            expected_latency_ms=self.record(expected),
            latency_table=dict(
                file=self.table_file,
                device=table.get('device'),
                backend=table.get('backend'),
                threads=table.get('threads'),
                batch=table.get('batch'),
            ),
            flops=int(self.mutator.subnet_flops(choices)),
            expected_flops=int(
                round(float(self.mutator.expected_flops().detach()))
            ),
        )


def build_cost(
    budget: str,
    mutator,
    target: float,
    table_file: Optional[str] = None,
) -> FlopsCost:
    """The cost of ``model.budget``.

    Args:
        budget (str): One of :data:`BUDGETS`.
        mutator (DMCPChannelMutator): The prepared mutator (with its
            latency table for ``'latency'``).
        target (float): The target, MACs or milliseconds.
        table_file (str, optional): The latency table's file. Defaults to
            None.

    Returns:
        FlopsCost: A :class:`FlopsCost` or :class:`LatencyCost`.
    """
    if budget == 'latency':
        return LatencyCost(mutator, target, table_file or '')
    return FlopsCost(mutator, target)
