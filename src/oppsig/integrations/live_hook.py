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

from ..config import LiveConfig
from ..errors import ConfigError
from ..signals.live import LiveAttribution
from .core import SpikeActions


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
        self.actions = SpikeActions(cfg, self._checkpoint_at)
        self._run_dir = None
        self._device = None
        self._saved: dict | None = None

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, state) -> None:
        data = state.train_data
        dist = state.extras.get("dist")
        main = dist is None or dist.is_main
        labels = data.y.cpu().numpy() if data.y.dim() == 1 else None
        tb = None
        if self.cfg.tensorboard and main and state.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(state.run_dir / "tb"))
        self.live = LiveAttribution(self.cfg, groups=self.cfg.groups, labels=labels,
                                    classes=getattr(data, "classes", None),
                                    describe=_describer(data) if (self.describe and labels is not None) else None,
                                    print_fn=_printer() if main else None, tensorboard=tb)
        self.live.bind(state.run_dir if main else None, data.index.cpu().numpy())
        if self._saved is not None:
            self.live.load_state_dict(self._saved.get("live", {}))
            self.actions.load_state_dict(self._saved.get("actions", {}))
        self._run_dir, self._device = state.run_dir, state.device
        if self.cfg.downweight_group is not None and state.extras.get("example_weights") is None:
            raise ConfigError("live.downweight_group needs the loop's example weights; run through `oppsig train` "
                              "or pass example_weights=torch.ones(n) to oppsig.train")

    def on_step_start(self, state) -> None:
        self.actions.before_update(state.model, state.optimizer)
        if self.actions.lr_drop is not None and self.actions.lr_drop.active:
            state.lr = state.optimizer.param_groups[0]["lr"]

    def on_step_end(self, state) -> None:
        if self.actions.lr_drop is not None and self.actions.lr_drop.active:
            state.metrics["lr"] = state.optimizer.param_groups[0]["lr"]  # the lr this step used
        self.actions.after_update(state.optimizer)
        losses = state.per_example_loss
        if losses is None or self.live is None:
            self.actions.act(state.step, None, state.model, state.optimizer, self.live, None)
            return
        m = state.metrics
        if "sharpness" in m:
            self.live.set_sharpness(m.get("sharpness"), m.get("threshold"))
        lv = losses.detach().float()
        if lv.dim() > 1:
            lv = lv.flatten(1).mean(1)
        ids = self._ids(state, len(lv))
        ev = self.live.observe(state.step, ids, lv.cpu().numpy(), loss=m.get("loss"))
        if ev is not None:
            state.metrics["live_spike"] = 1.0
        self.actions.act(state.step, ev, state.model, state.optimizer, self.live,
                         state.extras.get("example_weights"))

    def on_train_end(self, state) -> None:
        if self.live is not None:
            self.live.flush()
            if self.live.tb is not None:
                self.live.tb.close()

    def state_dict(self) -> dict:
        return {"live": self.live.state_dict() if self.live is not None else {},
                "actions": self.actions.state_dict()}

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

    def _checkpoint_at(self, onset: int):
        """The last kept checkpoint of the run at or before step ``onset``: ``(step, state)`` or None."""
        from ..training.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint

        if self._run_dir is None:
            return None
        kept = {s: p for s, p in list_checkpoints(self._run_dir).items() if s <= onset}
        path = kept[max(kept)] if kept else checkpoint_path(self._run_dir)
        if not path.exists():
            return None
        ck = load_checkpoint(path, map_location=self._device)
        return (int(ck["step"]), ck) if int(ck["step"]) <= onset else None


def _printer():
    """Print above the progress bar, on stderr."""
    import sys

    from tqdm.auto import tqdm

    return lambda msg: tqdm.write(msg, file=sys.stderr)
