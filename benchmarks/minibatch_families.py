"""Calibration of detection on mini-batch runs: planted pairs under SGD and AdamW, and null families.

Each run trains fc-tanh 200-200 (``configs/fc-tanh-ce-sgd-cifar5k.yaml``) on the first 5,000 CIFAR-10
images under the default mini-batch record (a seeded probe subset within ``record.budget``, and every
example's loss in its own batch), then runs detection on the run directory as ``oppsig detect`` does.

Families (``--family``):

- ``planted``: two opposing pairs planted with :func:`signals_acceptance.plant_frames` (a coloured
  frame blended into ``--size`` images of each of two classes per pair: green cats/dogs, magenta
  deer/horses), at ``--blend``; scored per planted group by the best F1 of a found group, and per
  planted pair by whether the two best-matching groups are reported as a pair. Also whether the planted
  groups are in fact anti-phase in the run (ground truth): the correlation of the two planted groups'
  mean loss changes between probe rows (members in the probe), beside random groups of the same classes.
- ``relabelled``: the kept planted runs of ``--setting`` (``--keep``), detected again with every
  example's image swapped for that of a random example of its class (a within-class permutation,
  ``--seeds`` of them over the runs): the loss record keeps its groups, but their inputs no longer share
  anything, so any reported pair is a false one. No training.
- ``null``: no plant (mini-batch noise and spikes, no planted opposing groups): any reported pair is
  counted (natural pairs exist in CIFAR-10; the rate is reported as measured).
- ``mislabel``: ``--size`` examples of each of two classes given the other class's label (planted
  mislabelled examples: not opposing groups); counted: runs with a reported pair both of whose groups
  are mostly (F1 >= 0.5) the mislabelled sets.
- ``hard``: ``--size`` examples of each of two classes blurred into near-uniform grey (hard examples,
  no shared opposing feature across classes); counted as for ``mislabel``.

Settings (``--setting``): ``sgd`` (lr 0.02, momentum 0.9, batch 128: the shipped config), ``sgd-b32``
(lr 0.005, momentum 0.9), ``sgd-b512`` (lr 0.05, momentum 0.9), ``sgd-m0`` (lr 0.1, no momentum,
batch 128), ``adamw`` (lr 1e-3, weight decay 0.01, batch 128); ``sgd-dense`` and ``adamw-dense`` the same with
every example probed every 5 steps (``record.probe_n=5000 record.every=5``, far over the default budget: the
record detection had before the budget).

Training as CIFAR-10 is usually trained: ``--augment crop_flip`` (random crop and flip of each mini-batch,
``data.augment``) and ``--autocast bf16`` (``train.autocast``); each adds ``-<value>`` to the run's folder name.

Writes ``<out>/<family>-<setting>-b<blend>-s<size>/seed<k>/`` (the run, ``planted.json`` and
``score.json``) and prints one line per run and a summary per family; ``--json`` collects the scores.

Usage (each run ~40 s at one thread: training 25 s, detection 10-15 s):
    OPPSIG_DATA=... python benchmarks/minibatch_families.py --family planted --setting sgd adamw --seeds 10
    python benchmarks/minibatch_families.py --family null mislabel hard --setting sgd adamw --seeds 10
    python benchmarks/minibatch_families.py --family planted --setting sgd --seeds 3 --augment crop_flip
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from _common import planted_dataset  # noqa: E402
from signals_acceptance import PLANTED, plant_frames  # noqa: E402

from oppsig.config import load_config  # noqa: E402
from oppsig.data import cifar10  # noqa: E402
from oppsig.signals import SignalsConfig, find_signals_in_run  # noqa: E402
from oppsig.signals.synthetic import overlap_f1  # noqa: E402
from oppsig.store import open_run  # noqa: E402
from oppsig.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "sgd": ["optim.name=sgd", "optim.lr=0.02", "optim.momentum=0.9", "train.batch_size=128"],
    "sgd-b32": ["optim.name=sgd", "optim.lr=0.005", "optim.momentum=0.9", "train.batch_size=32"],
    "sgd-b512": ["optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", "train.batch_size=512"],
    "sgd-m0": ["optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.0", "train.batch_size=128"],
    "adamw": ["optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.01", "train.batch_size=128"],
}
DENSE = ["record.probe_n=5000", "record.every=5"]  # every example every 5 steps: 2.4x the training steps' time
SETTINGS.update({f"{k}-dense": v + DENSE for k, v in list(SETTINGS.items()) if k in ("sgd", "adamw")})


def plant(family: str, raw: np.ndarray, y: np.ndarray, blend: float, size: int, seed: int):
    """``(raw, labels, groups, pairs)`` of one run of ``family`` (groups a0, b0, a1, b1, ...)."""
    rng = np.random.default_rng(1000 + seed)
    if family == "planted":
        raw, groups = plant_frames(raw, y, blend, size=size, seed=seed)
        return raw, y, groups, PLANTED
    if family == "null":
        return raw, y, [], ()
    a = rng.choice(np.flatnonzero(y == 3), size, replace=False)
    b = rng.choice(np.flatnonzero(y == 5), size, replace=False)
    groups = [np.sort(a), np.sort(b)]
    y = y.copy()
    raw = raw.copy()
    if family == "mislabel":
        y[a], y[b] = 5, 3
    elif family == "hard":
        for rows in groups:
            mean = raw[rows].astype(np.float32).mean(axis=(2, 3), keepdims=True)
            raw[rows] = np.round(0.8 * mean + 0.2 * raw[rows]).astype(np.uint8)
    else:
        raise SystemExit(f"unknown family {family}")
    return raw, y, groups, ((3, 5, family),)


def antiphase_truth(run, groups) -> list[float | None]:
    """Per planted pair: the correlation of the two groups' mean loss changes between probe rows (probed members)."""
    cols = {int(i): j for j, i in enumerate(np.asarray(run.index))}
    L = np.asarray(run.losses, dtype=np.float64)
    out = []
    for k in range(0, len(groups), 2):
        ca = [cols[i] for i in groups[k] if i in cols]
        cb = [cols[i] for i in groups[k + 1] if i in cols]
        if len(ca) < 2 or len(cb) < 2 or len(L) < 4:
            out.append(None)
            continue
        da, db = np.diff(L[:, ca].mean(1)), np.diff(L[:, cb].mean(1))
        out.append(float(np.corrcoef(da, db)[0, 1]))
    return out


def score(res, groups, pairs, ids: np.ndarray) -> dict:
    """Best F1 per planted group (rows ``groups`` of the data set whose stable ids are ``ids``; a found group's
    members with those it was extended to), and whether each planted pair is reported as a pair."""
    best = [max([(overlap_f1(g.all_ids, ids[t]), g.id) for g in res.groups] or [(0.0, None)]) for t in groups]
    reported = {frozenset((p.a, p.b)) for p in res.pairs}
    ok = [best[2 * k][1] is not None and frozenset((best[2 * k][1], best[2 * k + 1][1])) in reported
          and min(best[2 * k][0], best[2 * k + 1][0]) >= 0.5 for k in range(len(pairs))]
    return {"f1": [round(b[0], 3) for b in best], "pairs_reported": ok, "n_pairs": len(res.pairs),
            "group_sizes": sorted((len(g.all_ids) for g in res.groups), reverse=True),
            "pair_sizes": [(len(res.group(p.a).all_ids), len(res.group(p.b).all_ids)) for p in res.pairs]}


class _Unchecked:
    """A run seen without its data fingerprint (the relabelled family's inputs are not the run's, on purpose)."""

    def __init__(self, run) -> None:
        self._run = run

    def __getattr__(self, name):
        return getattr(self._run, name)

    @property
    def meta(self) -> dict:
        return {k: v for k, v in self._run.meta.items() if k != "fingerprint"}


def relabelled_run(setting: str, blend: float, size: int, seed: int, out: Path, base, runs: int) -> dict:
    """Detection on kept planted run ``seed % runs`` with each image swapped within its class (seeded)."""
    k = seed % runs
    d = out / f"planted-{setting}-b{blend}-s{size}" / f"seed{k}"
    if not (d / "run" / "meta.json").exists():
        raise SystemExit(f"error: {d}/run is missing: run the planted family with --keep first")
    raw, y, groups, pairs = plant("planted", base.raw.numpy(), base.y.numpy(), blend, size, k)
    rng = np.random.default_rng(5000 + seed)
    perm = np.arange(len(y))
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        perm[rows] = rng.permutation(rows)
    ds = dataclasses.replace(planted_dataset(base, raw[perm]), y=torch.as_tensor(y))
    t0 = time.perf_counter()
    res = find_signals_in_run(_Unchecked(open_run(d / "run")), ds, SignalsConfig())
    return {"family": "relabelled", "setting": setting, "blend": blend, "size": size, "seed": seed, "run": k,
            **score(res, groups, pairs, ds.index.numpy()), "antiphase_truth": [], "train_s": 0.0,
            "detect_s": round(time.perf_counter() - t0, 1)}


def one_run(family: str, setting: str, blend: float, size: int, seed: int, out: Path, base, keep: bool,
            redetect: bool = False, precision: tuple[str, str] = ("none", "none"), extra: tuple[str, ...] = ()) -> dict:
    augment, autocast = precision
    tag = "".join(f"-{v}" for v in precision if v != "none")
    d = out / f"{family}-{setting}-b{blend}-s{size}{tag}" / f"seed{seed}"
    if (d / "score.json").exists() and not redetect:
        return json.loads((d / "score.json").read_text())
    raw, y, groups, pairs = plant(family, base.raw.numpy(), base.y.numpy(), blend, size, seed)
    ds = dataclasses.replace(planted_dataset(base, raw), y=torch.as_tensor(y))
    meta = d / "run" / "meta.json"
    if meta.exists() and "finished" in json.loads(meta.read_text()):  # a kept run: detected (again) here
        old = json.loads((d / "score.json").read_text()) if (d / "score.json").exists() else {}
        row = {"family": family, "setting": setting, "blend": blend, "size": size, "seed": seed,
               "probe": json.loads(meta.read_text()).get("probe"), "train_s": old.get("train_s")}
        return detect_and_score(d, ds, groups, pairs, row)
    cfg = load_config(ROOT / "configs" / "fc-tanh-ce-sgd-cifar5k.yaml",
                      [*SETTINGS[setting], f"seed={seed}", "threads=1", "train.checkpoint_every=0",
                       "data.test_n=0", f"data.augment={augment}", f"train.autocast={autocast}", *extra])
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    res_train = train(cfg, run_dir=d / "run", progress=False, data=(ds, None))
    (d / "planted.json").write_text(json.dumps({"groups": [g.tolist() for g in groups], "pairs": pairs}) + "\n")
    row = {"family": family, "setting": setting, "blend": blend, "size": size, "seed": seed,
           "probe": res_train.probe, "train_s": round(time.perf_counter() - t0, 1)}
    row = detect_and_score(d, ds, groups, pairs, row)
    if not keep:
        shutil.rmtree(d / "run")
    return row


def detect_and_score(d: Path, ds, groups, pairs, row: dict) -> dict:
    """Detection on the run in ``d`` as ``oppsig detect`` does it, scored against the plant (``score.json``)."""
    run = open_run(d / "run")
    t0 = time.perf_counter()
    res = find_signals_in_run(run, ds, SignalsConfig())
    row = {**row, **score(res, groups, pairs, ds.index.numpy()), "antiphase_truth": antiphase_truth(run, groups),
           "record": res.dataset.get("record"), "detect_s": round(time.perf_counter() - t0, 1)}
    (d / "score.json").write_text(json.dumps(row) + "\n")
    return row


def summary(rows: list[dict]) -> str:
    fam = rows[0]["family"]
    n = len(rows)
    if fam == "planted":
        both = sum(all(r["pairs_reported"]) and min(r["f1"]) >= 0.9 for r in rows)
        any_pair = sum(any(r["pairs_reported"]) for r in rows)
        f1 = np.array([r["f1"] for r in rows])
        anti = np.array([[np.nan if c is None else c for c in r["antiphase_truth"]] for r in rows], dtype=float)
        return (f"both pairs reported with group F1 >= 0.9: {both}/{n}; at least one pair: {any_pair}/{n}; "
                f"group F1 median {np.median(f1):.2f} (min {f1.min():.2f}); planted groups' loss-change "
                f"correlation (ground truth) median {np.nanmedian(anti):.2f}")
    if fam == "null":
        return f"runs with a reported pair: {sum(r['n_pairs'] > 0 for r in rows)}/{n} (natural pairs counted)"
    if fam == "relabelled":
        return f"runs with a (false) reported pair: {sum(r['n_pairs'] > 0 for r in rows)}/{n}"
    false = sum(any(r["pairs_reported"]) for r in rows)
    return f"runs reporting the planted {fam} sets as a pair: {false}/{n}; runs with any pair: " \
           f"{sum(r['n_pairs'] > 0 for r in rows)}/{n}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", nargs="+", default=["planted"],
                    choices=["planted", "relabelled", "null", "mislabel", "hard"])
    ap.add_argument("--runs", type=int, default=10, help="relabelled: kept planted runs to draw from")
    ap.add_argument("--setting", nargs="+", default=["sgd", "adamw"], choices=sorted(SETTINGS))
    ap.add_argument("--blend", type=float, nargs="+", default=[1.0])
    ap.add_argument("--size", type=int, nargs="+", default=[60])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/minibatch-families"))
    ap.add_argument("--keep", action="store_true", help="keep each run directory (else only its scores)")
    ap.add_argument("--json", type=Path, help="write every run's scores to this file")
    ap.add_argument("--redetect", action="store_true", help="detect the kept runs again (no training)")
    ap.add_argument("--augment", default="none", choices=["none", "crop_flip"], help="data.augment of every run")
    ap.add_argument("--autocast", default="none", choices=["none", "bf16"], help="train.autocast of every run")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides of every trained run, e.g. record.every=27")
    args = ap.parse_args()
    base = cifar10(n=5000)
    t_all = time.perf_counter()
    everything = []
    for family in args.family:
        for setting in args.setting:
            for blend in args.blend if family == "planted" else [args.blend[0]]:
                for size in args.size:
                    rows = []
                    for seed in range(args.first_seed, args.first_seed + args.seeds):
                        r = (relabelled_run(setting, blend, size, seed, args.out, base, args.runs)
                             if family == "relabelled" else
                             one_run(family, setting, blend, size, seed, args.out, base, args.keep, args.redetect,
                                     (args.augment, args.autocast), tuple(args.set)))
                        rows.append(r)
                        print(f"{family} {setting} blend {blend} size {size} seed {seed}: F1 {r['f1']} pairs "
                              f"{r['pairs_reported']} ({r['n_pairs']} reported {r['pair_sizes']}); anti-phase "
                              f"truth {r['antiphase_truth']}; {r['train_s']} + {r['detect_s']} s", flush=True)
                    print(f"== {family} {setting} blend {blend} size {size}: {summary(rows)}", flush=True)
                    everything += rows
    print(f"wall time {time.perf_counter() - t_all:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1) + "\n")


if __name__ == "__main__":
    main()
