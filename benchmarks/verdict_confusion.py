"""The live verdict's confusion table: planted data spikes against spikes planted in Adam's state.

- **data**: the live events of ``live_minibatch_families.py`` (planted frame pairs under SGD and AdamW) whose rise
  a planted pair carries at least half of (ground truth from the plant), read from that benchmark's ``--json``.
- **optimiser state**: live events of runs of the setting of ``optimizer_state_spikes.py``
  (:func:`optimizer_state_spikes.state_spike_settings`: Adam with eps 1e-12 and beta2 0.99999 on synthetic data
  with no planted group, batch 128): no group of examples is behind these spikes. Their spikes (the offline
  finder's, rising at least 50%) are given to live attribution as events in a second, identical run: on so
  noisy a mini-batch loss the live rule fires at few of them, and the table is about the verdict, not the rule.

Prints the table (rows: the cause planted; columns: the verdict) and writes the events with ``--json``.

Usage (each state-spike run ~40 s at one thread; ``--state`` takes the state events of an earlier ``--json``):
    python benchmarks/verdict_confusion.py --families runs/live_families.json --seeds 10 --json verdicts.json
    python benchmarks/verdict_confusion.py --families runs/live_families.json --state verdicts.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from live_minibatch_families import PAIR_SHARE  # noqa: E402
from optimizer_state_spikes import state_spike_settings  # noqa: E402

from oppsig.config import load_config  # noqa: E402
from oppsig.live import LiveHook  # noqa: E402
from oppsig.live.replay import verdict  # noqa: E402
from oppsig.signals.spikes import detect_spikes  # noqa: E402
from oppsig.training import train  # noqa: E402

VERDICTS = ("data", "optimiser state", "undetermined")
MIN_HEIGHT = 0.5  # the state spikes counted: a rise of at least 50% over the trend, as optimizer_state_spikes.py


class ForceAt:
    """Makes the live detector fire at the given steps (their reported losses x10; the probe and the replays
    measure the model itself, which this does not touch)."""

    def __init__(self, steps) -> None:
        self.steps = set(int(s) for s in steps)

    def on_step_end(self, state) -> None:
        if state.step in self.steps:
            state.per_example_loss = state.per_example_loss * 10.0
            state.metrics["loss"] = float(state.per_example_loss.mean())


class Losses:
    def __init__(self) -> None:
        self.loss: list[float] = []

    def on_step_end(self, state) -> None:
        self.loss.append(state.metrics["loss"])


def state_events(seed: int) -> list[dict]:
    """Verdicts at the spikes of one run of the optimiser-state setting: the spikes the offline finder labels in
    a first run (the live rule misses most of them: see the docs), forced as live events in a second, identical
    one."""
    cfg = load_config(None, [*state_spike_settings(), f"seed={seed}", "threads=1", "curvature.every=0"])
    rec = Losses()
    train(cfg, run_dir=None, progress=False, hooks=[rec])
    peaks = [sp.step for sp in detect_spikes(np.asarray(rec.loss)) if sp.height >= MIN_HEIGHT]
    cfg = cfg.replace(["live.enabled=true"])
    hook = LiveHook(cfg.live, describe=False)
    train(cfg, run_dir=None, progress=False, hooks=[ForceAt(peaks), hook])
    return [{"seed": seed, "step": ev.step, "rise": ev.rise, "verdict": ev.verdict, "replay": ev.replay,
             "message": ev.message} for ev in hook.live.events if ev.step in peaks]


def judged(removed, removed_control, rise=1.0) -> str:
    """The verdict of the current rule from an event's replay shares (so that events written by an earlier run of
    a benchmark are judged as live attribution judges now)."""
    if removed is None or removed_control is None:
        return "undetermined"
    return verdict(rise if rise is not None else 1.0, removed, removed_control)[0]


def table(rows: dict[str, list[str]]) -> str:
    out = ["| cause planted | spikes | " + " | ".join(VERDICTS) + " |", "|---|---|" + "---|" * len(VERDICTS)]
    for cause, verdicts in rows.items():
        out.append(f"| {cause} | {len(verdicts)} | " + " | ".join(str(verdicts.count(v)) for v in VERDICTS) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", type=Path, required=True, help="the --json of live_minibatch_families.py")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--state", type=Path, help="the --json of an earlier run: its state events, not trained again")
    a = ap.parse_args()
    torch.set_num_threads(1)
    fam = json.loads(a.families.read_text())
    data = [e for r in fam for e in r["events"] if e["pair_share"] >= PAIR_SHARE]
    state = json.loads(a.state.read_text())["state"] if a.state else []
    for seed in range(a.seeds if not a.state else 0):
        t0 = time.perf_counter()
        evs = state_events(seed)
        state += evs
        print(f"state seed {seed}: {len(evs)} events {[e['verdict'] for e in evs]} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
        if a.json:
            a.json.write_text(json.dumps({"data": data, "state": state}, indent=1, default=float) + "\n")
    state_rp = [e["replay"] or {} for e in state]
    print(table({"data (planted pair carries >= half the rise)":
                 [judged(e["removed"], e["removed_control"], e.get("replay_rise")) for e in data],
                 "optimiser state (Adam, no planted group)":
                 [judged(r.get("removed"), r.get("removed_control"), r.get("rise")) for r in state_rp]}))


if __name__ == "__main__":
    main()
