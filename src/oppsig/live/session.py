"""One live session of a training run: attribution, the actions at a spike, the event log, TensorBoard.

:class:`LiveSession` is what the training hook of ``oppsig train``
(:class:`~oppsig.live.hook.LiveHook`) and the framework callbacks' record
(:class:`~oppsig.integrations.record.LiveRecord`) both drive: they tell it when
an update is about to happen (:meth:`LiveSession.before_update`) and when it
happened (:meth:`LiveSession.after_update`), hand it each step's per-example
losses (:meth:`LiveSession.observe`) and let it act on a spike
(:meth:`LiveSession.act`). The actions (all off by default) are those of the
``live`` config:

- ``live.skip_update``: the update of the spiking step is undone (the
  parameters and optimiser state of the step's start are put back; costs one
  copy of them per step);
- ``live.rollback``: the parameters and optimiser state of the last kept state
  at or before the spike's onset are loaded from the session's
  :class:`~oppsig.live.rollback.RollbackSource`; the step counter goes on, so the
  batches in between are skipped;
- ``live.lr_factor`` / ``live.lr_steps``: the learning rate is multiplied by
  the factor for the next N steps;
- ``live.downweight_group`` / ``live.downweight``: once that group of
  ``live.groups`` carries part of a spike, its examples' loss weight is
  multiplied by the factor from then on.

Each use of an action is printed and logged as an event in ``<run>/events.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import LiveConfig
from ..errors import ConfigError
from ..training.actions import LrDrop, UpdateGuard, downweight, restore_state
from .attribution import LiveAttribution
from .events import cut_events_after
from .rollback import RollbackSource


class LiveSession:
    """Live attribution and its actions for one training run.

    Args:
        cfg: the live settings.
        rollback: where the ``live.rollback`` action finds kept states (None: nowhere; a rollback is then
            logged as unavailable).

    Call :meth:`start` once the run directory and the example ids are known, then per step
    :meth:`before_update`, :meth:`after_update`, :meth:`observe` and :meth:`act`, and :meth:`close` at the end.
    """

    def __init__(self, cfg: LiveConfig, rollback: RollbackSource | None = None) -> None:
        self.cfg = cfg
        self.rollback = rollback
        self.live: LiveAttribution | None = None
        self.guard = UpdateGuard()
        self.lr_drop = LrDrop(cfg.lr_factor, cfg.lr_steps) if cfg.lr_steps > 0 else None
        self.downweighted = False
        self.log: list[dict] = []
        self._saved: dict | None = None
        self.proof = None  # a SpikeProof once started with a replayer (live.replay)

    # ------------------------------------------------------------------ lifecycle
    def start(self, run_dir, index, *, main: bool = True, attribute: bool = True, labels=None, classes=None,
              describe=None, print_fn="stderr", dataset: dict | None = None, replayer=None, inputs=None,
              seed: int = 0, reset_every: int = 0) -> None:
        """Start attributing (``attribute``) with the examples ``index`` (N,) of the record, and continue a
        resumed session's state (:meth:`load_state_dict`).

        Only the ``main`` process writes: events into ``run_dir``, TensorBoard under ``<run_dir>/tb``
        (``live.tensorboard``), and messages through ``print_fn``. ``dataset`` (``name``, ``n``, ``classes``,
        ``fingerprint``, each optional) describes the run's data, which the file of ``live.groups`` must fit.
        With a ``replayer`` (:class:`~oppsig.training.rerun.StepReplayer`) and ``live.replay``, each spike's
        groups are named from a seeded probe of ``live.probe_n`` examples at kept states and checked by replay
        (:class:`~oppsig.live.proof.SpikeProof`; ``inputs`` (N, ...) extend them by input direction; its kept
        states start again every ``reset_every`` steps, the run's checkpoint interval).
        A resumed session drops the events a killed process logged after its saved state (they come again).

        Raises:
            ConfigError: ``live.groups`` comes from other data, or ``live.downweight_group`` is not one of
                its groups.
        """
        if attribute:
            live = LiveAttribution(self.cfg, groups=self.cfg.groups, labels=labels, classes=classes,
                                   describe=describe, print_fn=print_fn if main else None, dataset=dataset)
            live.bind(run_dir if main else None, index)
            self._check_downweight_group(live)
            if self.cfg.replay is not False and replayer is not None:
                from .proof import SpikeProof

                self.proof = SpikeProof(self.cfg, replayer, inputs, seed=seed, reset_every=reset_every)
                live.enrich = lambda ev: self.proof(live, ev)
            if self.cfg.tensorboard and main and run_dir is not None:
                from ..report.tensorboard import TB_DIR, summary_writer

                live.tb = summary_writer(Path(run_dir) / TB_DIR)
            self.live = live
            if self._saved is not None:
                live.load_state_dict(self._saved.get("live", {}))
                if main:
                    cut_events_after(run_dir, live.last_step)
        if self._saved is not None:
            self.load_actions(self._saved.get("actions", {}))

    def _check_downweight_group(self, live: LiveAttribution) -> None:
        g = self.cfg.downweight_group
        if g is not None and all(str(x.id) != str(g) for x in live.groups):
            raise ConfigError(f"live.downweight_group={g} is not a group of live.groups {self.cfg.groups}; pick "
                              f"one of its groups {[x.id for x in live.groups]}")

    def restore_weights(self, weights: torch.Tensor | None) -> None:
        """A resumed session that had down-weighted its group: down-weight it again in ``weights`` (N,)."""
        g = self._downweight_target()
        if self.downweighted and weights is not None and g is not None:
            downweight(weights, g.cols, self.cfg.downweight)

    def _downweight_target(self):
        """The :class:`~oppsig.live.events.GroupInfo` of ``live.downweight_group`` (None: not asked for)."""
        g = self.cfg.downweight_group
        if g is None or self.live is None:
            return None
        return next((x for x in self.live.groups if str(x.id) == str(g)), None)

    def close(self) -> None:
        """Complete the last step and close TensorBoard (at the end of training)."""
        if self.live is not None:
            self.live.flush()
            if self.live.tb is not None:
                self.live.tb.close()

    # ------------------------------------------------------------------ per step
    @property
    def lr_dropped(self) -> bool:
        """A learning-rate drop is in force at this step."""
        return self.lr_drop is not None and self.lr_drop.active

    def before_update(self, step: int, model: nn.Module, optimizer) -> None:
        """Just before the optimiser step: keep a rollback point, guard the update (skip action), lower the lr
        (when a drop is on)."""
        if self.cfg.rollback and self.rollback is not None:
            self.rollback.keep(step, model, optimizer)
        if self.proof is not None:
            self.proof.keep(step, model, optimizer)
        if self.cfg.skip_update:
            self.guard.take(model, optimizer)
        if self.lr_drop is not None and optimizer is not None:
            self.lr_drop.apply(optimizer)

    def after_update(self, optimizer) -> None:
        """Right after the optimiser step: the schedule's lr back (idempotent)."""
        if self.lr_drop is not None and optimizer is not None:
            self.lr_drop.undo(optimizer)

    def observe(self, step: int, ids, losses, loss: float | None = None, metrics: dict | None = None):
        """The per-example ``losses`` (b,) of examples ``ids`` (b,) at ``step``: a spike event or None.

        ``metrics`` with ``sharpness`` (and ``threshold``) updates what the messages show.
        """
        if self.live is None:
            return None
        if metrics and "sharpness" in metrics:
            self.live.set_sharpness(metrics.get("sharpness"), metrics.get("threshold"))
        return self.live.observe(step, ids, losses, loss=loss)

    def act(self, step: int, ev, model: nn.Module, optimizer, weights: torch.Tensor | None) -> None:
        """Take the actions asked for at the spike ``ev`` (None: no spike, drop the guard)."""
        if ev is None:
            self.guard.drop()
            return
        c = self.cfg
        live = self.live

        def event(kind: str, message: str, **extra) -> None:
            e = {"kind": kind, "step": int(step), "message": message, **extra}
            self.log.append(e)
            live.log_event(e)
            if live.print_fn is not None:
                live.print_fn(message)

        if c.skip_update and self.guard.put_back(model, optimizer):
            event("skip_update", f"step {step}: update skipped (parameters and optimiser state restored)")
        if c.rollback:
            onset = ev.onset_step if ev.onset_step is not None else step
            point = self.rollback.point_at_or_before(onset) if self.rollback is not None else None
            if point is None:
                event("rollback_unavailable", f"step {step}: no kept state at or before step {onset}; not rolled "
                      "back (keep checkpoints more often)")
            else:
                to, snap = point
                restore_state(model, optimizer, snap)
                event("rollback", f"step {step}: rolled back to step {to}; the batches of steps {to}..{step} "
                      "are skipped", to_step=int(to))
        if self.lr_drop is not None:
            self.lr_drop.trigger()
            event("lower_lr", f"step {step}: learning rate x{c.lr_factor:g} for the next {c.lr_steps} steps",
                  factor=c.lr_factor, steps=c.lr_steps)
        g = self._downweight_target()  # checked at start: a group of live.groups
        if g is not None and not self.downweighted and weights is not None:
            if any(str(x.get("id")) == str(g.id) for x in ev.groups):
                downweight(weights, g.cols, c.downweight)
                self.downweighted = True
                event("downweight", f"step {step}: group {g.id} ({g.name}) weighted x{c.downweight:g} from now on",
                      group=g.id, factor=c.downweight)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"live": self.live.state_dict() if self.live is not None else {},
                "actions": {"lr_drop": self.lr_drop.state_dict() if self.lr_drop is not None else {},
                            "downweighted": self.downweighted}}

    def load_state_dict(self, d: dict) -> None:
        """Continue a resumed run: the state is applied at :meth:`start`."""
        self._saved = d

    def load_actions(self, d: dict) -> None:
        if self.lr_drop is not None:
            self.lr_drop.load_state_dict(d.get("lr_drop", {}))
        self.downweighted = bool(d.get("downweighted", False))
