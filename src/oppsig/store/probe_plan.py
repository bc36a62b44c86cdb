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

import numpy as np

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
    """A measured forward share rounded up to the grid ``2 ** (k / 4)``: a plan that does not change with a few
    percent of timing noise, and errs on the side of the budget by at most a factor ``2 ** (1 / 4)`` (19%; a
    coarser grid gives away rows the budget pays for, and the rows are the probe's power).

    Example:
        >>> round(quantize_share(0.3), 4), round(quantize_share(0.36), 4), quantize_share(1.0)
        (0.3536, 0.4204, 1.0)
    """
    if not math.isfinite(r) or r <= 0:
        return FORWARD_SHARE
    return 2.0 ** (math.ceil(4 * math.log2(r) - 1e-9) / 4)


def probe_examples(scores: np.ndarray, n: int, outlier_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which ``n`` of the examples to probe: the ``round(n * outlier_share)`` examples of largest ``scores`` (the
    outlier stratum, probed whole), and a seeded uniform sample of the others.

    Opposing signals are carried by outliers with large-magnitude features; a uniform probe of 1,024 of 5,000
    examples holds a fifth of any group, the stratum all of a group of large inputs. Detection weights the
    stratum's losses back (:func:`probe_weights`) where it needs the data set's mean.

    Args:
        scores: (N,) an outlier score per example (:func:`input_scores`); ties go to the lower index.
        n: the probe's size (at most N; all N: every example).
        outlier_share: the share of the probe given to the stratum, in [0, 1] (0: a uniform sample).
        seed: the uniform part's seed.

    Returns:
        ``(probed rows, sorted; the stratum's rows, sorted)``.

    Example:
        >>> rows, top = probe_examples(np.array([0.0, 5.0, 1.0, 9.0, 2.0, 3.0]), 4, 0.5, seed=0)
        >>> top.tolist(), len(rows), set(top) <= set(rows.tolist())
        ([1, 3], 4, True)
    """
    scores = np.asarray(scores, dtype=np.float64)
    total = len(scores)
    if not 0 <= outlier_share <= 1:
        raise ConfigError(f"record.probe_outliers must lie in [0, 1], got {outlier_share}")
    n = min(int(n), total)
    k = int(round(n * outlier_share))
    top = np.sort(np.argsort(-scores, kind="stable")[:k])
    rest = np.setdiff1d(np.arange(total), top)
    g = np.random.default_rng(seed)
    drawn = g.choice(rest, size=n - k, replace=False) if n - k < len(rest) else rest
    return np.sort(np.concatenate([top, drawn])), top


def probe_weights(probe_ids: np.ndarray, outlier_ids: np.ndarray, num_examples: int) -> np.ndarray:
    """Each probed example's weight in the data set's mean loss (summing to 1): ``1 / N`` in the outlier stratum
    (all of it probed), ``(N - k) / ((n - k) N)`` in the uniform sample of the rest (``k`` outliers, ``n`` probed).
    The weighted mean is unbiased for the mean over all ``N`` examples.

    Example:
        >>> probe_weights(np.array([1, 3, 4, 7]), np.array([3]), 10).tolist()
        [0.3, 0.1, 0.3, 0.3]
    """
    probe_ids = np.asarray(probe_ids)
    top = np.isin(probe_ids, np.asarray(outlier_ids))
    k, n = int(top.sum()), len(probe_ids)
    if n == k:
        return np.full(n, 1.0 / n)
    return np.where(top, 1.0 / num_examples, (num_examples - k) / ((n - k) * num_examples))


def input_scores(x, chunk: int = 4096) -> np.ndarray:
    """Each example's distance from the mean input, ``||x_i - mean(x)||`` over its flattened features (float64
    sums; inputs standardised as the model sees them), in chunks of ``chunk`` rows."""
    import torch

    flat = x.reshape(len(x), -1)
    mean = torch.zeros(flat.shape[1], dtype=torch.float64, device=flat.device)
    for s in range(0, len(flat), chunk):
        mean += flat[s:s + chunk].double().sum(0)
    mean /= max(len(flat), 1)
    out = [torch.linalg.vector_norm(flat[s:s + chunk].double() - mean, dim=1) for s in range(0, len(flat), chunk)]
    return torch.cat(out).cpu().numpy() if out else np.zeros(0)
