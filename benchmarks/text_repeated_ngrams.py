"""Repeated-n-gram documents planted in the character GPT's text: do they cause loss spikes, and does live
attribution name them?

OLMo 2 traced its gradient spikes to web documents made of repeated n-grams. Here such documents are inserted into
tinyshakespeare as whole training sequences (:func:`oppsig.data.text.plant_repeated_ngrams`: each one unit repeated
over 65 characters, a letter, a word of the text or a random 2-16-gram, at seeded random places, so that their
sequence ids are known), and ``configs/gpt-shakespeare.yaml`` is trained on the result with
``--live.enabled=true`` (Adam as shipped, or SGD with momentum 0.9 at lr 0.1), for the same seeds without a plant
(``control``). Per run: the live events (spikes); at each event:

- ``planted_share``: the planted sequences' share of the probe's net rise (onset to spike, the event's own
  contributions), against their share of the data (the plant rate);
- ``purity``: the largest share of planted ids among the event's named groups' members; ``recall``: the share of
  the planted sequences among the named groups' members, together;
- ``removed`` / ``removed_control`` / ``verdict``: the replay's;
- ``batch_planted``: planted sequences in the spiking step's mini-batch; ``loss_planted`` / ``loss_rest``: the mean
  loss of the planted and the other sequences in the mini-batches of the 8 steps up to the spike.

Per run it also keeps the mean mini-batch loss of the planted and other sequences over the last 50 steps, and the
largest rise of a step's training loss over the median of the 31 steps before it (after step 50), with that
step's mini-batch: a spike the live rule may not call one.

Usage (a run of 400 steps: 1-3 min at one thread, of 800 steps 5-6 min under load, more with events to replay):
    OPPSIG_DATA=... python benchmarks/text_repeated_ngrams.py --optim adam sgd --seeds 5 --json ngrams.json
    python benchmarks/text_repeated_ngrams.py --optim sgd --seeds 2 --plant ngram-2% --steps 200   # a short look
    python benchmarks/text_repeated_ngrams.py --table ngrams.json   # the table of a finished (or cut-short) run
Wall time: 53 min for the first line (30 runs of 41-203 s) at one thread under a load average of 4 to 11.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from oppsig.config import load_config
from oppsig.data.text import NGRAM_KINDS, find_text, plant_repeated_ngrams
from oppsig.live import LiveHook
from oppsig.training import train

ROOT = Path(__file__).resolve().parent.parent
#: name -> (share of planted sequences, kinds)
PLANTS = {"control": (0.0, NGRAM_KINDS), "ngram-2%": (0.02, ("ngram",)), "mixed-8%": (0.08, NGRAM_KINDS),
          "mixed-25%": (0.25, NGRAM_KINDS)}
DEFAULT_PLANTS = ["control", "ngram-2%", "mixed-8%"]
OPTIMS = {"adam": [], "sgd": ["optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9"]}
AROUND = 8


class BatchLosses:
    """A training-loop hook: each step's mean mini-batch loss of the planted and of the other sequences."""

    def __init__(self, planted: np.ndarray) -> None:
        self.planted = planted
        self.rows: dict[int, tuple[float, float, int]] = {}  # step -> (planted loss, rest loss, planted count)
        self.loss: dict[int, float] = {}  # step -> the step's training loss

    def on_step_end(self, state) -> None:
        lv = state.per_example_loss
        if "loss" in state.metrics:
            self.loss[state.step] = float(state.metrics["loss"])
        if lv is None:
            return
        lv = lv.detach().float()
        lv = (lv.flatten(1).mean(1) if lv.dim() > 1 else lv).cpu().numpy()
        mask = np.isin(LiveHook._ids(state, len(lv)), self.planted)
        nan = float("nan")
        self.rows[state.step] = (float(lv[mask].mean()) if mask.any() else nan,
                                 float(lv[~mask].mean()) if (~mask).any() else nan, int(mask.sum()))

    def mean(self, lo: int, hi: int) -> tuple[float, float]:
        """Mean planted and other losses over the mini-batches of steps lo..hi (batches weighted alike)."""
        r = np.array([self.rows[s] for s in range(lo, hi + 1) if s in self.rows]).reshape(-1, 3)
        return tuple(float(np.nanmean(r[:, k])) if np.isfinite(r[:, k]).any() else float("nan") for k in (0, 1))


    def largest_rise(self, skip: int = 50, window: int = 31) -> tuple[float, int]:
        """The largest rise of a step's loss over the median of the ``window`` steps before it, after ``skip``."""
        steps = sorted(self.loss)
        v = np.array([self.loss[s] for s in steps])
        best = (0.0, -1)
        for i in range(max(skip, window), len(v)):
            r = v[i] / np.median(v[i - window:i]) - 1
            if r > best[0]:
                best = (float(r), steps[i])
        return best


def score_event(ev, contrib, planted: np.ndarray, batches: BatchLosses) -> dict:
    """One event's numbers against the planted ids."""
    share = float("nan")
    if contrib is not None and len(planted):
        ids, c = contrib
        ok = np.isfinite(c)
        ids, c = ids[ok], c[ok]
        net = c.sum() if c.sum() > 0 else np.maximum(c, 0).sum()
        share = float(c[np.isin(ids, planted)].sum() / net) if net > 0 else 0.0
    members = [np.asarray(g["ids"]) for g in ev.groups if g.get("ids")]
    purity = [float(np.isin(m, planted).mean()) for m in members]
    named = np.unique(np.concatenate(members)) if members else np.array([], dtype=np.int64)
    recall = float(np.isin(planted, named).mean()) if len(planted) else float("nan")
    lp, lr = batches.mean(ev.step - AROUND + 1, ev.step)
    rp = ev.replay or {}
    return {"step": ev.step, "rise": round(ev.rise, 3), "planted_share": share,
            "purity": max(purity, default=0.0), "recall": recall, "sizes": [g.get("size") for g in ev.groups],
            "removed": rp.get("removed"), "removed_control": rp.get("removed_control"), "verdict": ev.verdict,
            "batch_planted": batches.rows.get(ev.step, (0, 0, 0))[2], "loss_planted": lp, "loss_rest": lr,
            "message": ev.message}


def one_run(optim: str, plant: str, seed: int, text: str, steps: int, tmp: Path) -> dict:
    rate, kinds = PLANTS[plant]
    cfg = load_config(ROOT / "configs" / "gpt-shakespeare.yaml", [])
    p = plant_repeated_ngrams(text, cfg.data.block_size, rate, kinds, seed=seed)
    path = tmp / f"{plant}-{seed}.txt"
    path.write_text(p.text, encoding="utf-8")
    cfg = load_config(ROOT / "configs" / "gpt-shakespeare.yaml",
                      [*OPTIMS[optim], f"data.path={path}", f"seed={seed}", f"train.steps={steps}", "threads=1",
                       "train.checkpoint_every=0", "live.enabled=true"])
    hook, batches = LiveHook(cfg.live, describe=False), BatchLosses(p.ids)
    t0 = time.perf_counter()
    res = train(cfg, run_dir=None, progress=False, hooks=[hook, batches])
    proof = hook.session.proof
    evs = [score_event(ev, proof.contributions.get(ev.step) if proof else None, p.ids, batches)
           for ev in hook.live.events]
    lp, lr = batches.mean(steps - 50, steps - 1)
    rise, at = batches.largest_rise()
    return {"optim": optim, "plant": plant, "seed": seed, "planted": len(p.ids), "n": len(text) // 65 + len(p.ids),
            "train_s": round(time.perf_counter() - t0, 1), "stopped": res.stopped, "final_planted": lp,
            "final_rest": lr, "largest_rise": rise, "largest_rise_step": at,
            "largest_rise_batch": batches.rows.get(at, (None, None, None)), "events": evs}


def _med(v) -> str:
    v = [x for x in v if x is not None and np.isfinite(x)]
    return f"{np.median(v):.2f}" if v else "-"


def _rises(rs: list[dict]) -> str:
    v = [r["largest_rise"] for r in rs if "largest_rise" in r]
    return f"{np.median(v):+.0%} ({min(v):+.0%} to {max(v):+.0%})" if v else "-"


def summary(rows: list[dict]) -> str:
    """One table row per optimiser and plant."""
    out = ["| optimiser | plant | runs | live events (per run) | planted share of the rise (median) | "
           "named group >= 80% planted | purity (median) | recall (median) | replay removed / control (median) | "
           "verdicts (data / optimiser state / undetermined) | loss planted / rest at spikes | "
           "loss planted / rest, last 50 steps | largest step-loss rise (median, range) |", "|" + "---|" * 13]
    for optim in dict.fromkeys(r["optim"] for r in rows):
        for plant in dict.fromkeys(r["plant"] for r in rows if r["optim"] == optim):
            rs = [r for r in rows if r["optim"] == optim and r["plant"] == plant]
            evs = [e for r in rs for e in r["events"]]
            per = ", ".join(str(len(r["events"])) for r in rs)
            v = [sum(e["verdict"] == k for e in evs) for k in ("data", "optimiser state", "undetermined")]
            ctrl = plant == "control"
            out.append(
                f"| {optim} | {plant} | {len(rs)} | {len(evs)} ({per}) | "
                f"{'-' if ctrl else _med(e['planted_share'] for e in evs)} | "
                f"{'-' if ctrl else sum(e['purity'] >= 0.8 for e in evs)} | "
                f"{'-' if ctrl else _med(e['purity'] for e in evs)} | {'-' if ctrl else _med(e['recall'] for e in evs)}"
                f" | {_med(e['removed'] for e in evs)} / {_med(e['removed_control'] for e in evs)} | "
                f"{v[0]} / {v[1]} / {v[2]} | {_med(e['loss_planted'] for e in evs)} / "
                f"{_med(e['loss_rest'] for e in evs)} | {_med(r['final_planted'] for r in rs)} / "
                f"{_med(r['final_rest'] for r in rs)} | {_rises(rs)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (each sets the plant and the run)")
    ap.add_argument("--first-seed", type=int, default=0, help="start at this seed instead of 0")
    ap.add_argument("--steps", type=int, default=400, help="training steps a run (the config ships 800)")
    ap.add_argument("--optim", nargs="+", default=["adam", "sgd"], choices=sorted(OPTIMS))
    ap.add_argument("--plant", nargs="+", default=DEFAULT_PLANTS, choices=list(PLANTS))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--table", type=Path, help="only print the table of a --json file written before")
    a = ap.parse_args()
    if a.table:
        print(summary(json.loads(a.table.read_text())))
        return
    torch.set_num_threads(1)
    text = find_text().read_text(encoding="utf-8")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # seed first: a run cut short still has every setting at the same seeds
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            for optim in a.optim:
                for plant in a.plant:
                    r = one_run(optim, plant, seed, text, a.steps, Path(tmp))
                    rows.append(r)
                    print(f"{optim} {plant} seed {seed}: {len(r['events'])} events, {r['train_s']} s, "
                          f"final loss planted {r['final_planted']:.3f} rest {r['final_rest']:.3f}, largest rise "
                          f"{r['largest_rise']:+.0%} at step {r['largest_rise_step']} (its batch: planted "
                          f"loss, rest loss, planted count {r['largest_rise_batch']})", flush=True)
                    for e in r["events"]:
                        print(f"  step {e['step']}: rise {e['rise']:+.2f} planted share {e['planted_share']:.2f} "
                              f"purity {e['purity']:.2f} recall {e['recall']:.2f} batch planted {e['batch_planted']}"
                              f" removed {e['removed']} control {e['removed_control']} {e['verdict']}", flush=True)
                    if a.json:
                        a.json.write_text(json.dumps(rows, indent=1, default=float) + "\n")
    rows.sort(key=lambda r: (a.optim.index(r["optim"]), a.plant.index(r["plant"]), r["seed"]))
    print(summary(rows))


if __name__ == "__main__":
    main()
