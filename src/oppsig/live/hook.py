"""Live spike attribution in ``oppsig train``: a hook of the training loop (see :mod:`oppsig.training.hooks`).

``oppsig train CONFIG --live.enabled=true`` (or a ``live:`` section in the
config) adds :class:`LiveHook`; from Python::

    cfg = oppsig.load_config("configs/fc-tanh-ce-gd-cifar5k.yaml", ["live.enabled=true"])
    oppsig.train(cfg, hooks=[LiveHook(cfg.live)])

At every step it hands the step's per-example losses (all examples under
full-batch GD, the mini-batch otherwise) to a
:class:`~oppsig.live.session.LiveSession`, with the sharpness and its
threshold when the curvature hook tracks them; at a spike the session prints one
line, appends an event to ``<run>/events.jsonl``, and takes the actions of the
config (off by default; see :mod:`oppsig.live.session`). A rollback goes back to
the run's kept checkpoints (``train.keep_checkpoints`` keeps one every
``train.checkpoint_every`` steps); ``metrics.jsonl`` records the lr each step
used; the down-weight action needs the loop's example weights (the CLI passes them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import LiveConfig
from ..errors import ConfigError
from ..store.format import META, read_json
from .rollback import KeptCheckpoints
from .session import LiveSession


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
        self.session = LiveSession(cfg)

    @property
    def live(self):
        """The session's :class:`~oppsig.live.attribution.LiveAttribution` (None before the run starts)."""
        return self.session.live

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, state) -> None:
        data = state.train_data
        dist = state.extras.get("dist")
        main = dist is None or dist.is_main
        labels = data.y.cpu().numpy() if data.y.dim() == 1 else None
        self.session.rollback = KeptCheckpoints(state.run_dir, state.device)
        self.session.start(state.run_dir, data.index.cpu().numpy(), main=main, labels=labels,
                           classes=getattr(data, "classes", None),
                           describe=_describer(data) if (self.describe and labels is not None) else None,
                           print_fn=_printer() if main else None, dataset=data_facts(data, state.run_dir),
                           replayer=_replayer(state), inputs=_inputs(data), seed=state.config.seed,
                           reset_every=state.config.train.checkpoint_every)
        weights = state.extras.get("example_weights")
        if self.cfg.downweight_group is not None and weights is None:
            raise ConfigError("live.downweight_group needs the loop's example weights; run through `oppsig train` "
                              "or pass example_weights=torch.ones(n) to oppsig.train")
        self.session.restore_weights(weights)

    def on_step_start(self, state) -> None:
        self.session.before_update(state.step, state.model, state.optimizer)
        if self.session.lr_dropped:
            state.lr = state.optimizer.param_groups[0]["lr"]

    def on_step_end(self, state) -> None:
        s = self.session
        if s.lr_dropped:
            state.metrics["lr"] = state.optimizer.param_groups[0]["lr"]  # the lr this step used
        s.after_update(state.optimizer)
        losses = state.per_example_loss
        if losses is None or s.live is None:
            s.act(state.step, None, state.model, state.optimizer, None)
            return
        lv = losses.detach().float()
        if lv.dim() > 1:
            lv = lv.flatten(1).mean(1)
        ids = self._ids(state, len(lv))
        m = state.metrics
        ev = s.observe(state.step, ids, lv.cpu().numpy(), loss=m.get("loss"), metrics=m)
        if ev is not None:
            state.metrics["live_spike"] = 1.0
        s.act(state.step, ev, state.model, state.optimizer, state.extras.get("example_weights"))

    def on_train_end(self, state) -> None:
        self.session.close()

    def state_dict(self) -> dict:
        return self.session.state_dict()

    def load_state_dict(self, d: dict) -> None:
        self.session.load_state_dict(d)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _ids(state, b: int) -> np.ndarray:
        """Example ids of the step's ``b`` losses: the loop's rows of the step (every example without them)."""
        index = state.train_data.index.cpu()
        if state.per_example_rows is not None:
            index = index[state.per_example_rows.cpu()]
        if len(index) != b:
            raise ConfigError(f"live attribution got {b} losses at step {state.step}, expected {len(index)}")
        return index.numpy()


def _replayer(state):
    """The loop's replayer where spikes are replayed: ``live.replay`` true, or unset on a mini-batch run."""
    cfg = state.config
    on = cfg.live.replay
    if on is None:  # full-batch GD: each replayed step is a pass over every example
        on = cfg.optim.name != "gd" and cfg.train.batch_size < len(state.train_data)
    return state.extras.get("replayer") if on else None


def _inputs(data):
    """The training inputs as numpy (N, ...) for extending groups by input direction; None for token ids."""
    x = data.x
    return x.detach().float().cpu().numpy() if x.is_floating_point() else None


def data_facts(data, run_dir=None) -> dict:
    """What live attribution checks a ``live.groups`` file against: the data set's ``name``, ``n``, ``classes``,
    and its ``fingerprint`` when the run's ``meta.json`` records one."""
    facts = {"name": getattr(data, "name", ""), "n": len(data), "classes": list(getattr(data, "classes", ()))}
    meta = Path(run_dir) / META if run_dir is not None else None
    if meta is not None and meta.exists():
        fp = read_json(meta).get("fingerprint")
        if fp:
            facts["fingerprint"] = fp
    return facts


def _printer():
    """Print above the progress bar, on stderr."""
    import sys

    from tqdm.auto import tqdm

    return lambda msg: tqdm.write(msg, file=sys.stderr)
