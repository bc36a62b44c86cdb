"""What both framework callbacks use: :class:`LiveRecord` (the record and the live session of a run in someone
else's loop), :func:`callback_record`, :func:`live_config`, :func:`probe_pass` and
:func:`sharpness_on`.

:class:`LiveRecord` is framework-neutral: a callback tells it when an update is
about to happen (:meth:`LiveRecord.before_update`) and hands it each step's
per-example losses with their example ids afterwards
(:meth:`LiveRecord.after_update`). It gathers them across ranks by id, writes
them on rank 0 through :class:`oppsig.Recorder` (so ``oppsig detect``,
``oppsig report`` and ``open_run`` read the result unchanged), and runs a
:class:`~oppsig.live.session.LiveSession` on every rank alike (live attribution
and the actions asked for; a rollback goes back to in-memory snapshots).

The record of a run in mini-batches (a batch smaller than the training set) is the
sparse batch record (``store.zarr/batch``: each example's loss from the training
forward of its own batch, :mod:`oppsig.store.batches`) plus, where the callback
reaches the training set, a seeded probe subset measured at the same parameters
every k steps in the dense record, its size and k from a cost budget
(:func:`choose_record`, :func:`~oppsig.store.probe_plan.plan_probe`). The plan is
printed at the start; the probe's measured share of the training steps' time is
printed at the end and kept in ``meta.json`` (``probe_share``, and ``probe`` as
``oppsig train`` writes it). A full-batch run keeps every example's loss at every
step in the dense record. Labels and class names given go to ``labels.npz``
(:mod:`oppsig.store.labels`), so that detect names groups by class without the data.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import LiveConfig
from ..distributed import current_context, gather_by_id
from ..errors import ConfigError
from ..live.rollback import Snapshots
from ..live.session import LiveSession
from ..store.batches import BatchWriter
from ..store.labels import write_labels
from ..store.probe_plan import ProbePlan, plan_probe
from ..store.recorder import Recorder
from ..training.actions import LrDrop
from .replay import completer

PROBE_SEED = 7
"""The seed of a callback's probe subset (a seeded sample of the training set's positions)."""


class LiveRecord:
    """Record + live attribution + actions for one training run in someone else's loop.

    Args:
        run_dir: the run directory (rank 0 writes it).
        index: the stable ids of the recorded examples (N,) (or ``num_examples``: ids ``0..N-1``).
        live: a :class:`~oppsig.config.LiveConfig` (``enabled=False``: record only).
        labels, classes: each recorded example's class (N,) and the class names, to name groups.
        config: a YAML-able description of the run, saved as ``config.yaml``.
        overwrite: replace a run already in ``run_dir``.
        dataset: the training set (``x``, ``y``, ``index`` tensors, e.g. an ArrayDataset): meta.json records its
            data fingerprint, which detect, report and export check (default: none; they warn).
    """

    def __init__(self, run_dir, index=None, num_examples: int | None = None, live: LiveConfig | None = None,
                 labels=None, classes=None, config: dict | None = None, overwrite: bool = False,
                 dtype: str = "float32", print_fn: Any = "stderr", dataset=None) -> None:
        if index is None:
            if not num_examples or num_examples <= 0:
                raise ConfigError(f"pass the number of training examples (num_examples > 0) or their ids; "
                                  f"got num_examples={num_examples}")
            index = np.arange(num_examples)
        self.run_dir = Path(run_dir)
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self.cfg = live if live is not None else LiveConfig()
        self.labels, self.classes, self.config = labels, classes, config
        self.overwrite, self.dtype, self.print_fn = overwrite, dtype, print_fn
        self.dataset = dataset
        self.rec: Recorder | None = None
        self.batches: BatchWriter | None = None
        self.plan: ProbePlan | None = None
        self.seconds = {"probe": 0.0, "train": 0.0}  # the probe's passes and the training steps, measured
        self.session = LiveSession(self.cfg, Snapshots(self.cfg.checkpoint_every))
        self.weights: torch.Tensor | None = None
        self.actions: list[dict] = []  # the actions taken at the last step (events of the session's log)
        self.rank, self.world = 0, 1

    @property
    def live(self):
        """The session's :class:`~oppsig.live.attribution.LiveAttribution` (None before :meth:`start` or when
        live attribution is off)."""
        return self.session.live

    # ------------------------------------------------------------------ lifecycle
    def start(self, dense_index=None, batches: bool = False, plan: ProbePlan | None = None, replayer=None,
              inputs=None, no_replay: str | None = None) -> None:
        """Open the record (rank 0) and the live session (every rank).

        Args:
            dense_index: the ids of the dense record's columns (a probe subset; default every example).
            batches: keep the training batches' losses in the sparse batch record (a mini-batch run).
            plan: the probe's plan, printed here and reported at :meth:`close`.
            replayer: the callback's :class:`~oppsig.integrations.replay.BatchReplayer`: each spike's groups are
                named from a probe at kept states and checked by replay (``live.replay``; one process only), its
                ``replay`` entry marked ``approximate``; ``inputs`` (N, ...) extend the groups by input direction.
            no_replay: why there is no replayer, said in each spike's message.
        """
        ctx = current_context()
        self.rank, self.world = ctx.rank, ctx.world
        self.plan = plan
        if self.rank == 0:
            dense = self.index if dense_index is None else np.asarray(dense_index, dtype=np.int64).reshape(-1)
            self.rec = Recorder(self.run_dir, index=dense, config=self.config, overwrite=self.overwrite,
                                dtype=self.dtype, dataset=self.dataset)
            if batches:
                self.batches = BatchWriter(self.rec.run_dir, self.index, dtype=self.dtype)
            if dense_index is not None and hasattr(self.dataset, "by_ids"):  # the probe's examples, checked by detect
                from ..store.fingerprint import run_fingerprint
                from ..training.record import update_meta

                update_meta(self.rec.run_dir, {"fingerprint": run_fingerprint(self.dataset,
                                                                              self.dataset.by_ids(dense))})
            if self.labels is not None:
                write_labels(self.rec.run_dir, self.index, _numpy(self.labels), self.classes)
            if plan is not None:
                self.say(plan.describe(len(self.index)))
        if self.world > 1 and replayer is not None:
            replayer, no_replay = None, "a run over several processes: each holds part of a batch"
        self.session.start(self.run_dir, self.index, main=self.rank == 0, attribute=self.cfg.enabled,
                           labels=self.labels, classes=self.classes, print_fn=self.print_fn, replayer=replayer,
                           inputs=inputs, seed=PROBE_SEED)
        if self.live is not None and self.cfg.replay is not False:
            self.live.enrich = completer(self.live.enrich, no_replay)
        if self.cfg.downweight_group is not None:
            self.weights = torch.ones(len(self.index))
            self.session.restore_weights(self.weights)  # a resumed run whose group was down-weighted already

    def close(self) -> None:
        self.session.close()
        if self.batches is not None:
            self.batches.close()
            self.batches = None
        if self.rec is not None:
            cost = self.probe_cost()
            if cost is not None:
                from ..training.record import update_meta

                update_meta(self.rec.run_dir, {"probe_share": cost["measured_share"], "probe": cost})
            self.rec.close()
            self.rec = None
            if cost is not None:
                self.say(f"probe: {cost['n']:,} examples every {cost['every']} steps took "
                         f"{100 * cost['measured_share']:.1f}% of the training steps' time (planned "
                         f"{100 * cost['planned_share']:.1f}%, budget {100 * cost['budget']:g}%)")

    def probe_cost(self) -> dict | None:
        """The plan and the probe's measured time over the training steps' (``meta.json["probe"]``), or None."""
        if self.plan is None:
            return None
        t = self.seconds
        share = t["probe"] / t["train"] if t["train"] > 0 else float("nan")
        return {"n": self.plan.n, "every": self.plan.every, "budget": self.plan.budget,
                "planned_share": round(self.plan.share, 4), "measured_share": round(share, 4),
                "probe_seconds": round(t["probe"], 3), "train_seconds": round(t["train"], 3)}

    def say(self, message: str) -> None:
        """A message of the record (the plan, the probe's cost) through ``print_fn``."""
        if self.print_fn == "stderr":
            print(message, file=sys.stderr, flush=True)
        elif self.print_fn is not None:
            self.print_fn(message)

    # ------------------------------------------------------------------ per step
    @property
    def lr_drop(self) -> LrDrop | None:
        return self.session.lr_drop

    def before_update(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Just before the optimiser step: keep a rollback point, guard it (skip action), lower the lr."""
        self.session.before_update(step, model, optimizer)

    def after_update(self, step: int, ids, losses, model: nn.Module | None = None,
                     optimizer: torch.optim.Optimizer | None = None, loss: float | None = None,
                     metrics: dict | None = None):
        """Right after the optimiser step, with the step's per-example ``losses`` (b,) of examples ``ids`` (b,).

        Returns the spike event (a :class:`~oppsig.live.events.SpikeEvent`) or None.
        """
        self.session.after_update(optimizer)
        i, v = gather_by_id(ids, losses)
        metrics = dict(metrics or {})
        if self.batches is not None:
            self.batches.append(step, self.batches.columns(_numpy(i)), _numpy(v))
        elif self.rec is not None:
            self.rec.log(step, i, v)
        if self.rec is not None:
            if metrics:
                self.rec.log_metrics(step, **{k: float(x) for k, x in metrics.items() if _is_number(x)})
        ev = self.session.observe(step, i, v, loss=loss, metrics=metrics)
        n = len(self.session.log)
        if self.live is not None and model is not None:
            self.session.act(step, ev, model, optimizer, self.weights)
        self.actions = self.session.log[n:]
        return ev

    def log_probe(self, step: int, ids, losses) -> None:
        """A probe set's per-example losses at ``step`` (recorded like a batch)."""
        i, v = gather_by_id(ids, losses)
        if self.rec is not None:
            self.rec.log(step, i, v)

    def weight_of(self, ids) -> torch.Tensor:
        """The loss weight of each example id (1 unless a group was down-weighted), shape (b,)."""
        ids = torch.as_tensor(ids).reshape(-1)
        if self.weights is None:
            return torch.ones(len(ids))
        cols = self.live.columns(ids.cpu().numpy()) if self.live is not None else ids.cpu().numpy()
        return self.weights[torch.as_tensor(cols)]

    def state_dict(self) -> dict:
        return self.session.state_dict()

    def load_state_dict(self, d: dict) -> None:
        """Continue a resumed run: the state is applied at :meth:`start`."""
        self.session.load_state_dict(d)


def logged_values(ev, actions: list[dict]) -> dict[str, float]:
    """The scalars of a step's spike event ``ev`` (or None) and its ``actions``, as a framework's logger takes
    them: ``oppsig/spike_rise``, ``oppsig/spike_z``, ``oppsig/group_share`` (of the first named group),
    ``oppsig/replay_removed``, ``oppsig/replay_removed_control``, ``oppsig/replay_drift``, ``oppsig/verdict_data``
    (1: data, 0: optimiser state, 0.5: undetermined) and ``oppsig/action_<kind>`` = 1."""
    out: dict[str, float] = {}
    if ev is not None:
        out.update({"oppsig/spike_rise": float(ev.rise), "oppsig/spike_z": float(ev.z)})
        if ev.groups:
            out["oppsig/group_share"] = float(ev.groups[0]["share"])
        rp = ev.replay or {}
        for k in ("removed", "removed_control", "drift"):
            if _is_number(rp.get(k)):
                out[f"oppsig/replay_{k}"] = float(rp[k])
        if ev.verdict is not None:
            out["oppsig/verdict_data"] = {"data": 1.0, "optimiser state": 0.0}.get(ev.verdict, 0.5)
    out.update({f"oppsig/action_{a['kind']}": 1.0 for a in actions})
    return out


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _is_number(x) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def callback_record(run_dir, num_examples, index, live, labels, classes, config, overwrite, *, probe,
                    probe_every: int, sharpness_every: int, sharpness_batch, batch_form: str,
                    dataset=None, budget: float = 0.10) -> LiveRecord:
    """The :class:`LiveRecord` of a framework callback, after checking the probe and sharpness arguments.

    Raises:
        ConfigError: ``probe_every`` without ``probe``, ``sharpness_every`` without ``sharpness_batch``
            (``batch_form`` says what to pass), a ``budget`` outside [0, 1], or a bad ``live``.
    """
    if probe_every and probe is None:
        raise ConfigError("probe_every is set but no probe loader was given; pass probe=DataLoader(...)")
    if not 0 <= budget <= 1:
        raise ConfigError(f"budget is the probe's share of training time, in [0, 1] (0: no probe); got {budget}")
    if sharpness_every and sharpness_batch is None:
        raise ConfigError(f"sharpness_every is set but no sharpness_batch was given; pass sharpness_batch={batch_form}")
    return LiveRecord(run_dir, index=index, num_examples=num_examples, live=live_config(live), labels=labels,
                      classes=classes, config=config, overwrite=overwrite, dataset=dataset)


def choose_record(num_examples: int, batch_size: int | None, steps: int | None, budget: float,
                  probe_given: bool) -> tuple[bool, ProbePlan | None]:
    """Whether a run is in mini-batches (``batch_size`` examples an update, fewer than ``num_examples``), and the
    plan of its probe (None: full batch, a probe loader given, ``budget`` 0 or the steps unknown).

    Example:
        >>> mini, plan = choose_record(1024, 32, 600, 0.10, probe_given=False)
        >>> mini, (plan.n, plan.every)
        (True, (115, 12))
        >>> choose_record(1024, 1024, 600, 0.10, probe_given=False)
        (False, None)
    """
    mini = bool(batch_size) and batch_size < num_examples
    if not mini or probe_given or not budget or not steps:
        return mini, None
    return True, plan_probe(num_examples, batch_size, int(steps), budget)


PROBE_BATCH = 512
PROBE_CACHE = 8192
"""A planned probe of at most this many examples keeps its collated batches in memory (CPU), so that a probe pass
is the forward alone; a larger one loads its items again at every pass."""


def probe_subset(loader, n: int, key) -> tuple[Any, np.ndarray] | None:
    """The batches of a seeded sample of ``n`` items of ``loader``'s data set (in their order, collated by the
    loader's own ``collate_fn``), and their example ids (``batch[key]``); None when the loader has no map-style
    data set. Up to :data:`PROBE_CACHE` items the batches are a list held in memory, else a loader."""
    ds = getattr(loader, "dataset", None)
    if ds is None or isinstance(ds, torch.utils.data.IterableDataset) or not hasattr(ds, "__len__"):
        return None
    size = len(ds)
    pos = np.sort(np.random.default_rng(PROBE_SEED).choice(size, size=min(n, size), replace=False))
    sub = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, pos.tolist()), batch_size=PROBE_BATCH,
                                      shuffle=False, collate_fn=getattr(loader, "collate_fn", None))
    batches = list(sub) if len(pos) <= PROBE_CACHE else None
    ids = [_ids_in(b, key) for b in (batches or sub)]
    if any(i is None for i in ids):
        return None
    return (sub if batches is None else batches), torch.cat(ids).numpy()


def _ids_in(batch, key) -> torch.Tensor | None:
    """The example ids ``batch[key]`` (B,) of a collated batch, or None when it holds none there."""
    try:
        ids = torch.as_tensor(batch[key])
    except (KeyError, IndexError, TypeError):
        return None
    return ids.reshape(-1) if ids.dim() <= 1 and not ids.is_floating_point() and not ids.is_complex() else None


def start_record(core: LiveRecord, loader, batch_size: int | None, steps: int | None, probe, probe_every: int,
                 budget: float, key, why_not: str | None = None, replay: dict | None = None) -> tuple[Any, int]:
    """Start ``core``'s record for a run whose updates take ``batch_size`` examples over ``steps`` steps.

    A mini-batch run records its batches in the sparse batch record; without a probe loader given, a seeded
    probe subset of the train ``loader``'s data set (ids at ``batch[key]``) is planned from ``budget``, unless
    ``why_not`` says why the callback cannot probe (said once). ``replay``: the keywords ``replayer``, ``inputs``
    and ``no_replay`` of :meth:`LiveRecord.start`.

    Returns:
        The probe loader and its interval (``(None, 0)``: no probe).
    """
    mini, plan = choose_record(len(core.index), batch_size, steps, budget, probe is not None)
    dense = None
    if plan is not None:
        sub = None if why_not else probe_subset(loader, plan.n, key)
        if sub is None:
            why_not = why_not or ("the train loader's data set is not reachable, or its batches do not hold the "
                                  "example ids where the training step reads them")
            core.say(f"probe: none ({why_not}; pass probe=loader, probe_every=k); recording the mini-batch losses "
                     "only")
            plan, probe_every = None, 0
        else:
            probe, dense = sub
            probe_every = plan.every
            if len(dense) < plan.n:
                plan = dataclasses.replace(plan, n=len(dense))
    core.start(dense_index=dense, batches=mini, plan=plan, **(replay or {}))
    return probe, probe_every


def live_config(live: Any) -> LiveConfig:
    """A :class:`LiveConfig` from ``True`` / ``False`` / a LiveConfig / a dict of its fields.

    Raises:
        ConfigError: for another type or an unknown field (the message names it).
    """
    from ..config import from_dict

    if live is True:
        return LiveConfig(enabled=True)
    if live is False or live is None:
        return LiveConfig(enabled=False)
    if isinstance(live, LiveConfig):
        return live
    if isinstance(live, dict):
        return from_dict({"enabled": True, **live}, LiveConfig, "live")
    raise ConfigError(f"live must be True, False, a LiveConfig or a dict of its fields; got {type(live).__name__}")


@torch.no_grad()
def probe_pass(model: nn.Module, loader, loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example losses of a probe loader of ``(idx, x, y)`` batches at the model's current parameters.

    One no-grad forward per batch; the model's train/eval mode is left as it is.
    Sequence losses ``(B, T)`` are averaged over T. Returns ``(ids (n,), losses (n,))`` on the CPU.
    """
    from ..losses import cross_entropy

    fn = loss_fn or cross_entropy
    dev = next(model.parameters()).device
    ids, vals = [], []
    for idx, x, y in loader:
        lv = fn(model(x.to(dev)), y.to(dev)).float()
        if lv.dim() > 1:
            lv = lv.flatten(1).mean(1)
        ids.append(torch.as_tensor(idx).reshape(-1).cpu())
        vals.append(lv.reshape(-1).cpu())
    return torch.cat(ids), torch.cat(vals)


def sharpness_on(model: nn.Module, batch, loss_fn, optimizer) -> dict:
    """The sharpness of the model on one ``(x, y)`` batch, with the optimiser's threshold beside the one it is for.

    ``sharpness`` (the top Hessian eigenvalue of the mean loss over the batch,
    Lanczos to the curvature code's default tolerance) and ``sharpness_converged``;
    for Adam/AdamW also ``precond_sharpness`` (of ``P^-1/2 H P^-1/2`` with Adam's
    preconditioner, once the optimiser has state). ``threshold`` is the one of
    :func:`~oppsig.curvature.thresholds.stability_of` at the current lr, the same as
    ``oppsig train`` writes, and only when the sharpness it is compared with was
    measured: none for SAM, sign-SGD or an optimiser oppsig does not know.
    """
    from ..curvature import preconditioned_sharpness, sharpness, stability_of
    from ..curvature.thresholds import unwrap
    from ..errors import OppsigError
    from ..losses import cross_entropy

    x, y = batch
    dev = next(model.parameters()).device
    batches, fn = [(x.to(dev), y.to(dev))], loss_fn or cross_entropy
    r = sharpness(model, batches, fn, k=1)
    out = {"sharpness": float(r.eigenvalues[0]), "sharpness_converged": float(bool(r.converged))}
    st = stability_of(optimizer) if optimizer is not None else None
    if st is not None and st.against == "precond_sharpness":
        try:
            p = preconditioned_sharpness(model, batches, fn, unwrap(optimizer), k=1)
            out["precond_sharpness"] = float(p.eigenvalues[0])
        except OppsigError:
            pass  # no Adam state before the first step
    if st is not None and st.against in out:
        out["threshold"] = float(st.threshold)
    return out
