"""Live attribution: which examples and groups carry a loss spike, within the step.

At every step the running (total or mini-batch) loss goes through the online
spike detector (:mod:`oppsig.live.detector`); at a spike the per-example losses
of that step are compared with each example's loss at the spike's onset, and the
rise is split over the examples and over groups: groups of an earlier ``oppsig detect``
(``signals.json`` of this or another run), or groups estimated online from the
recent per-example loss changes. The result is one line, e.g.::

    step 655: loss +201% over trend (z 14.2); 58% of the rise from group 0 (43 frogs, bright background)
    vs group 12 (142 frogs, dark background); sharpness 31.2 / 2/lr 20

and an event in ``<run>/events.jsonl`` (and TensorBoard when given a writer).

- :func:`rise_contributions`, :func:`group_shares`, :func:`online_groups`: the arithmetic;
- :class:`LiveAttribution`: detector + per-example history + groups + event log;
  what :class:`~oppsig.live.session.LiveSession` and ``Recorder(live=...)`` use.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import LiveConfig
from ..errors import StoreError
from ..store.ids import IdIndex
from .detector import SpikeCheck, SpikeDetector
from .events import GroupInfo, SpikeEvent, append_event, load_groups
from .text import class_counts, describe_rows, format_message


def rise_contributions(now: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each example's part of the rise: ``now - ref`` (NaN where either is unknown), (n,)."""
    return np.asarray(now, dtype=np.float64) - np.asarray(ref, dtype=np.float64)


def group_shares(contrib: np.ndarray, groups: dict[Any, np.ndarray]) -> dict[Any, float]:
    """Share of the net rise carried by each group, ``{group: sum_g c / sum c}``.

    Args:
        contrib: (n,) rise contributions of the observed examples (NaN: not observed).
        groups: ``{group: (m,) column positions into contrib}``.

    When the net rise is not positive (possible on a mini-batch), shares are of
    the positive part instead.
    """
    c = np.nan_to_num(np.asarray(contrib, dtype=np.float64), nan=0.0)
    total = c.sum()
    if total <= 0:
        c = np.maximum(c, 0)
        total = c.sum()
    if total <= 0:
        return {g: 0.0 for g in groups}
    return {g: float(c[np.asarray(cols, dtype=np.int64)].sum() / total) for g, cols in groups.items()}


def corr_rows(d: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Correlation of each column of ``d`` (h, n) with ``ref`` (h,)."""
    dc = d - d.mean(0, keepdims=True)
    rc = ref - ref.mean()
    num = rc @ dc
    den = np.sqrt((dc**2).sum(0) * (rc**2).sum()) + 1e-12
    return num / den


def _main_cluster(d: np.ndarray, cols: np.ndarray, weight: np.ndarray, min_corr: float) -> np.ndarray:
    """The cluster of ``cols`` (average linkage on 1 - correlation of their changes ``d[:, cols]``, cut at
    ``1 - min_corr``) with the largest total ``weight``; ``cols`` itself when fewer than 4."""
    if len(cols) < 4:
        return cols
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    x = d[:, cols]
    x = x - x.mean(0, keepdims=True)
    nrm = np.sqrt((x**2).sum(0)) + 1e-12
    c = (x.T @ x) / np.outer(nrm, nrm)
    dist = np.clip(1.0 - c, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    lab = fcluster(linkage(squareform(dist, checks=False), "average"), t=1.0 - min_corr, criterion="distance")
    w = weight[cols]
    best = max(np.unique(lab), key=lambda k: w[lab == k].sum())
    return cols[lab == best]


def online_groups(
    contrib: np.ndarray, deltas: np.ndarray, max_size: int = 200, min_corr: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate, from the recent loss changes alone, the group that carries a rise and the one opposing it.

    The rise group: among the fewest examples, largest contribution first, that
    carry half the positive rise (at most ``max_size``), the cluster of examples
    whose loss changes before the spike step move together (average linkage on
    correlation, cut at ``min_corr``) that carries the most of the rise. The
    opposing group: among the examples whose changes before the spike step
    correlate below ``-min_corr`` with the rise group's mean change and swing at
    least a quarter as much (at most ``max_size``, largest swing first), the
    cluster that moves together with the largest total swing.

    Args:
        contrib: (n,) rise contributions (NaN: unknown).
        deltas: (h, n) recent one-step loss changes of the same examples, the
            last row being the spike step's (h >= 3).
        max_size: largest group.
        min_corr: correlation for membership.

    Returns:
        ``(rise, opposing)``: column positions, largest contribution (swing) first.
    """
    c = np.nan_to_num(np.asarray(contrib, dtype=np.float64), nan=-np.inf)
    d = np.nan_to_num(np.asarray(deltas, dtype=np.float64), nan=0.0)
    pos = np.where(np.isfinite(c) & (c > 0), c, 0.0)
    if pos.sum() <= 0 or d.shape[0] < 3:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(-pos, kind="stable")
    k = int(np.searchsorted(np.cumsum(pos[order]), 0.5 * pos.sum())) + 1
    top = order[: max(3, min(k, max_size))]
    top = top[pos[top] > 0]
    if d.shape[0] >= 4:  # co-movement before the spike step: the oscillation that led to it
        d = d[:-1]
    rise = _main_cluster(d, top, pos, min_corr)
    rise = rise[np.argsort(-pos[rise], kind="stable")]
    corr_all = corr_rows(d, d[:, rise].mean(1))
    amp = d.std(0)
    cand = np.flatnonzero((corr_all < -min_corr) & (amp >= 0.25 * float(np.median(amp[rise]))))
    cand = cand[np.argsort(corr_all[cand] * amp[cand], kind="stable")][:max_size]
    opp = _main_cluster(d, cand, amp, min_corr)
    opp = opp[np.argsort(-amp[opp], kind="stable")]
    return rise.astype(np.int64), opp.astype(np.int64)


class LiveAttribution:
    """The online detector plus attribution, with an event log in a run directory.

    Args:
        settings: detector and attribution thresholds.
        groups: known groups: a ``signals.json`` path (of this or another run on
            the same data), a list of :class:`GroupInfo`, or None to estimate
            groups online from the recent per-example losses (needs the same
            examples at every observed step: full-batch or a probe set).
        labels: (n,) class of each recorded example (record order), to name groups.
        classes: class names.
        describe: optional ``rows -> tuple of words`` (e.g. shared input
            descriptors) used for online groups.
        print_fn: where the one-line message goes (default: stderr); None: silent.
        tensorboard: a ``SummaryWriter`` to also log events to, or None.
        dataset: what is known of the run's data (``name``, ``n``, ``classes``, ``fingerprint``, each
            optional); a ``signals.json`` of other data is refused at :meth:`bind`.

    Call :meth:`bind` once the record's example ids are known, then
    :meth:`observe` at every step with the step's per-example losses.

    Example:
        >>> import numpy as np, tempfile
        >>> live = LiveAttribution(LiveConfig(window=5, history=8, context=3), print_fn=None)
        >>> live.bind(tempfile.mkdtemp(), np.arange(4))
        >>> for t in range(12):
        ...     _ = live.observe(t, np.arange(4), np.full(4, 1.0 - 0.01 * t))
        >>> ev = live.observe(12, np.arange(4), np.array([0.86, 0.86, 5.0, 0.86]))
        >>> ev.examples[0], round(ev.example_share, 1)
        (2, 1.0)
    """

    def __init__(
        self,
        settings: LiveConfig = LiveConfig(),
        groups: str | os.PathLike | list[GroupInfo] | None = None,
        labels: np.ndarray | None = None,
        classes=None,
        describe: Callable[[np.ndarray], tuple[str, ...]] | None = None,
        print_fn: Callable[[str], None] | None = "stderr",  # type: ignore[assignment]
        tensorboard=None,
        dataset: dict | None = None,
    ) -> None:
        self.s = settings
        self.dataset = dataset
        self.detector = SpikeDetector(settings)
        self._groups_src = groups
        self.groups: list[GroupInfo] = []
        self.labels = labels
        self.classes = classes
        self.describe = describe
        self.print_fn = (lambda m: print(m, file=sys.stderr, flush=True)) if print_fn == "stderr" else print_fn
        self.tb = tensorboard
        self.run_dir: Path | None = None
        self.index: np.ndarray | None = None
        self.events: list[SpikeEvent] = []
        self.sharpness: float | None = None
        self.threshold: float | None = None
        self._pending: tuple[int, np.ndarray, np.ndarray] | None = None
        self._fired_at: int | None = None
        self._full_b = 0  # most examples observed at one step
        self.enrich: Callable[[SpikeEvent], None] | None = None  # completes an event before it is written

    # -------------------------------------------------------------- setup
    def bind(self, run_dir: str | os.PathLike | None, index: np.ndarray) -> None:
        """Attach to a run directory (None: no event file) and the record's example ids (n,).

        Raises:
            ConfigError: the ``signals.json`` of ``groups`` comes from other data or holds examples the record
                lacks (see :func:`~oppsig.live.groups.check_groups_file`).
        """
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        n = len(self.index)
        self._ids = IdIndex(self.index)
        self.rows = np.full((self.s.history, n), np.nan, dtype=np.float32)  # ring buffer of per-example losses
        self.row_steps = np.full(self.s.history, -1, dtype=np.int64)
        self.row_loss = np.full(self.s.history, np.nan)
        self.last_seen = np.full(n, np.nan, dtype=np.float32)
        self._head = 0
        src = self._groups_src
        if isinstance(src, (str, os.PathLike)):
            self.groups = load_groups(src, self.index, self.dataset)
        elif src is not None:
            self.groups = list(src)

    def columns(self, ids) -> np.ndarray:
        """Positions of example ids in the record.

        Raises:
            StoreError: for ids the record does not hold.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos, found = self._ids.lookup(ids)
        if not found.all():
            raise StoreError(f"example ids {ids[~found][:5].tolist()} are not in the record's index "
                             f"(ids 0..{len(self._ids) - 1}?)")
        return pos

    def set_sharpness(self, sharpness: float | None, threshold: float | None) -> None:
        """The latest sharpness and its stability threshold (2/lr for GD), shown in messages."""
        if sharpness is not None and math.isfinite(sharpness):
            self.sharpness, self.threshold = float(sharpness), (float(threshold) if threshold is not None else None)

    # -------------------------------------------------------------- per step
    def observe(self, step: int, ids, losses, loss: float | None = None) -> SpikeEvent | None:
        """The per-example ``losses`` (b,) of examples ``ids`` (b,) at ``step``; a spike event or None.

        ``loss`` is the step's running loss (default: the mean of ``losses``).
        Several calls for the same step add to it (the last call's verdict counts).
        A step that holds fewer than half the examples of the largest step seen (the short last batch
        of an epoch) is recorded but not tested for a spike: the mean of a few losses is too noisy.
        """
        if self.index is None:
            raise RuntimeError("LiveAttribution.bind(run_dir, index) must be called before observe()")
        step = int(step)
        cols = self.columns(ids)
        vals = np.asarray(losses, dtype=np.float32).reshape(-1)
        if self._pending is not None and self._pending[0] != step:
            self._commit()
        if self._pending is not None:
            cols = np.concatenate([self._pending[1], cols])
            vals = np.concatenate([self._pending[2], vals])
        merging = self._pending is not None
        self._pending = (step, cols, vals)
        value = float(np.mean(vals)) if loss is None else float(loss)
        if merging:  # the detector takes one value per step: replace this step's earlier value
            self.detector.load_state_dict(self._before)
        else:
            self._before = self.detector.state_dict()
        self._full_b = max(self._full_b, len(vals))
        if 2 * len(vals) < self._full_b:
            return None
        check = self.detector.update(step, value)
        if check is None or self._fired_at == step:
            return None
        self._fired_at = step
        ev = self._attribute(check, cols, vals)
        if self.enrich is not None:
            self.enrich(ev)
        self._emit(ev)
        return ev

    def _commit(self) -> None:
        step, cols, vals = self._pending
        h = self._head % self.s.history
        self.rows[h] = np.nan
        self.rows[h, cols] = vals
        self.row_steps[h] = step
        self.row_loss[h] = float(np.mean(vals))
        self.last_seen[cols] = vals
        self._head += 1
        self._pending = None

    def flush(self) -> None:
        """Complete the current step (call at the end of training)."""
        if self._pending is not None:
            self._commit()

    def _ordered_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(self._head, self.s.history)
        idx = [(self._head - k + i) % self.s.history for i in range(k)]
        return self.rows[idx], self.row_steps[idx], self.row_loss[idx]

    def _attribute(self, check: SpikeCheck, cols: np.ndarray, vals: np.ndarray) -> SpikeEvent:
        rows, steps, row_loss = self._ordered_rows()
        n = len(self.index)
        now = np.full(n, np.nan)
        now[cols] = vals
        ref = self.last_seen.astype(np.float64).copy()
        onset = None
        if len(rows):
            ctx = slice(max(0, len(rows) - self.s.context), len(rows))
            j = ctx.start + int(np.nanargmin(row_loss[ctx])) if np.isfinite(row_loss[ctx]).any() else None
            if j is not None:
                onset = int(steps[j])
                at_onset = rows[j].astype(np.float64)
                ref = np.where(np.isfinite(at_onset), at_onset, ref)
        ref = np.where(np.isfinite(ref), ref, check.baseline)
        contrib = np.full(n, np.nan)
        contrib[cols] = rise_contributions(vals, ref[cols])
        c = np.nan_to_num(contrib, nan=0.0)
        pos = np.maximum(c, 0)
        order = np.argsort(-pos, kind="stable")
        k = int(np.searchsorted(np.cumsum(pos[order]), 0.5 * pos.sum())) + 1 if pos.sum() > 0 else 0
        top = order[: min(k, self.s.max_share_examples)]
        net = c.sum() if c.sum() > 0 else pos.sum()
        share = float(c[top].sum() / net) if net > 0 else 0.0
        ev = SpikeEvent(step=check.step, loss=check.loss, baseline=check.baseline, rise=check.rise, z=check.z,
                        onset_step=onset, examples=self.index[top].tolist(), example_share=share,
                        sharpness=self.sharpness, threshold=self.threshold)
        ev.groups = self._group_part(contrib, rows, cols)
        ev.message = format_message(ev)
        return ev

    def _group_part(self, contrib: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> list[dict]:
        if self.groups:
            shares = group_shares(contrib, {g.id: g.cols for g in self.groups})
            by_id = {g.id: g for g in self.groups}
            lead = max(self.groups, key=lambda g: shares[g.id])
            out = [{"id": lead.id, "label": f"group {lead.id}", "name": lead.name, "share": shares[lead.id],
                    "size": int(len(lead.cols)), "source": "signals.json"}]
            other = by_id.get(lead.opposite)
            if other is None:
                rest = [g for g in self.groups if g.id != lead.id]
                other = max(rest, key=lambda g: shares[g.id]) if rest else None
            if other is not None:
                out.append({"id": other.id, "label": f"group {other.id}", "name": other.name,
                            "share": shares[other.id], "size": int(len(other.cols)), "source": "signals.json",
                            "paired": other.id == lead.opposite})
            return out
        # online estimate: needs the same examples at every recent step (full batch or a probe set)
        if len(rows) < 4:
            return []
        now = np.full(rows.shape[1], np.nan)
        now[cols] = self._pending[2]
        series = np.vstack([rows.astype(np.float64), now])
        if np.isfinite(series).all(0).mean() < 0.9:
            return []  # a mini-batch record sees each example once an epoch: no online groups
        rise, opp = online_groups(contrib, np.diff(series, axis=0), self.s.max_share_examples)
        if len(rise) == 0:
            return []
        shares = group_shares(contrib, {"rise": rise, "opposing": opp})
        out = [self.group_entry("rise", rise, shares["rise"])]
        if len(opp):
            out.append(self.group_entry("opposing", opp, shares["opposing"]))
        return out

    def group_entry(self, role: str, cols: np.ndarray, share: float) -> dict:
        """A named group of an event: its ``role`` (``rise`` or ``opposing``), record columns ``cols`` and share."""
        words = tuple(self.describe(cols)) if self.describe is not None else ()
        name = describe_rows(class_counts(self.labels, self.classes, cols), words)
        return {"id": role, "label": "a rising group" if role == "rise" else "an opposing group", "name": name,
                "share": share, "size": int(len(cols)), "source": "online", "ids": self.index[cols].tolist()}

    # -------------------------------------------------------------- output
    def _emit(self, ev: SpikeEvent) -> None:
        self.events.append(ev)
        if self.print_fn is not None:
            self.print_fn(ev.message)
        self.log_event(ev.to_json())
        if self.tb is not None:
            self.tb.add_scalar("live/spike_rise", ev.rise, ev.step)
            self.tb.add_text("live/spike", ev.message, ev.step)

    def log_event(self, event: dict) -> None:
        """Append one event (a JSON object with ``kind`` and ``step``) to ``<run>/events.jsonl``."""
        append_event(self.run_dir, event)

    @property
    def last_step(self) -> int | None:
        """The last step observed (None before the first)."""
        return self._pending[0] if self._pending is not None else self.detector.last_step

    def state_dict(self) -> dict:
        """The detector and the per-example history (tensors and plain values: a checkpoint loads it with
        ``weights_only=True``), so a resumed run attributes its spikes as an uninterrupted one does."""
        d = {"detector": self.detector.state_dict(), "fired_at": self._fired_at, "full_b": self._full_b,
             "sharpness": self.sharpness, "threshold": self.threshold}
        if self.index is None:
            return d
        d["history"] = {"index": torch.from_numpy(self.index.copy()), "rows": torch.from_numpy(self.rows.copy()),
                        "row_steps": torch.from_numpy(self.row_steps.copy()),
                        "row_loss": torch.from_numpy(self.row_loss.copy()),
                        "last_seen": torch.from_numpy(self.last_seen.copy()), "head": int(self._head)}
        if self._pending is not None:
            step, cols, vals = self._pending
            d["pending"] = {"step": int(step), "cols": torch.from_numpy(np.asarray(cols, np.int64)),
                            "vals": torch.from_numpy(np.asarray(vals, np.float32)), "before": self._before}
        return d

    def load_state_dict(self, d: dict) -> None:
        """Continue from :meth:`state_dict` (after :meth:`bind`; the history is kept only when the record's
        example ids are the same)."""
        self.detector.load_state_dict(d.get("detector", {}))
        self._fired_at = d.get("fired_at")
        self._full_b = int(d.get("full_b", 0))
        self.sharpness, self.threshold = d.get("sharpness"), d.get("threshold")
        h = d.get("history")
        if h is None or self.index is None or h["rows"].shape[0] != self.s.history:
            return
        if not np.array_equal(h["index"].numpy(), self.index):
            return
        self.rows, self.row_steps = h["rows"].numpy().copy(), h["row_steps"].numpy().copy()
        self.row_loss, self.last_seen = h["row_loss"].numpy().copy(), h["last_seen"].numpy().copy()
        self._head = int(h["head"])
        p = d.get("pending")
        if p is not None:
            self._pending = (int(p["step"]), p["cols"].numpy().copy(), p["vals"].numpy().copy())
            self._before = p["before"]
