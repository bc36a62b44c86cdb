"""Live spike attribution in ``oppsig train``: a hook of the training loop (see :mod:`oppsig.training.hooks`).

``oppsig train CONFIG --live.enabled=true`` (or a ``live:`` section in the
config) adds :class:`LiveHook`; from Python::

    cfg = oppsig.load_config("configs/fc-tanh-ce-gd-cifar5k.yaml", ["live.enabled=true"])
    oppsig.train(cfg, hooks=[LiveHook(cfg.live)])

At every step it hands the step's per-example losses (all examples under
full-batch GD, the mini-batch otherwise) to
:class:`~oppsig.signals.live.LiveAttribution`, with the sharpness and its
threshold when the curvature hook tracks them; at a spike it prints one line,
appends an event to ``<run>/events.jsonl``, and takes the actions of the config
(off by default):

- ``live.skip_update``: the update of the spiking step is undone (the
  parameters and optimiser state of the step's start are put back; costs one
  copy of them per step);
- ``live.rollback``: the parameters and optimiser state of the last kept
  checkpoint at or before the spike's onset are loaded; the step counter goes
  on, so the batches in between are skipped (``train.keep_checkpoints`` keeps
  one every ``train.checkpoint_every`` steps);
- ``live.lr_factor`` / ``live.lr_steps``: the learning rate is multiplied by
  the factor for the next N steps (``metrics.jsonl`` records the lr used);
- ``live.downweight_group`` / ``live.downweight``: once that group of
  ``live.groups`` carries part of a spike, its examples' loss weight is
  multiplied by the factor from then on (needs the loop's example weights: the
  CLI passes them).
"""

from __future__ import annotations

import numpy as np
import torch

from ..config import LiveConfig
from ..errors import ConfigError
from ..signals.live import LiveAttribution
from ..training.actions import LrDrop, UpdateGuard, downweight, restore_state


def _describer(dataset):
    """rows -> the shared input descriptors of those examples, in words (computed once, lazily)."""
    cache: dict = {}

    def words(rows: np.ndarray) -> tuple[str, ...]:
        from ..signals import explain_group, input_descriptors

        if "desc" not in cache:
            cache["ds"] = dataset.to("cpu") if hasattr(dataset, "to") else dataset
            cache["desc"] = input_descriptors(cache["ds"])
        return tuple(explain_group(cache["ds"], np.asarray(rows), cache["desc"])["shared"])

    return words


class LiveHook:
    """The training-loop hook of live spike attribution and its actions.

    Args:
        cfg: the ``live`` section of the run's config.
        describe: ``False`` to name online groups by class only (no input descriptors).
    """

    def __init__(self, cfg: LiveConfig, describe: bool = True) -> None:
        self.cfg = cfg
        self.describe = describe
        self.live: LiveAttribution | None = None
        self.guard = UpdateGuard()
        self.lr_drop = LrDrop(cfg.lr_factor, cfg.lr_steps) if cfg.lr_steps > 0 else None
        self._saved: dict | None = None
        self._downweighted = False
        self.actions: list[dict] = []

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, state) -> None:
        data = state.train_data
        dist = state.extras.get("dist")
        main = dist is None or dist.is_main
        labels = data.y.cpu().numpy() if data.y.dim() == 1 else None
        self.live = LiveAttribution(self.cfg, groups=self.cfg.groups, labels=labels,
                                    classes=getattr(data, "classes", None),
                                    describe=_describer(data) if (self.describe and labels is not None) else None,
                                    print_fn=_printer() if main else None)
        self.live.bind(state.run_dir if main else None, data.index.cpu().numpy())
        if self._saved is not None:
            self.live.load_state_dict(self._saved.get("live", {}))
            if self.lr_drop is not None:
                self.lr_drop.load_state_dict(self._saved.get("lr_drop", {}))
        if self.cfg.downweight_group is not None and state.extras.get("example_weights") is None:
            raise ConfigError("live.downweight_group needs the loop's example weights; run through `oppsig train` "
                              "or pass example_weights=torch.ones(n) to oppsig.train")

    def on_step_start(self, state) -> None:
        if self.cfg.skip_update:
            self.guard.take(state.model, state.optimizer)
        if self.lr_drop is not None:
            self.lr_drop.apply(state.optimizer)

    def on_step_end(self, state) -> None:
        if self.lr_drop is not None and self.lr_drop._saved is not None:
            state.metrics["lr"] = state.optimizer.param_groups[0]["lr"]
            self.lr_drop.undo(state.optimizer)
        losses = state.per_example_loss
        if losses is None or self.live is None:
            self.guard.drop()
            return
        m = state.metrics
        if "sharpness" in m:
            self.live.set_sharpness(m.get("sharpness"), m.get("threshold"))
        lv = losses.detach().float()
        if lv.dim() > 1:
            lv = lv.flatten(1).mean(1)
        ids = self._ids(state, len(lv))
        ev = self.live.observe(state.step, ids, lv.cpu().numpy(), loss=m.get("loss"))
        if ev is None:
            self.guard.drop()
            return
        state.metrics["live_spike"] = 1.0
        self._act(state, ev)

    def on_train_end(self, state) -> None:
        if self.live is not None:
            self.live.flush()

    def state_dict(self) -> dict:
        return {"live": self.live.state_dict() if self.live is not None else {},
                "lr_drop": self.lr_drop.state_dict() if self.lr_drop is not None else {}}

    def load_state_dict(self, d: dict) -> None:
        self._saved = d

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _ids(state, b: int) -> np.ndarray:
        data = state.train_data
        n = len(data)
        if b == n:
            return data.index.cpu().numpy()
        from ..training.loop import batch_rows  # the mini-batch of a step is a pure function of the seed

        cfg = state.config
        rows = batch_rows(state.step, n, cfg.train.batch_size, cfg.seed, "cpu")
        if len(rows) != b:
            raise ConfigError(f"live attribution got {b} losses at step {state.step}, expected {n} or {len(rows)}")
        return data.index.cpu()[rows].numpy()

    def _event(self, step: int, kind: str, message: str, **extra) -> None:
        e = {"kind": kind, "step": int(step), "message": message, **extra}
        self.actions.append(e)
        self.live.log_event(e)
        if self.live.print_fn is not None:
            self.live.print_fn(message)

    def _act(self, state, ev) -> None:
        c, step = self.cfg, state.step
        if c.skip_update and self.guard.put_back(state.model, state.optimizer):
            self._event(step, "skip_update", f"step {step}: update skipped (parameters and optimiser state restored)")
        if c.rollback:
            self._rollback(state, ev)
        if self.lr_drop is not None:
            self.lr_drop.trigger()
            self._event(step, "lower_lr", f"step {step}: learning rate x{c.lr_factor:g} for the next {c.lr_steps} "
                        "steps", factor=c.lr_factor, steps=c.lr_steps)
        if c.downweight_group is not None and not self._downweighted:
            g = next((g for g in self.live.groups if str(g.id) == str(c.downweight_group)), None)
            if g is None:
                raise ConfigError(f"live.downweight_group {c.downweight_group!r} is not a group of {c.groups}; "
                                  f"its groups are {[x.id for x in self.live.groups]}")
            if any(str(x.get("id")) == str(g.id) for x in ev.groups):
                downweight(state.extras["example_weights"], g.cols, c.downweight)
                self._downweighted = True
                self._event(step, "downweight", f"step {step}: group {g.id} ({g.name}) weighted x{c.downweight:g} "
                            "from now on", group=g.id, factor=c.downweight)

    def _rollback(self, state, ev) -> None:
        from ..training.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint

        step = state.step
        onset = ev.onset_step if ev.onset_step is not None else step
        if state.run_dir is None:
            self._event(step, "rollback_unavailable", f"step {step}: no run directory, no checkpoint to roll back to")
            return
        kept = {s: p for s, p in list_checkpoints(state.run_dir).items() if s <= onset}
        path = kept[max(kept)] if kept else None
        if path is None and checkpoint_path(state.run_dir).exists():
            path = checkpoint_path(state.run_dir)
        ck = load_checkpoint(path, map_location=state.device) if path is not None else None
        if ck is None or int(ck["step"]) > onset:
            self._event(step, "rollback_unavailable", f"step {step}: no checkpoint at or before step {onset}; "
                        "not rolled back (set train.keep_checkpoints and a smaller train.checkpoint_every)")
            return
        restore_state(state.model, state.optimizer, ck)
        to = int(ck["step"])
        self._event(step, "rollback", f"step {step}: rolled back to the checkpoint of step {to}; the batches of "
                    f"steps {to}..{step} are skipped", to_step=to)


def _printer():
    import sys

    def p(msg: str) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stderr)
        except Exception:  # noqa: BLE001 - printing must never stop training
            print(msg, file=sys.stderr, flush=True)

    return p
