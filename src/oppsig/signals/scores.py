"""Per-example scores users already reach for, computed from a run's record: Data Maps, forgetting, EL2N, AUM.

Each function takes numpy arrays read from a run (:func:`oppsig.open_run`): ``run.losses`` (R, N) per-example
losses, ``run.correct`` (R, N) bools, ``run.logits`` (R', N, C) where ``record.logits_every`` stored them, and the
labels (N,) of the data set's rows. Rows are the recorded steps (the "epochs" of the papers: every recorded row
is one observation of every example); a row at which an example was not measured holds NaN in ``losses`` and
``logits`` and is left out of that example's statistics (pass ``measured`` for ``correct``, which has no NaN).
An example measured at no row gets NaN.

- ``confidence``: mean of the true-class probability (Data Maps); flags low values.
- ``variability``: standard deviation of the true-class probability (Data Maps); flags high values.
- ``loss_variance``: variance of the loss; flags high values.
- ``forgetting``: transitions correct -> incorrect (Toneva et al.), never learned: inf; flags many.
- ``el2n``: mean L2 norm of softmax(logits) - onehot(label) (Paul et al.); flags high values.
- ``aum``: mean margin logit_true - max other logit (Pleiss et al.); flags low values.

Example:
    >>> import numpy as np
    >>> loss = np.array([[0.1, 2.0], [0.3, np.nan], [0.2, 1.0]])
    >>> conf, var = data_maps(p_true_from_loss(loss))
    >>> np.round(conf, 3).tolist(), np.round(loss_variance(loss), 3).tolist()
    ([0.821, 0.252], [0.007, 0.25])
    >>> forgetting_counts(np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)).tolist()
    [1.0, inf]
"""

from __future__ import annotations

import numpy as np

from .result import SignalsError

FLAGS = {"confidence": -1, "variability": +1, "loss_variance": +1, "forgetting": +1, "el2n": +1, "aum": -1}
"""The direction in which each score flags an example: +1 high values, -1 low values (``FLAGS[name] * score``
ranks the flagged examples first)."""


def _matrix(a, name: str, ndim: int = 2) -> np.ndarray:
    """``a`` as a float64 array of ``ndim`` dimensions, else a one-line SignalsError."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim:
        want = "(rows, examples)" if ndim == 2 else "(rows, examples, classes)"
        raise SignalsError(f"{name} has shape {a.shape}; pass a {ndim}-D array {want}, e.g. run.{name}[:]")
    return a


def _labels(labels, logits: np.ndarray) -> np.ndarray:
    """The labels as int64 (N,) valid class indices of ``logits`` (R, N, C), else a one-line SignalsError."""
    y = np.asarray(labels)
    n, c = logits.shape[1], logits.shape[2]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise SignalsError(f"labels have shape {y.shape} and dtype {y.dtype}; pass ({n},) integer class indices, "
                           "one per column of the logits")
    if n and (y.min() < 0 or y.max() >= c):
        raise SignalsError(f"labels lie in {y.min()}..{y.max()} but the logits have {c} classes; pass labels in "
                           f"0..{c - 1}")
    return y.astype(np.int64)


def _row_mean(v: np.ndarray) -> np.ndarray:
    """The mean over rows of (R, N) ``v`` ignoring NaN; NaN for a column with no value (no warning)."""
    ok = ~np.isnan(v)
    n = ok.sum(axis=0)
    return np.where(n > 0, np.where(ok, v, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def _row_var(v: np.ndarray) -> np.ndarray:
    """The population variance (divided by the count) over rows of (R, N) ``v`` ignoring NaN."""
    mean = _row_mean(v)
    return _row_mean((v - mean) ** 2)


def p_true_from_loss(losses) -> np.ndarray:
    """The true-class probability ``exp(-loss)`` (R, N) of cross-entropy losses (R, N); NaN stays NaN.

    Only for a cross-entropy record (``train.loss: ce``): there the loss is ``-log p_true``.

    Raises:
        SignalsError: when ``losses`` is not 2-D.
    """
    return np.exp(-_matrix(losses, "losses"))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def p_true_from_logits(logits, labels) -> np.ndarray:
    """The true-class probability ``softmax(logits)[label]`` (R, N) from logits (R, N, C) and labels (N,).

    Raises:
        SignalsError: when ``logits`` is not 3-D or the labels do not fit it.
    """
    z = _matrix(logits, "logits", 3)
    y = _labels(labels, z)
    return np.take_along_axis(_softmax(z), y[None, :, None], axis=2)[..., 0]


def data_maps(p_true) -> tuple[np.ndarray, np.ndarray]:
    """Data Maps' ``(confidence, variability)`` (N,) each, from the true-class probability (R, N).

    Swayamdipta et al. 2020 (*Dataset Cartography*, EMNLP), eqs. 1-2: over the E epochs,
    ``confidence = (1/E) sum_e p_e(y* | x)`` and ``variability = sqrt((1/E) sum_e (p_e(y* | x) - confidence)^2)``
    (the population standard deviation). Here the E epochs are the rows at which the example was measured.
    Hard-to-learn examples have low confidence; ambiguous ones high variability.

    Example:
        >>> c, v = data_maps(np.array([[0.2, 1.0], [0.6, np.nan]]))
        >>> c.tolist(), np.round(v, 6).tolist()
        ([0.4, 1.0], [0.2, 0.0])

    Raises:
        SignalsError: when ``p_true`` is not 2-D.
    """
    p = _matrix(p_true, "p_true")
    return _row_mean(p), np.sqrt(_row_var(p))


def loss_variance(losses) -> np.ndarray:
    """The variance (N,) over rows of each example's loss (divided by the number of rows it was measured at).

    Raises:
        SignalsError: when ``losses`` is not 2-D.
    """
    return _row_var(_matrix(losses, "losses"))


def _measured(correct, measured) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(correct)
    if c.ndim != 2:
        raise SignalsError(f"correct has shape {c.shape}; pass a 2-D array (rows, examples), e.g. run.correct[:]")
    ok = ~np.isnan(c) if np.issubdtype(c.dtype, np.floating) else np.ones(c.shape, dtype=bool)
    if measured is not None:
        m = np.asarray(measured, dtype=bool)
        if m.shape != c.shape:
            raise SignalsError(f"measured has shape {m.shape} but correct has {c.shape}; pass one of the same shape, "
                               "e.g. ~np.isnan(losses)")
        ok &= m
    return np.where(ok, c, 0).astype(bool), ok


def never_learned(correct, measured=None) -> np.ndarray:
    """Whether each example (N,) was measured at some row and classified correctly at none.

    Args:
        correct: (R, N) bool, or float with NaN where not measured.
        measured: optional (R, N) bool, e.g. ``~np.isnan(losses)``: the rows at which each example was measured.

    Raises:
        SignalsError: when ``correct`` is not 2-D or ``measured`` has another shape.
    """
    c, ok = _measured(correct, measured)
    return ok.any(axis=0) & ~c.any(axis=0)


def forgetting_counts(correct, measured=None, never: float = np.inf) -> np.ndarray:
    """Toneva et al. 2019's forgetting events of each example (N,), float.

    Toneva et al. 2019 (*An Empirical Study of Example Forgetting during Deep Neural Network Learning*, ICLR),
    section 3: a forgetting event happens when an example classified correctly at one presentation is
    misclassified at the next (``acc_t > acc_{t+1}``); examples never learned during training count as forgotten
    infinitely often (the most forgettable). Here consecutive presentations are consecutive rows at which the
    example was measured; the reverse transitions (incorrect -> correct, learning events) do not count.

    Args:
        correct: (R, N) bool, or float with NaN where not measured.
        measured: optional (R, N) bool, e.g. ``~np.isnan(losses)``.
        never: the value of an example that is never learned (default ``inf``, Toneva's ordering).

    Returns:
        (N,) float: the number of forgetting events; ``never`` for a never-learned example, NaN for an example
        measured at no row.

    Example:
        >>> forgetting_counts(np.array([[1, 1], [0, 1], [1, 0], [0, 1]], dtype=bool)).tolist()
        [2.0, 1.0]

    Raises:
        SignalsError: when ``correct`` is not 2-D or ``measured`` has another shape.
    """
    c, ok = _measured(correct, measured)
    rows = np.arange(c.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(ok, rows, -1), axis=0)  # the last measured row at or before each row
    prev = np.vstack([np.full((1, c.shape[1]), -1), last[:-1]])  # ... strictly before
    prev_correct = np.take_along_axis(c, np.maximum(prev, 0), axis=0) & (prev >= 0)
    events = (ok & prev_correct & ~c).sum(axis=0).astype(np.float64)
    events[ok.any(axis=0) & ~c.any(axis=0)] = never
    events[~ok.any(axis=0)] = np.nan
    return events


def _per_row(logits, labels, rows) -> tuple[np.ndarray, np.ndarray]:
    z = _matrix(logits, "logits", 3)
    y = _labels(labels, z)
    if rows is not None:
        z = z[np.asarray(rows) if not isinstance(rows, slice) else rows]
    return z, y


def el2n(logits, labels, rows=None) -> np.ndarray:
    """EL2N (N,): the mean over rows of ``|| softmax(logits) - onehot(label) ||_2``.

    Paul et al. 2021 (*Deep Learning on a Data Diet*, NeurIPS), section 2: the error L2-norm score
    ``E || p(w_t, x) - y ||_2`` at an early training time t, the expectation over weights (they average over
    10 initialisations). Here it is averaged over the recorded rows ``rows`` (an index array or slice of the
    logits' rows; default all), e.g. the early ones. High EL2N: hard or mislabelled examples.

    Args:
        logits: (R, N, C); NaN at rows where an example was not measured.
        labels: (N,) integer classes.
        rows: which rows to average over (None: all).

    Example:
        >>> z = np.log(np.array([[[0.5, 0.5], [0.9, 0.1]]]))
        >>> np.round(el2n(z, np.array([0, 1])), 4).tolist()
        [0.7071, 1.2728]

    Raises:
        SignalsError: when ``logits`` is not 3-D or the labels do not fit it.
    """
    z, y = _per_row(logits, labels, rows)
    err = _softmax(z)
    err[:, np.arange(len(y)), y] -= 1.0
    return _row_mean(np.sqrt((err**2).sum(axis=2)))


def margins(logits, labels) -> np.ndarray:
    """The margin (R, N) ``logit_true - max over other classes of the logit`` at each row (NaN stays NaN).

    Raises:
        SignalsError: when ``logits`` is not 3-D, has fewer than 2 classes, or the labels do not fit it.
    """
    z = _matrix(logits, "logits", 3)
    y = _labels(labels, z)
    if z.shape[2] < 2:
        raise SignalsError(f"logits have {z.shape[2]} class; a margin needs at least 2 classes")
    true = np.take_along_axis(z, y[None, :, None], axis=2)[..., 0]
    other = z.copy()
    other[:, np.arange(len(y)), y] = -np.inf
    return true - other.max(axis=2)


def aum(logits, labels, rows=None) -> np.ndarray:
    """AUM (N,): the area under the margin, the mean over rows of ``logit_true - max other logit``.

    Pleiss et al. 2020 (*Identifying Mislabeled Data using the Area Under the Margin Ranking*, NeurIPS), eq. 1-2:
    ``M_t(x, y) = z_y(t) - max_{i != y} z_i(t)`` and ``AUM(x, y) = (1/T) sum_t M_t(x, y)`` over the T epochs.
    Here over the recorded rows ``rows`` (default all) at which the example was measured. Low (negative) AUM:
    likely mislabelled.

    Example:
        >>> z = np.array([[[2.0, 0.0, 1.0]], [[0.0, 3.0, 1.0]]])
        >>> aum(z, np.array([0])).tolist()
        [-1.0]

    Raises:
        SignalsError: when ``logits`` is not 3-D, has fewer than 2 classes, or the labels do not fit it.
    """
    z, y = _per_row(logits, labels, rows)
    return _row_mean(margins(z, y))


def per_example_scores(losses, correct, logits=None, labels=None, el2n_rows=None) -> dict[str, np.ndarray]:
    """Every score of :data:`FLAGS` that the record allows, by name, each (N,).

    Args:
        losses: (R, N) cross-entropy losses (NaN: not measured); confidence and variability use ``exp(-loss)``.
        correct: (R, N) bool; rows with a NaN loss count as not measured.
        logits: optional (R', N, C) logits (``run.logits``); with ``labels``, adds ``el2n`` and ``aum``.
        labels: (N,) integer classes.
        el2n_rows: the logit rows EL2N averages over (None: all).

    Raises:
        SignalsError: when a shape does not fit.
    """
    L = _matrix(losses, "losses")
    conf, var = data_maps(p_true_from_loss(L))
    out = {"confidence": conf, "variability": var, "loss_variance": loss_variance(L),
           "forgetting": forgetting_counts(correct, measured=~np.isnan(L))}
    if logits is not None and labels is not None:
        out["el2n"] = el2n(logits, labels, rows=el2n_rows)
        out["aum"] = aum(logits, labels)
    return out


def auroc(score, positives) -> float:
    """The area under the ROC curve of ``score`` (N,) for the boolean ``positives`` (N,) (ties count half).

    The probability that a random positive scores higher than a random negative (Mann-Whitney U / (n+ n-)).
    NaN scores are left out; NaN when there is no positive or no negative left.

    Example:
        >>> auroc(np.array([0.9, 0.1, 0.5, 0.5]), np.array([True, False, True, False]))
        0.875
    """
    s, pos = np.asarray(score, dtype=np.float64), np.asarray(positives, dtype=bool)
    if s.shape != pos.shape or s.ndim != 1:
        raise SignalsError(f"score has shape {s.shape} and positives {pos.shape}; pass two (N,) arrays")
    keep = ~np.isnan(s)
    s, pos = s[keep], pos[keep]
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    # average ranks over ties
    uniq, inv = np.unique(s, return_inverse=True)
    ranks = (np.bincount(inv, ranks) / np.bincount(inv))[inv]
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def top_k(score, k: int, flag: int = +1) -> np.ndarray:
    """The indices of the ``k`` examples that ``score`` flags most (``flag`` +1: highest, -1: lowest; NaN last).

    Ties keep the lower index first.

    Example:
        >>> top_k(np.array([0.2, np.nan, 0.9, 0.5]), 2).tolist(), top_k(np.array([0.2, 0.9, 0.5]), 1, -1).tolist()
        ([2, 3], [0])
    """
    s = np.asarray(score, dtype=np.float64) * flag
    s = np.where(np.isnan(s), -np.inf, s)
    return np.argsort(-s, kind="stable")[:k]
