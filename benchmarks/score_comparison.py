"""Opposing groups beside the per-example scores users reach for (Data Maps, forgetting, EL2N, AUM).

On CIFAR-10 with, in the same run, one planted opposing pair (``--size`` cats and ``--size`` dogs sharing a green
4-pixel frame, :func:`signals_acceptance.plant_frames`) and ``2 x --size`` mislabelled examples (drawn from the other
images, each label flipped to a random other class), fc-tanh 200-200 is trained with mini-batch SGD
(``configs/fc-tanh-ce-sgd-cifar5k.yaml``: batch 128, lr 0.02, momentum 0.9), every example probed every
``--every`` steps with its logits (``record.logits_every``). Per run (one per seed; the seed sets the plant, the
flipped labels, the initialisation and the batch order):

- oppsig's groups (:func:`oppsig.signals.find_signals_in_run`): the members of the reported pairs, and of all
  groups found;
- each score of :mod:`oppsig.signals.scores` (confidence, variability, loss variance, forgetting, EL2N over the
  first ``--el2n-share`` of training, AUM) ranked in the direction it flags (:data:`~oppsig.signals.scores.FLAGS`);
  its top-k examples with k the size of the target set;

and, against (a) the planted opposing groups and (b) the mislabelled examples, precision and recall (for the
scores they coincide, k being the target's size) and the AUROC. Printed: a table over seeds (mean and range).
Results per seed are cached under ``--out`` (``seed<S>/result.json``); ``--table`` only prints the table.

Wall time: 15.3 minutes for 5 seeds at one thread on a 2-core machine under a load average of about 7 (a seed:
training 2,000 steps on 5,000 images with 400 probes of every example and their logits, 150-220 s; detection
7-13 s).

Usage:
    OPPSIG_DATA=/work/shared/data nice -n 10 python benchmarks/score_comparison.py [--seeds 0 1 2 3 4]
        [--n 5000] [--steps 2000] [--every 5] [--size 60] [--out bench_out/score_comparison] [--table]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import planted_dataset
from signals_acceptance import plant_frames
from oppsig.config import load_config
from oppsig.data import cifar10
from oppsig.signals import find_signals_in_run
from oppsig.signals.scores import FLAGS, auroc, per_example_scores, top_k

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fc-tanh-ce-sgd-cifar5k.yaml"
PAIR = ((3, 5, "green"),)  # cat / dog with a green frame


def plant(n: int, size: int, seed: int):
    """CIFAR-10's first ``n`` images with the planted pair and ``2 size`` flipped labels.

    Returns:
        ``(train set, planted rows (2 size,), mislabelled rows (2 size,))``.
    """
    ds = cifar10(n=n)
    y = ds.y.numpy().copy()
    raw, groups = plant_frames(ds.raw.numpy(), y, 1.0, size=size, seed=seed, pairs=PAIR)
    planted = np.concatenate(groups)
    rng = np.random.default_rng(1000 + seed)
    free = np.setdiff1d(np.arange(n), planted)
    flipped = np.sort(rng.choice(free, 2 * size, replace=False))
    y[flipped] = (y[flipped] + rng.integers(1, len(ds.classes), len(flipped))) % len(ds.classes)
    ds = dataclasses.replace(planted_dataset(ds, raw), y=torch.from_numpy(y))
    return ds, np.sort(planted), flipped


def train_run(ds, args, seed: int, run_dir: Path) -> float:
    """Train the SGD run of ``seed`` into ``run_dir``; returns the wall time (s)."""
    from oppsig.training import train

    cfg = load_config(str(CONFIG), [f"seed={seed}", f"data.n={args.n}", f"train.steps={args.steps}",
                                    f"record.every={args.every}", f"record.probe_n={args.n}", "record.mode=dense",
                                    f"record.logits_every={args.every}", "train.checkpoint_every=0",
                                    f"name=seed{seed}"])
    t0 = time.perf_counter()
    train(cfg, run_dir=run_dir, data=(ds, None), progress=False, overwrite=True)
    return time.perf_counter() - t0


def compare(flagged: dict[str, np.ndarray], scores: dict[str, np.ndarray], targets: dict[str, np.ndarray],
            n: int) -> dict:
    """Precision, recall and AUROC of each set of flagged examples and each score against each target."""
    out = {}
    for tname, rows in targets.items():
        truth = np.zeros(n, dtype=bool)
        truth[rows] = True
        res = {}
        for name, members in flagged.items():
            hit = np.zeros(n, dtype=bool)
            hit[members] = True
            tp = int((hit & truth).sum())
            res[name] = {"precision": tp / max(int(hit.sum()), 1), "recall": tp / len(rows),
                         "auroc": auroc(hit.astype(float), truth), "k": int(hit.sum())}
        for name, s in scores.items():
            tp = int(truth[top_k(s, len(rows), FLAGS[name])].sum())
            res[name] = {"precision": tp / len(rows), "recall": tp / len(rows),
                         "auroc": auroc(FLAGS[name] * s, truth), "k": len(rows)}
        out[tname] = res
    return out


def one_seed(args, seed: int) -> dict:
    d = Path(args.out) / f"seed{seed}"
    f = d / "result.json"
    if f.exists():
        return json.loads(f.read_text())
    from oppsig import open_run

    ds, planted, flipped = plant(args.n, args.size, seed)
    print(f"== seed {seed}: planted {len(planted)} framed cats/dogs, {len(flipped)} flipped labels", flush=True)
    t_train = train_run(ds, args, seed, d / "run")
    run = open_run(d / "run")
    t0 = time.perf_counter()
    res = find_signals_in_run(run, ds)
    t_detect = time.perf_counter() - t0
    losses, correct = np.asarray(run.losses[:], np.float64), np.asarray(run.correct[:])
    logits, lsteps = np.asarray(run.logits[:], np.float64), run.logit_steps
    early = np.flatnonzero(lsteps <= args.el2n_share * args.steps)
    scores = per_example_scores(losses, correct, logits, ds.y.numpy(), el2n_rows=early)
    in_pairs = sorted({int(i) for p in res.pairs for g in (res.group(p.a), res.group(p.b)) for i in g.members})
    in_groups = sorted({int(i) for g in res.groups for i in g.members})
    flagged = {"oppsig pairs": np.asarray(in_pairs, dtype=int), "oppsig groups": np.asarray(in_groups, dtype=int)}
    out = {"seed": seed, "train_s": t_train, "detect_s": t_detect, "n_pairs": len(res.pairs),
           "n_groups": len(res.groups), "final_loss": float(np.nanmean(losses[-1])),
           "pairs": [[res.group(p.a).size, res.group(p.b).size, p.corr] for p in res.pairs],
           "compare": compare(flagged, scores, {"opposing": planted, "mislabelled": flipped}, args.n)}
    d.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(out, indent=1) + "\n")
    print(f"   trained in {t_train:.0f} s, detected in {t_detect:.0f} s: {len(res.pairs)} pairs, "
          f"{len(res.groups)} groups", flush=True)
    return out


def table(results: list[dict]) -> str:
    """The markdown table over seeds: mean and range of precision, recall and AUROC per score and target."""
    names = list(results[0]["compare"]["opposing"])
    head = ("| flagged by | k | opposing: precision | recall | AUROC | mislabelled: precision | recall | AUROC |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name in names:
        cells = []
        for t in ("opposing", "mislabelled"):
            for m in ("precision", "recall", "auroc"):
                v = np.array([r["compare"][t][name][m] for r in results], dtype=float)
                cells.append(f"{np.nanmean(v):.2f} ({np.nanmin(v):.2f}-{np.nanmax(v):.2f})")
        ks = sorted({r["compare"]["opposing"][name]["k"] for r in results})
        k = f"{ks[0]}" if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"
        lines.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--size", type=int, default=60, help="planted images per class (and half the mislabelled)")
    ap.add_argument("--el2n-share", type=float, default=0.2, help="EL2N over the logit rows in this share of steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench_out/score_comparison")
    ap.add_argument("--table", action="store_true", help="only print the table of the cached seeds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.table:
        results = [json.loads(f.read_text()) for f in sorted(Path(args.out).glob("seed*/result.json"))]
        if not results:
            raise SystemExit(f"error: no seed*/result.json under {args.out}; run without --table first")
    else:
        results = [one_seed(args, s) for s in args.seeds]
    print(f"== {len(results)} seeds; pairs reported per seed: {[r['n_pairs'] for r in results]}; "
          f"groups: {[r['n_groups'] for r in results]}; train {np.mean([r['train_s'] for r in results]):.0f} s, "
          f"detect {np.mean([r['detect_s'] for r in results]):.0f} s a seed (mean); this call "
          f"{time.perf_counter() - t0:.0f} s")
    print(table(results))


if __name__ == "__main__":
    main()
