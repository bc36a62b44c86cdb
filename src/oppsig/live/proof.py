"""At a spike: the groups named from the probe at kept states, and their proof by replay.

:class:`SpikeProof` keeps the run's state every ``live.state_every`` steps over the last
``live.replay_window`` steps (:class:`~oppsig.live.states.StateRing`). When the live detector fires at step t
(after its update), before the event is written, it

1. measures a fixed probe set (a seeded sample of ``live.probe_n`` examples, all of them in a smaller set) at
   each kept state and at theta_{t+1}, the current parameters (:func:`~oppsig.live.minibatch.probe_window`);
2. where the event has no groups yet (a mini-batch run: its record does not see the same examples at every
   step), names the rising group and the one opposing it from those rows and extends each to every
   example (:mod:`oppsig.live.minibatch`), with the share of the probe's rise each carries;
3. replays the updates from the kept state ``live.replay_lead`` steps before the onset (the kept step of lowest
   probe loss, not before the previous spike's peak; by default the onset itself, :func:`replay_start`) through
   step t, as trained, without the named groups' examples and without random controls, measures the probe around the end
   (theta_{t+1}: the peak) and gives the verdict (:mod:`oppsig.live.replay`).

The event carries the groups (with every member's id), the replay's numbers and the verdict; its cost (the
probe forwards and the replays) is in ``replay.seconds`` and the message.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..config import LiveConfig
from .attribution import LiveAttribution, group_shares
from .events import SpikeEvent
from .minibatch import extend_members, probe_groups, probe_window
from .replay import CONTROLS, control_ids, replay_check
from .states import StateRing
from .text import format_message


class SpikeProof:
    """Names a spike's groups from kept states and checks them by replay (see the module docstring).

    Args:
        cfg: the live settings (``replay_window``, ``state_every``, ``probe_n``, ``max_share_examples``).
        replayer: the run's :class:`~oppsig.training.rerun.StepReplayer`.
        inputs: (N, ...) the training inputs in record order, to extend groups by input direction (None: by
            class only).
        reset_every: the run's checkpoint interval: the kept states start again at each checkpoint, where a
            resumed run starts with none, so that a resumed run names and checks its spikes as an
            uninterrupted one does (a spike within ``live.replay_window`` steps after a checkpoint is checked
            from the states since it). 0: never.
    """

    def __init__(self, cfg: LiveConfig, replayer, inputs: np.ndarray | None = None, seed: int = 0,
                 reset_every: int = 0) -> None:
        self.cfg, self.replayer, self.inputs, self.seed = cfg, replayer, inputs, seed
        self.reset_every = reset_every
        self.probe_ids: np.ndarray | None = None  # drawn at the first spike from the record's ids, then fixed
        self.states = StateRing(cfg.replay_window // cfg.state_every + 1)
        self.model = self.optimizer = None
        self.contributions: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # spike step -> (probe ids, parts of rise)
        self.last_peak: int | None = None  # the previous spike's peak: the next one's onset is not before it

    def keep(self, step: int, model, optimizer) -> None:
        """Just before the update of ``step``: keep the state."""
        self.model, self.optimizer = model, optimizer
        if self.reset_every and step % self.reset_every == 0:  # a resume starts here with no earlier state
            self.states.clear()
        if step % self.cfg.state_every == 0:
            self.states.keep(step, model, optimizer)

    def _probe(self, live: LiveAttribution) -> np.ndarray:
        if self.probe_ids is None:
            rng = np.random.default_rng(self.seed)
            n = min(self.cfg.probe_n, len(live.index))
            self.probe_ids = np.sort(rng.choice(live.index, size=n, replace=False))
        return self.probe_ids

    def __call__(self, live: LiveAttribution, ev: SpikeEvent) -> None:
        """Complete ``ev`` (after the update of its step t): groups where it has none, the replay, the verdict."""
        t0 = time.perf_counter()
        probe = self._probe(live)
        if self.model is None or not self.states.steps():
            return
        steps, L = probe_window(self.replayer, self.model, self.optimizer, self.states, probe, ev.step)
        pg = probe_groups(L, steps, self.cfg.max_share_examples, after=self.last_peak)
        self.last_peak = int(ev.step) + 1
        self.contributions[int(ev.step)] = (probe, pg.contrib)
        if not ev.groups:
            ev.groups = self._name_groups(live, pg, probe, L, steps)
            ev.onset_step = int(steps[pg.onset])
        groups = {str(g.get("id")): np.asarray(_group_ids(live, g), dtype=np.int64) for g in ev.groups[:2]}
        groups = {k: v for k, v in groups.items() if len(v)}
        named = np.unique(np.concatenate(list(groups.values()))) if groups else np.zeros(0, np.int64)
        onset, peak = int(steps[pg.onset]), ev.step + 1
        start = replay_start(self.states.steps(), onset, self.cfg.replay_lead, self.optimizer)
        if len(named):
            # the spike is a rise of the total loss: measured on the probe, a sample of every example, in which
            # the named groups' probed members weigh their share (its rows at the onset and now are measured)
            recorded = (float(L[pg.onset].mean()), float(L[-1].mean()))
            controls = [control_ids(named, live.index, live.labels, seed=self.seed + 1000 * ev.step + i)
                        for i in range(CONTROLS)]
            check = replay_check(self.replayer, self.model, self.optimizer, self.states.get(start), start, peak,
                                 named, controls, probe, recorded, alone=groups if len(groups) > 1 else None,
                                 around=self.cfg.replay_around if getattr(self.replayer, "ahead", False) else 0,
                                 how=self.cfg.replay_drop)
            ev.replay = check.to_json()
            ev.verdict = check.verdict
        ev.message = format_message(ev)
        if live.print_fn is not None and ev.replay is not None:
            live.print_fn(f"step {ev.step}: groups and replays took {time.perf_counter() - t0:.1f} s "
                          f"({ev.replay['steps']} updates replayed {2 + CONTROLS + len(ev.replay['removals'])} times)")

    def _name_groups(self, live: LiveAttribution, pg, probe: np.ndarray, L: np.ndarray,
                     steps: np.ndarray) -> list[dict]:
        """The rising and opposing groups of the probe, each extended to every example, as event entries."""
        cols = live.columns(probe)
        out = []
        for role, pos in (("rise", pg.rise), ("opposing", pg.opposing)):
            if len(pos) == 0:
                continue
            ids, ext = extend_members(cols, pos, L, steps, live.index, live.labels, self.inputs, seed=self.seed)
            g = live.group_entry(role, live.columns(ids), group_shares(pg.contrib, {role: pos})[role])
            g.update(source="probe", probed=int(len(pos)))
            if ext is not None:
                g["extension"] = {"added": len(ext.ids), "precision": ext.precision, "recall": ext.recall,
                                  "note": ext.note}
            out.append(g)
        return out


def momentum_horizon(optimizer) -> int:
    """Steps over which the optimiser's momentum carries a gradient on: ``ceil(1 / (1 - b))`` for SGD's momentum
    or Adam's beta1 ``b`` (the first group's), 0 without momentum.

    Example:
        >>> import torch
        >>> p = [torch.nn.Parameter(torch.zeros(1))]
        >>> momentum_horizon(torch.optim.SGD(p, lr=0.1, momentum=0.9)), momentum_horizon(torch.optim.SGD(p, lr=0.1))
        (10, 0)
        >>> momentum_horizon(torch.optim.AdamW(p, betas=(0.9, 0.999)))
        10
    """
    g = optimizer.param_groups[0] if optimizer is not None and optimizer.param_groups else {}
    b = float(g.get("momentum", g.get("betas", (0.0,))[0]) or 0.0)
    return int(math.ceil(1.0 / (1.0 - b) - 1e-9)) if 0.0 < b < 1.0 else 0


def replay_start(kept: list[int], onset: int, lead: int | None, optimizer=None) -> int:
    """The kept step the replays start from: the latest at or before ``onset - lead`` (``lead`` None: the
    optimiser's :func:`momentum_horizon`), else the oldest kept. A removal from the onset on cannot take out what
    the momentum already carries into it.

    Example:
        >>> kept = [0, 4, 8, 12, 16]
        >>> replay_start(kept, 14, 10), replay_start(kept, 14, 0), replay_start([8, 12], 9, 10)
        (4, 12, 8)
    """
    lead = momentum_horizon(optimizer) if lead is None else int(lead)
    before = [s for s in kept if s <= onset - lead]
    return max(before) if before else min(kept)


def _group_ids(live: LiveAttribution, g: dict) -> list[int]:
    """The member ids of an event's group entry (groups of ``live.groups`` list theirs by column)."""
    if "ids" in g:
        return list(g["ids"])
    info = next((x for x in live.groups if str(x.id) == str(g.get("id"))), None)
    return [] if info is None else live.index[info.cols].tolist()
