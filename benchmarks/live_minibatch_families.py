"""Live attribution on planted mini-batch runs: does the spike event name the planted group, and does the
replay prove it?

Each run trains fc-tanh 200-200 (``configs/fc-tanh-ce-sgd-cifar5k.yaml``) on the first 5,000 CIFAR-10 images
with two opposing pairs planted (:func:`signals_acceptance.plant_frames`, as in
``minibatch_families.py``), under SGD or AdamW with ``--live.enabled=true`` (the default record: a probe
subset within its budget and the batch record). At each live spike event it scores:

- ``pair_share``: the share of the probe's net rise (onset to spike, at the same parameters) carried by the
  planted pair that carries the most (ground truth from the plant);
- ``purity``: the largest share of planted examples among the event's named groups' members;
- ``removed`` / ``removed_control``: the replay's share of the rise removed without the named groups and
  without the random control; ``verdict``.

Summary per setting, over the spikes where a planted pair carries at least half the rise: the share of them
whose event names a group at least 80% planted, and the share whose replay removes at least half the rise
while the control removes at most a fifth (the acceptance of "Which data caused this spike?").

Usage (each run ~1 min at one thread; ``--set`` adds config overrides):
    OPPSIG_DATA=... python benchmarks/live_minibatch_families.py --setting sgd adamw --seeds 10 --json out.json
    python benchmarks/live_minibatch_families.py --setting sgd --seeds 10 --set live.replay_window=8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import planted_dataset  # noqa: E402
from minibatch_families import SETTINGS  # noqa: E402
from signals_acceptance import plant_frames  # noqa: E402

from oppsig.config import load_config  # noqa: E402
from oppsig.data import cifar10  # noqa: E402
from oppsig.live import LiveHook  # noqa: E402
from oppsig.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAIR_SHARE = 0.5
PURITY = 0.8


def score_event(ev, contrib: tuple[np.ndarray, np.ndarray] | None, groups: list[np.ndarray]) -> dict:
    """One event's scores against the planted groups (a0, b0, a1, b1)."""
    planted = np.unique(np.concatenate(groups))
    shares = []
    if contrib is not None:
        ids, c = contrib
        net = c.sum() if c.sum() > 0 else np.maximum(c, 0).sum()
        for k in range(0, len(groups), 2):
            pair = np.isin(ids, np.concatenate(groups[k:k + 2]))
            shares.append(float(c[pair].sum() / net) if net > 0 else 0.0)
    purity = [float(np.isin(g["ids"], planted).mean()) for g in ev.groups if g.get("ids")]
    rp = ev.replay or {}
    return {"step": ev.step, "rise": round(ev.rise, 3), "pair_share": max(shares, default=float("nan")),
            "purity": max(purity, default=0.0), "sizes": [g.get("size") for g in ev.groups],
            "removed": rp.get("removed"), "removed_control": rp.get("removed_control"), "replay_rise": rp.get("rise"),
            "verdict": ev.verdict, "message": ev.message, "peak_step": rp.get("peak_step"),
            "curves": rp.get("curves")}


def one_run(setting: str, seed: int, base, blend: float, size: int, extra: list[str] = ()) -> dict:
    raw, groups = plant_frames(base.raw.numpy(), base.y.numpy(), blend, size=size, seed=seed)
    ds = dataclasses.replace(planted_dataset(base, raw), y=base.y.clone())
    cfg = load_config(ROOT / "configs" / "fc-tanh-ce-sgd-cifar5k.yaml",
                      [*SETTINGS[setting], f"seed={seed}", "threads=1", "train.checkpoint_every=0", "data.test_n=0",
                       "live.enabled=true", *extra])
    hook = LiveHook(cfg.live, describe=False)
    t0 = time.perf_counter()
    train(cfg, run_dir=None, progress=False, data=(ds, None), hooks=[hook])
    proof = hook.session.proof
    evs = [score_event(ev, proof.contributions.get(ev.step) if proof else None, groups) for ev in hook.live.events]
    return {"setting": setting, "seed": seed, "train_s": round(time.perf_counter() - t0, 1), "events": evs}


def summary(rows: list[dict]) -> str:
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        evs = [e for r in rows if r["setting"] == setting for e in r["events"]]
        carried = [e for e in evs if e["pair_share"] >= PAIR_SHARE]
        named = [e for e in carried if e["purity"] >= PURITY]
        proved = [e for e in carried if e["removed"] is not None and e["removed"] >= 0.5
                  and e["removed_control"] is not None and e["removed_control"] <= 0.2]
        steady = [e for e in proved if abs(e["removed_control"]) <= 0.2]  # the verdict's test: control within 20%
        runs = sum(r["setting"] == setting for r in rows)
        out.append(f"{setting}: {runs} runs, {len(evs)} events, {len(carried)} carried by a planted pair "
                   f"(>= {PAIR_SHARE:.0%} of the rise); named a >= {PURITY:.0%} planted group: {len(named)}; "
                   f"replay removes >= 50% (control <= 20%): {len(proved)}, control within +-20%: {len(steady)}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", nargs="+", default=["sgd", "adamw"], choices=sorted(SETTINGS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--blend", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--set", nargs="*", default=[], help="further config overrides, e.g. live.replay_window=8")
    a = ap.parse_args()
    torch.set_num_threads(1)
    base = cifar10(n=5000)
    rows = []
    for setting in a.setting:
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            r = one_run(setting, seed, base, a.blend, a.size, a.set)
            rows.append(r)
            for e in r["events"]:
                print(f"{setting} seed {seed} step {e['step']}: pair share {e['pair_share']:.2f} purity "
                      f"{e['purity']:.2f} removed {e['removed']} control {e['removed_control']} {e['verdict']}",
                      flush=True)
            if a.json:
                a.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
