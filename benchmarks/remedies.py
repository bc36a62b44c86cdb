"""Remedies at a loss spike, compared at equal steps on planted mini-batch runs that spike and sometimes diverge.

Each run trains fc-tanh 200-200 (``configs/fc-tanh-ce-sgd-cifar5k.yaml``: SGD, momentum 0.9, batch 128) on the
first ``--n`` (5,000) CIFAR-10 images, two opposing pairs of 250+250 planted (:func:`signals_acceptance.plant_frames`,
blend 1.0, as in ``live_minibatch_families.py --size 250``), at a learning rate ``--lr`` above the shipped 0.02,
for ``--steps`` steps under each remedy (``--remedy``):

- ``none``: no remedy. This run records (the default mini-batch record: probe subset and batch record) and
  ``oppsig detect`` runs on it: its groups are the ``live.groups`` of ``downweight``.
- ``skip_update`` (OLMo-core's ``SkipStepOptimizer``, Levanter's skip-step): ``live.skip_update``: at each spike
  of oppsig's live detector the spiking step's update is undone. Lightning's remedy (leave out the batches its
  ``SpikeDetection`` recorded, in a rerun) is the same update sequence under the same detector (the rerun is
  identical up to the first recorded batch, which it leaves out exactly as the skip does; it leaves out only
  the batches the first run recorded), at the cost of the first run: it is not run separately.
- ``rollback``: ``live.rollback``: back to the last kept state at or before the spike's onset (an in-memory
  :class:`~oppsig.live.rollback.Snapshots` every ``--keep-every`` steps, as the framework callbacks keep), the
  batches since skipped; the step counter goes on, so the steps in between are spent and thrown away.
- ``lower_lr``: ``live.lr_factor`` x ``live.lr_steps`` after each spike (``--lr-factor``, ``--lr-steps``).
- ``zclip``: ZClip (arXiv 2504.02507, bluorion-com/ZClip ``zclip.py``): the gradient norm's z-score against an
  EMA of its mean and variance (alpha 0.97, the first 25 norms set them); above z 2.5 the gradient is clipped
  to the norm ``mean + 2.5**2 * std / z`` and the EMA takes that norm. oppsig's loop has no hook between the
  backward and the optimiser step, so it runs as a ``torch.optim.Optimizer.register_step_pre_hook``
  registered from ``on_train_start`` (the same loop, model, data and batches as the others).
- ``downweight``: ``live.groups`` = the ``signals.json`` of ``oppsig detect`` on this seed's ``none`` run,
  ``live.downweight_group`` = the first group of its strongest significant pair, ``live.downweight``
  ``--downweight``: once a live event names that group (or its partner), its examples' loss weight drops.
- ``downweight_named``: live attribution as shipped for mini-batch runs (``live.replay`` on: groups named from
  a probe at kept states, checked by replay); at each event the rising group it names is weighted
  ``--downweight`` from then on (done here, in :class:`NamedDownweight`: ``live.downweight_group`` takes a group
  of a ``signals.json``, not one named live).

All remedies but ``zclip`` act at events of oppsig's live detector (default ``LiveConfig``; ``live.replay=false``
but for ``downweight_named``: the others do not need the groups named). Equal compute: every remedy gets the
same number of steps (one forward+backward of a mini-batch each); the table reports what each spends beyond them
(``downweight``: the earlier recorded run, its probe and detect; ``downweight_named``: the updates its replays
redo) and the updates it throws away (skipped updates, rolled-back steps).

Measured per run, on the per-step mini-batch loss: divergence (a non-finite loss, or a 50-step mean loss above
``--diverge-level``, 2.5 > ln 10 = chance, after step 200); spikes (oppsig's live detector run on the loss curve
afterwards, the same rule for every remedy) and, per spike, the steps until the 5-step median loss is back
within 10% of the baseline the detector had at the spike; the final loss and accuracy on the whole training
set and the accuracy on 1,000 CIFAR-10 test images.

In this setting most spikes sit at the epoch's end: 5,000 = 39 x 128 + 8, so the last batch of each epoch holds
8 examples (its own loss is a mean of 8, and its update is taken at the full lr); ``--n 4992`` leaves it out.

Usage (as measured for docs/findings.md; a run takes 40-95 s at one thread under a load of 4-6 on 2 cores, a
``none`` run with its detect 2-2.5 min, a ``downweight_named`` run 1.5-4 min with its replays; seeds 0-2 and 5-7
of the first line ran as two processes side by side, 26 min each; the second line 16.5 min; ``--table``/``--plot``
read the JSON lines of earlier runs):
    OPPSIG_DATA=... python benchmarks/remedies.py --lr 0.16 --seeds 3 --first-seed 0 --out runs.jsonl \
        --remedy none skip_update rollback lower_lr zclip downweight      # and --first-seed 5
    python benchmarks/remedies.py --lr 0.16 --seeds 5 --remedy downweight_named --out runs.jsonl
    python benchmarks/remedies.py --lr 0.18 --seeds 2 --out runs18.jsonl --remedy none skip_update rollback \
        lower_lr zclip downweight
    python benchmarks/remedies.py --lr 0.16 --n 4992 --seeds 3 --remedy none zclip --out runs4992.jsonl  # 3 min
    python benchmarks/remedies.py --table runs.jsonl --plot docs/remedies.png --plot-seed 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import channel_stats, planted_dataset  # noqa: E402
from signals_acceptance import plant_frames  # noqa: E402
from spike_rules import ZClipLoss  # noqa: E402

from oppsig.config import LiveConfig, load_config  # noqa: E402
from oppsig.data import cifar10  # noqa: E402
from oppsig.errors import DivergenceError  # noqa: E402
from oppsig.live import LiveHook  # noqa: E402
from oppsig.live.detector import SpikeDetector  # noqa: E402
from oppsig.live.replay import CONTROLS  # noqa: E402
from oppsig.live.rollback import Snapshots  # noqa: E402
from oppsig.training.actions import downweight  # noqa: E402
from oppsig.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REMEDIES = ["none", "skip_update", "rollback", "lower_lr", "zclip", "downweight", "downweight_named"]
RECOVER_MARGIN = 0.1  # back within 10% of the detector's baseline
DIVERGE_AFTER = 200


class ZClip(ZClipLoss):
    """ZClip's adaptive clipping of the total gradient norm (z 2.5, EMA alpha 0.97, 25 warm-up norms): its
    z-score and EMA are :class:`spike_rules.ZClipLoss`'s, fed the gradient norm instead of the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.clipped: list[int] = []
        self.step = 0

    def on_train_start(self, state) -> None:
        state.optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._clip(opt))

    def on_step_start(self, state) -> None:
        self.step = state.step

    @torch.no_grad()
    def _clip(self, opt) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        if not math.isfinite(norm):
            return
        mean, std = self.mean, self.var ** 0.5
        if self.update(self.step, norm):  # the EMA took the clipped norm in its place
            x = mean + self.z ** 2 * std / ((norm - mean) / (std + self.eps))
            for g in grads:
                g.mul_(x / norm)
            self.clipped.append(self.step)


class RemedyHook(LiveHook):
    """The live hook with in-memory rollback points every ``keep_every`` steps (no checkpoints on disk)."""

    def __init__(self, cfg: LiveConfig, keep_every: int) -> None:
        super().__init__(cfg, describe=False)
        self.keep_every = keep_every

    def on_train_start(self, state) -> None:
        super().on_train_start(state)
        self.session.rollback = Snapshots(every=self.keep_every)


class NamedDownweight(RemedyHook):
    """At each live event, the rising group that its probe names (``live.replay`` on) is weighted ``factor``
    from then on (each example once); counts the updates the event's replays redid."""

    def __init__(self, cfg: LiveConfig, factor: float) -> None:
        super().__init__(cfg, keep_every=50)
        self.factor, self.seen, self.replayed = factor, 0, 0
        self.ids: list[list[int]] = []

    def on_step_end(self, state) -> None:
        super().on_step_end(state)
        events = self.live.events if self.live is not None else []
        for ev in events[self.seen:]:
            if ev.replay:
                self.replayed += int(ev.replay["steps"]) * (2 + CONTROLS + len(ev.replay.get("removals", [])))
            g = next((g for g in ev.groups if g.get("id") == "rise" and g.get("ids")), None)
            if g is None:
                continue
            done = set().union(*map(set, self.ids)) if self.ids else set()
            new = np.setdiff1d(np.asarray(g["ids"], dtype=np.int64), np.fromiter(done, np.int64, len(done)))
            index = state.train_data.index.cpu().numpy()
            downweight(state.extras["example_weights"], np.flatnonzero(np.isin(index, new)), self.factor)
            self.ids.append(new.tolist())
            self.session.log.append({"kind": "downweight", "step": int(ev.step), "size": int(len(new))})
        self.seen = len(events)


class Curve:
    """Per-step loss and accuracy of the mini-batch; at the end, the whole training set's loss and accuracy."""

    def __init__(self) -> None:
        self.loss: list[float] = []
        self.acc: list[float] = []
        self.final: dict = {}

    def on_step_end(self, state) -> None:
        self.loss.append(state.metrics["loss"])
        self.acc.append(state.metrics["accuracy"])

    @torch.no_grad()
    def on_train_end(self, state) -> None:
        data = state.train_data
        out = state.model(data.x)
        losses = state.loss_fn(out, data.y)
        self.final = {"train_loss": float(losses.mean()), "train_acc": float((out.argmax(-1) == data.y).float().mean())}


def spikes_and_recovery(loss: np.ndarray) -> list[dict]:
    """oppsig's live detector on the loss curve; per spike the steps until the 5-step median loss is back within
    ``RECOVER_MARGIN`` of the detector's baseline (None: not by the end)."""
    det = SpikeDetector(LiveConfig())
    out = []
    for t, v in enumerate(loss):
        c = det.update(t, float(v))
        if c is None:
            continue
        back = None
        for s in range(t + 1, len(loss) - 4):
            if np.median(loss[s:s + 5]) <= c.baseline * (1 + RECOVER_MARGIN):
                back = s - t
                break
        out.append({"step": t, "rise": round(c.rise, 3), "recover": back})
    return out


def diverged(loss: np.ndarray, level: float, error: bool) -> int | None:
    """The step at which the run diverged (non-finite loss, or a 50-step mean above ``level``), or None."""
    if error:
        return len(loss)
    if len(loss) <= DIVERGE_AFTER + 50:
        return None
    m = np.convolve(loss, np.ones(50) / 50, mode="valid")[DIVERGE_AFTER:]
    hit = np.flatnonzero(m > level)
    return int(hit[0] + DIVERGE_AFTER + 49) if len(hit) else None


def detect_groups(run_dir: Path, ds, out: Path) -> tuple[int | None, float]:
    """``oppsig detect``'s groups of the recorded run written to ``out``; the first group of its strongest
    significant pair (None: no pair), and the seconds it took."""
    from oppsig.signals import SignalsConfig, find_signals_in_run, write_signals_json
    from oppsig.store import open_run

    t0 = time.perf_counter()
    res = find_signals_in_run(open_run(run_dir), ds, SignalsConfig())
    write_signals_json(res, out)
    pairs = sorted((p for p in res.pairs if p.significant), key=lambda p: -p.strength)
    return (int(pairs[0].a) if pairs else None), round(time.perf_counter() - t0, 1)


def planted_share(signals_json: Path, group: int, planted: np.ndarray) -> float:
    """The share of the group's members (``signals.json``'s ids) that are planted examples (stable ids)."""
    from oppsig.signals import read_signals_json

    g = next(x for x in read_signals_json(signals_json).groups if int(x.id) == int(group))
    return round(float(np.isin(np.asarray(g.ids), planted).mean()), 3)


def one_run(remedy: str, seed: int, data, a, work: Path) -> dict:
    """Train one seed under one remedy; the row of the JSON lines."""
    ds, test, planted = data
    over = [f"optim.lr={a.lr}", f"seed={seed}", "threads=1", f"train.steps={a.steps}", "train.checkpoint_every=0",
            f"live.replay={str(remedy == 'downweight_named').lower()}"]  # the loop hands a replayer only then
    row = {"remedy": remedy, "seed": seed, "lr": a.lr, "steps": a.steps, "diverge_level": a.diverge_level, "n": a.n}
    hooks, run_dir = [], None
    sig = work / f"signals-seed{seed}.json"
    live = {"skip_update": ["live.skip_update=true"], "rollback": ["live.rollback=true"],
            "lower_lr": [f"live.lr_factor={a.lr_factor}", f"live.lr_steps={a.lr_steps}"]}.get(remedy)
    if remedy == "downweight":
        g = json.loads((work / f"group-seed{seed}.json").read_text()) if sig.exists() else {"group": None}
        row["group"] = g["group"]
        row["group_planted"] = planted_share(sig, g["group"], planted) if g["group"] is not None else None
        row["extra"] = g
        live = ([f"live.groups={sig}", f"live.downweight_group={g['group']}", f"live.downweight={a.downweight}"]
                if g["group"] is not None else None)
    if live is not None:
        hooks.append(RemedyHook(load_config(None, ["live.enabled=true", "live.replay=false", *live]).live,
                                a.keep_every))
    if remedy == "zclip":
        hooks.append(ZClip())
    if remedy == "downweight_named":
        hooks.append(NamedDownweight(load_config(None, ["live.enabled=true"]).live, a.downweight))
    if remedy == "none":
        run_dir = work / f"none-seed{seed}"
    curve = Curve()
    cfg = load_config(ROOT / "configs" / "fc-tanh-ce-sgd-cifar5k.yaml", [*over, f"data.n={a.n}"])
    t0, err, res = time.perf_counter(), False, None
    try:
        res = train(cfg, run_dir=run_dir, overwrite=True, progress=False, data=(ds, test), hooks=[*hooks, curve],
                    example_weights=torch.ones(len(ds)))
    except DivergenceError:
        err = True
    row["train_s"] = round(time.perf_counter() - t0, 1)
    if remedy == "none" and res is not None:
        group, detect_s = detect_groups(run_dir, ds, sig)
        info = {"group": group, "probe": res.probe, "detect_s": detect_s, "recorded_s": row["train_s"]}
        (work / f"group-seed{seed}.json").write_text(json.dumps(info) + "\n")
    for h in hooks:
        if isinstance(h, NamedDownweight):
            row["replayed"] = h.replayed
            row["named_planted"] = [round(float(np.isin(ids, planted).mean()), 3) for ids in h.ids if ids]
    return {**row, **measure(curve, res, err, hooks, a)}


def measure(curve: Curve, res, err: bool, hooks: list, a) -> dict:
    """The run's measures: divergence, spikes and recovery, final loss/accuracy, actions and thrown-away steps."""
    loss = np.asarray(curve.loss, dtype=np.float64)
    log = [e for h in hooks if isinstance(h, LiveHook) for e in h.session.log]
    clipped = [s for h in hooks if isinstance(h, ZClip) for s in h.clipped]
    thrown = sum(1 for e in log if e["kind"] == "skip_update")
    thrown += sum(e["step"] - e["to_step"] + 1 for e in log if e["kind"] == "rollback")
    events = sum(h.live is not None and len(h.live.events) for h in hooks if isinstance(h, LiveHook))
    out = {"diverged_at": diverged(loss, a.diverge_level, err), "spikes": spikes_and_recovery(loss),
           "actions": [{"kind": e["kind"], "step": e["step"]} for e in log], "clipped": clipped,
           "live_events": int(events), "thrown_away": int(thrown),
           "loss_curve": [round(v, 4) if math.isfinite(v) else None for v in loss.tolist()]}
    if err:
        out.update(train_loss=float("inf"), train_acc=None, test_acc=None)
    else:
        out.update(curve.final, test_acc=res.metrics.get("test_accuracy"))
    return out


def load_data(seed: int, base, test_base):
    """The planted training set of ``seed``, the test images standardised by its statistics, and the stable ids
    of the planted examples."""
    raw, groups = plant_frames(base.raw.numpy(), base.y.numpy(), 1.0, size=250, seed=seed)
    ds = dataclasses.replace(planted_dataset(base, raw), y=base.y.clone())
    mean, std = channel_stats(raw)
    test = planted_dataset(test_base, test_base.raw.numpy(), mean, std)
    return ds, test, ds.index.numpy()[np.concatenate(groups)]


def _mid(xs: list) -> str:
    """``median [min, max]`` of the finite values of ``xs`` ("-" when none)."""
    v = np.asarray([x for x in xs if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return "-"
    f = "{:.0f}" if np.all(v == np.round(v)) and v.max() >= 10 else "{:.3g}"
    return f"{f.format(np.median(v))} [{f.format(v.min())}, {f.format(v.max())}]"


def ended_above(row: dict) -> bool:
    """The run's last 100 steps' mean loss is above its divergence level (or not finite)."""
    tail = [v for v in row["loss_curve"][-100:] if v is not None]
    return len(tail) < 100 or float(np.mean(tail)) > row["diverge_level"]


def extra_passes(rows: list[dict]) -> str:
    """What a remedy spends beyond its steps (the downweight's earlier recorded run, its probe and detect)."""
    if any("replayed" in r for r in rows):
        return f"{_mid([r['replayed'] for r in rows])} replayed updates + the probe's forwards at kept states"
    ex = [r["extra"] for r in rows if r.get("extra") and r["extra"].get("probe")]
    if not ex:
        return "0"
    steps = rows[0]["steps"]
    share = np.median([e["probe"]["measured_share"] for e in ex])
    return (f"{steps} (an earlier run) + its probe ({share:.0%} of its training time) + detect "
            f"({np.median([e['detect_s'] for e in ex]):.0f} s)")


def table(rows: list[dict]) -> str:
    """The markdown table: per remedy over seeds."""
    head = ("| remedy | runs | diverged (still at the end) | spikes per run | steps to recover (spikes not recovered) "
            "| final train loss | train accuracy | test accuracy | actions per run | updates thrown away per run "
            "| passes beyond the steps |")
    out = [head, "|" + "---|" * 11]
    for rem in [r for r in REMEDIES if any(x["remedy"] == r for x in rows)]:
        rs = [x for x in rows if x["remedy"] == rem]
        sp = [s for x in rs for s in x["spikes"]]
        rec = [s["recover"] for s in sp if s["recover"] is not None]
        n_not = sum(s["recover"] is None for s in sp)
        acts = [len(x["actions"]) + len(x["clipped"]) for x in rs]
        name = {"skip_update": "skip update = skip the batches", "downweight": "downweight (detect's top group)",
                "downweight_named": "downweight (live-named group)"}.get(rem, rem)
        end = sum(x["diverged_at"] is not None and ended_above(x) for x in rs)
        out.append(f"| {name} | {len(rs)} | {sum(x['diverged_at'] is not None for x in rs)} ({end}) | "
                   f"{_mid([len(x['spikes']) for x in rs])} | {_mid(rec)} ({n_not} of {len(sp)}) | "
                   f"{_mid([x['train_loss'] for x in rs])} | {_mid([x['train_acc'] for x in rs])} | "
                   f"{_mid([x['test_acc'] for x in rs])} | {_mid(acts)} | {_mid([x['thrown_away'] for x in rs])} | "
                   f"{extra_passes(rs)} |")
    named = [p for x in rows if x["remedy"] == "downweight_named" for p in x.get("named_planted", [])]
    if named:
        out.append(f"\ndownweight_named: {len(named)} groups down-weighted, members planted {_mid(named)}")
    dw = [x for x in rows if x["remedy"] == "downweight"]
    if dw:
        named = [x for x in dw if x.get("group") is not None]
        fired = [x for x in dw if any(e["kind"] == "downweight" for e in x["actions"])]
        out.append(f"\ndownweight: a significant pair (its first group down-weighted) in {len(named)} of {len(dw)} "
                   f"seeds, members planted {_mid([x.get('group_planted') for x in named])}; the action fired in "
                   f"{len(fired)} runs, at steps {sorted(e['step'] for x in fired for e in x['actions'])}")
    return "\n".join(out)


def plot(rows: list[dict], path: Path, seed: int) -> None:
    """Left: the loss (20-step mean) of one seed under each remedy; right: final train loss per remedy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rems = [r for r in REMEDIES if any(x["remedy"] == r for x in rows)]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    for i, rem in enumerate(rems):
        run = next((x for x in rows if x["remedy"] == rem and x["seed"] == seed), None)
        if run is None:
            continue
        y = np.array([np.nan if v is None else v for v in run["loss_curve"]])
        k = 20
        sm = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(k - 1, len(y)), sm, lw=1, color=f"C{i}", label=rem)
        for s in run["spikes"]:
            ax.plot(s["step"], sm[max(0, s["step"] - k + 1)] if s["step"] >= k - 1 else sm[0], "v", ms=4,
                    color=f"C{i}")
    ax.axhline(rows[0].get("diverge_level", 2.5), color="grey", ls="--", lw=0.8)
    ax.set(xlabel="step", ylabel="mini-batch loss (20-step mean)", yscale="log",
           title=f"seed {seed}, lr {rows[0]['lr']:g} (triangles: spikes)")
    ax.legend(fontsize=8)
    rng = np.random.default_rng(0)
    for i, rem in enumerate(rems):
        rs = [x for x in rows if x["remedy"] == rem]
        fin = np.array([x["train_loss"] for x in rs], dtype=np.float64)
        div = np.array([x["diverged_at"] is not None for x in rs])
        xs = i + rng.uniform(-0.15, 0.15, len(fin))
        bx.plot(xs[~div], fin[~div], "o", ms=4, color=f"C{i}", alpha=0.8)
        bx.plot(xs[div], np.minimum(fin[div], 1e3), "x", ms=5, color=f"C{i}")
        if np.isfinite(np.median(fin)):
            bx.hlines(np.median(fin), i - 0.3, i + 0.3, color="k", lw=1.5)
    bx.set_xticks(range(len(rems)), rems, rotation=30, fontsize=8)
    bx.set(ylabel="final training loss (5,000 images)", title="each remedy over its seeds (bar: median; x: diverged)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--n", type=int, default=5000, help="training images (4992 = 39 x 128: no short last batch)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--remedy", nargs="+", default=REMEDIES, choices=REMEDIES)
    ap.add_argument("--lr-factor", type=float, default=0.2)
    ap.add_argument("--lr-steps", type=int, default=50)
    ap.add_argument("--downweight", type=float, default=0.1)
    ap.add_argument("--keep-every", type=int, default=50)
    ap.add_argument("--diverge-level", type=float, default=2.5)
    ap.add_argument("--out", type=Path, help="append one JSON line per run")
    ap.add_argument("--work", type=Path, help="folder of the none runs and their signals.json (default: temporary)")
    ap.add_argument("--table", nargs="*", type=Path, help="JSON lines to summarise (no training)")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--plot-seed", type=int, default=0)
    a = ap.parse_args()
    if a.table is not None:
        rows = [json.loads(line) for p in a.table for line in p.read_text().splitlines() if line.strip()]
        print(table(rows))
        if a.plot:
            plot(rows, a.plot, a.plot_seed)
        return
    torch.set_num_threads(1)
    base, test_base = cifar10(n=a.n), cifar10(n=1000, train=False)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            data = load_data(seed, base, test_base)
            for remedy in sorted(a.remedy, key=lambda r: r != "none"):  # none first: downweight needs its groups
                r = one_run(remedy, seed, data, a, work)
                print(f"seed {seed} {remedy:12s} {r['train_s']:6.1f}s diverged {r['diverged_at']} spikes "
                      f"{len(r['spikes'])} actions {len(r['actions'])} clipped {len(r['clipped'])} train loss "
                      f"{r['train_loss']:.3f} acc {r['train_acc']} test {r['test_acc']}", flush=True)
                if a.out:
                    with open(a.out, "a") as f:
                        f.write(json.dumps(r) + "\n")
        print(f"wall time {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
