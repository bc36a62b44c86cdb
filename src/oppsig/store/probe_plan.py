"""How much of a mini-batch run to probe: the probe subset's size and interval from a cost budget.

A mini-batch step trains on ``B`` examples; a probe measures ``n`` examples with one
no-grad forward at the same parameters. With a forward costing ``r`` of a training
step's forward and backward per example (:data:`FORWARD_SHARE`), probing every ``k``
steps costs ``n * r / (k * B)`` of training time. Over ``T`` steps the budget ``b``
therefore buys ``C = b * T * B / r`` probed values, shared between examples and rows
(``n * rows <= C``). :func:`plan_probe` gives the examples first, up to
:data:`MIN_EXAMPLES` (groups are found among probed examples: a group of 1% of the
data needs about a thousand of them to have ten members probed), then rows, and
never fewer than :data:`MIN_ROWS` rows (anti-phase needs a series): with a small
budget the probe shrinks before its series does.

``oppsig train`` measures ``r`` on the run's own model before training (a training step and a probe
forward, timed on a copy of the model, rounded up by :func:`quantize_share`) rather than assuming it: a
convolutional network's forward on a large probe batch can cost as much per example as its training
step. What the probe actually cost is measured by the training loop and printed at the end (``probe``
in ``meta.json``).

    >>> p = plan_probe(5000, batch_size=128, steps=2000)
    >>> (p.n, p.every, p.rows, round(p.share, 3))
    (1024, 27, 75, 0.099)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

FORWARD_SHARE = 1 / 3
"""A no-grad forward per example over a training step's forward and backward per example (the backward costs
about twice the forward; the optimiser step and the probe's larger batches are left out). The measured share of
each run is printed beside the plan."""

MIN_EXAMPLES = 1024
MIN_ROWS = 50
TARGET_ROWS = 200


@dataclass(frozen=True)
class ProbePlan:
    """A probe of ``n`` examples every ``every`` steps: ``rows`` rows over the run, ``share`` of training time."""

    n: int
    every: int
    rows: int
    share: float  # planned cost over training time (see FORWARD_SHARE)
    budget: float
    forward_share: float = FORWARD_SHARE  # the cost model's probe forward per example over a training step's

    def describe(self, num_examples: int) -> str:
        """One line: what was chosen and what it costs."""
        who = "every example" if self.n >= num_examples else f"{self.n:,} of {num_examples:,} examples (seeded)"
        return (f"probe: {who} every {self.every} steps ({self.rows} rows), planned {100 * self.share:.1f}% "
                f"of training time (budget {100 * self.budget:g}%; a probe forward costs {self.forward_share:.2g} "
                "of a training step per example)")


def plan_probe(num_examples: int, batch_size: int, steps: int, budget: float = 0.10, *,
               every: int | None = None, n: int | None = None,
               forward_share: float = FORWARD_SHARE) -> ProbePlan:
    """The probe of a mini-batch run of ``steps`` steps over ``num_examples`` examples in batches of ``batch_size``.

    Args:
        budget: the probe's cost at most, as a share of training time.
        every, n: settings the user fixed (the other one is chosen within the budget; both fixed: kept as
            given, and ``share`` says what they cost, over budget or not).
        forward_share: the cost of a forward per example relative to a training step per example.

    Raises:
        ConfigError: a budget outside (0, 1], or sizes that are not positive.
    """
    if not 0 < budget <= 1:
        raise ConfigError(f"record.budget must lie in (0, 1], got {budget}")
    if min(num_examples, batch_size, steps) <= 0:
        raise ConfigError(f"a probe needs examples, a batch size and steps > 0, got {num_examples}, "
                          f"{batch_size}, {steps}")
    per_row = budget * batch_size / forward_share  # probed values per step of training the budget buys
    if n is None and every is None:
        n = min(num_examples, max(MIN_EXAMPLES, int(steps * per_row // TARGET_ROWS)))
        every = max(1, math.ceil(n / per_row))
        if len(range(0, steps, every)) < MIN_ROWS:  # too few rows: a smaller probe, more often
            every = max(1, steps // MIN_ROWS)
            n = None
    if n is None:
        n = max(1, min(num_examples, int(every * per_row)))
    n = min(n, num_examples)
    if every is None:
        every = max(1, math.ceil(n / per_row))
    rows = len(range(0, steps, every))
    return ProbePlan(n=n, every=every, rows=rows, share=n * forward_share / (every * batch_size), budget=budget,
                     forward_share=forward_share)


def quantize_share(r: float) -> float:
    """A measured forward share rounded up to the grid ``2 ** (k / 2)``: a plan that does not change with a few
    percent of timing noise, and errs on the side of the budget.

    Example:
        >>> round(quantize_share(0.3), 4), quantize_share(0.36), quantize_share(1.0)
        (0.3536, 0.5, 1.0)
    """
    if not math.isfinite(r) or r <= 0:
        return FORWARD_SHARE
    return 2.0 ** (math.ceil(2 * math.log2(r) - 1e-9) / 2)
