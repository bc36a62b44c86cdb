"""The opposing groups found under full-batch GD, followed through SGD and AdamW runs from the same initialisation.

Rosenfeld & Risteski (arXiv 2311.04163) find the opposing groups under full-batch GD and argue that the same
groups matter under SGD and Adam. This script checks it on fc-tanh 3072-200-200-10, cross-entropy, the first
5,000 CIFAR-10 images:

1. GD: ``configs/fc-tanh-ce-gd-cifar5k.yaml`` (lr 0.1, 1,000 steps, every example every step; sharpness tracking
   off, ``curvature.every=0``, as nothing here uses it), then detection as ``oppsig detect`` runs it
   (:func:`oppsig.detect_run`, its top 3 pairs checked on the model), or the run's ``signals.json`` when present.
2. SGD (``configs/fc-tanh-ce-sgd-cifar5k.yaml``: lr 0.02, momentum 0.9, batch 128, 2,000 steps) and AdamW (the
   same with ``optim.name=adamw optim.lr=0.001 optim.weight_decay=0.01``), both with ``seed: 0`` as GD, so from the
   same initial weights (checked: the step-0 checkpoints' weights and the first recorded row of losses). Both record
   every example every 5 steps (``record.probe_n=5000 record.every=5``): a probe of the whole training set, chosen
   for this analysis, well over the default probe budget (``record.budget`` 10% of training time).
3. For each reported GD pair (a, b), in each run: ``corr``, the correlation of the two groups' mean loss changes
   between consecutive recorded rows (anti-phase: negative), against ``--draws`` random pairs of groups of the
   same sizes and the same classes (percentile: the share of random pairs at least as anti-phase); and ``rise x``,
   the pair's members' share of the net rise of the total loss over the run's 10 largest rises between recorded
   rows, over their share of the examples (1: no more than their number), against the same random groups
   (percentile: the share of random pairs carrying at least as much).
4. A figure (``--figure``): for the top 2 GD pairs, the two groups' mean loss and the total loss under GD, SGD
   and AdamW. The numbers go to ``--json``.

Usage (training the three runs, at one thread each, in parallel, logs under ``--log-dir``):
    python benchmarks/gd_groups_under_minibatch.py [--out-dir bench_out/gd_groups/runs] \\
        [--figure docs/gd-groups-under-minibatch.png]
or on runs already trained with the settings above:
    python benchmarks/gd_groups_under_minibatch.py --gd RUN --sgd RUN --adamw RUN

Wall time on a 2-core machine shared with other jobs (load average 7-12), measured: training 18 min for the three
runs in parallel (GD 1,097 s, SGD 585 s, AdamW 605 s, each at one thread; the probe of all 5,000 examples every 5
steps costs 2.4x the SGD steps' own time), detection 4.5 min (83 s of CPU; the search 35 s, the rest the replays
that check 3 pairs on the model, and the image grids), the analysis 50 s (22 s of CPU): about 24 min.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MINIBATCH_RECORD = ["--record.probe_n=5000", "--record.every=5"]
RUNS = {
    "gd": ["configs/fc-tanh-ce-gd-cifar5k.yaml", "--curvature.every=0"],
    "sgd": ["configs/fc-tanh-ce-sgd-cifar5k.yaml", *MINIBATCH_RECORD],
    "adamw": ["configs/fc-tanh-ce-sgd-cifar5k.yaml", *MINIBATCH_RECORD, "--optim.name=adamw", "--optim.lr=0.001",
              "--optim.weight_decay=0.01", "--optim.momentum=0"],
}
TITLES = {"gd": "GD (lr 0.1)", "sgd": "SGD (lr 0.02, momentum 0.9, batch 128)",
          "adamw": "AdamW (lr 1e-3, wd 0.01, batch 128)"}


def train_runs(out_dir: Path, log_dir: Path) -> dict[str, Path]:
    """Train the three runs in parallel, each at one thread under ``nice -n 10``; their run directories."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = {}
    for name, args in RUNS.items():
        cmd = ["nice", "-n", "10", sys.executable, "-m", "oppsig", "train", *args, "--threads=1", f"--name={name}",
               f"--out-dir={out_dir}", "--no-progress", "--overwrite"]
        print("$", " ".join(cmd[3:]), f"> {log_dir / f'train-{name}.log'}")
        with open(log_dir / f"train-{name}.log", "w") as log:
            procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    for name, p in procs.items():
        if p.wait() != 0:
            sys.exit(f"error: training run {name} failed; see {log_dir / f'train-{name}.log'}")
    return {name: out_dir / name for name in RUNS}


def gd_signals(gd_dir: Path, redetect: bool):
    """The GD run's opposing signals: its ``signals.json``, else detected (and saved) as ``oppsig detect`` does."""
    from oppsig import detect_run
    from oppsig.signals.signals_json import read_signals_json

    path = gd_dir / "signals.json"
    if path.exists() and not redetect:
        print(f"GD signals from {path}")
        return read_signals_json(path)
    t = time.time()
    res = detect_run(gd_dir, log=print)
    print(f"detection on the GD run: {time.time() - t:.0f} s")
    return res


def same_start(runs: dict) -> dict[str, dict]:
    """For SGD and AdamW against GD: whether the step-0 weights are equal, and the largest difference of the first
    recorded row of losses (both at step 0, every example)."""
    import torch

    def weights(r):
        return torch.load(r.path / "checkpoints" / "step_000000.pt", weights_only=True)["model"]

    w0, gd = weights(runs["gd"]), runs["gd"]
    out = {}
    for name in ("sgd", "adamw"):
        r = runs[name]
        w = weights(r)
        equal = w0.keys() == w.keys() and all(torch.equal(w0[k], w[k]) for k in w0)
        assert gd.steps[0] == 0 and r.steps[0] == 0, "the first recorded row is not step 0"
        cols = column_of(r, gd.index)
        d = float(np.max(np.abs(np.asarray(gd.losses[0]) - np.asarray(r.losses[0])[cols])))
        out[name] = {"weights_equal": bool(equal), "row0_max_abs_diff": d}
    return out


def column_of(run, ids: np.ndarray) -> np.ndarray:
    """Columns of ``run``'s record holding the examples ``ids`` (every one must be recorded)."""
    pos = {int(i): c for c, i in enumerate(run.index)}
    missing = [int(i) for i in ids if int(i) not in pos]
    if missing:
        sys.exit(f"error: {run.path} did not record {len(missing)} of the GD examples (e.g. id {missing[0]}); "
                 "train it with record.probe_n=5000")
    return np.array([pos[int(i)] for i in ids])


def draw_like(members: np.ndarray, labels: np.ndarray, by_class: dict, rng, exclude=()) -> np.ndarray:
    """Random examples with the same class counts as ``members`` (none of ``exclude``)."""
    out = []
    ex = set(int(e) for e in exclude)
    for c, k in zip(*np.unique(labels[members], return_counts=True)):
        pool = by_class[int(c)] if not ex else np.array([i for i in by_class[int(c)] if i not in ex])
        out.append(rng.choice(pool, size=int(k), replace=False))
    return np.concatenate(out)


def pair_stats(L: np.ndarray, a: np.ndarray, b: np.ndarray, rises: np.ndarray) -> tuple[float, float, float]:
    """``(corr, corr over the second half, rise x)`` of groups ``a`` and ``b`` (columns) in the loss record ``L``
    (R, N): the correlation of their mean loss changes (over all rows, and over the second half of the rows, away
    from the first fast descent), and their share of the net total rise into rows ``rises + 1`` over their share of
    the examples."""
    da, db = np.diff(L[:, a].mean(1)), np.diff(L[:, b].mean(1))
    h = len(da) // 2
    corr, late = float(np.corrcoef(da, db)[0, 1]), float(np.corrcoef(da[h:], db[h:])[0, 1])
    dL = L[rises + 1] - L[rises]  # (top_rises, N) per-example changes into each rise
    members = np.concatenate([a, b])
    share = dL[:, members].sum() / dL.sum()
    return corr, late, float(share / (len(members) / L.shape[1]))


def analyse(runs: dict, res, labels: np.ndarray, draws: int, top_rises: int, seed: int = 0) -> list[dict]:
    """Per reported GD pair and per run: corr and rise x, each with its percentile among random groups."""
    gd_ids = runs["gd"].index
    mats, rise_rows = {}, {}
    for name, r in runs.items():
        L = np.asarray(r.losses[:], dtype=np.float64)[:, column_of(r, gd_ids)]  # columns in GD's order
        total = L.mean(1)
        mats[name] = L
        rise_rows[name] = np.sort(np.argsort(np.diff(total))[::-1][:top_rises])
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    rows = []
    for k, p in enumerate(res.significant_pairs):
        a, b = np.array(res.group(p.a).members), np.array(res.group(p.b).members)
        rng = np.random.default_rng(seed + k)
        null_groups = []
        for _ in range(draws):
            ra = draw_like(a, labels, by_class, rng)
            null_groups.append((ra, draw_like(b, labels, by_class, rng, exclude=ra)))
        row = {"pair": k, "a": p.a, "b": p.b, "size_a": len(a), "size_b": len(b), "view": p.view,
               "detected_corr": p.corr, "name": pair_label(res, p)}
        for name, L in mats.items():
            corr, late, rise = pair_stats(L, a, b, rise_rows[name])
            null = np.array([pair_stats(L, ra, rb, rise_rows[name]) for ra, rb in null_groups])
            row[name] = {"corr": corr, "corr_pct": float(100 * np.mean(null[:, 0] <= corr)),
                         "null_corr_median": float(np.median(null[:, 0])),
                         "corr_late": late, "corr_late_pct": float(100 * np.mean(null[:, 1] <= late)),
                         "null_corr_late_median": float(np.median(null[:, 1])),
                         "rise_x": rise, "rise_pct": float(100 * np.mean(null[:, 2] >= rise)),
                         "null_rise_median": float(np.median(null[:, 2]))}
        rows.append(row)
    return rows


def pair_label(res, p) -> str:
    """``"59 airplane: dark image vs 232 airplane: bright image"``."""
    def one(gid):
        g = res.group(gid)
        cls = next(iter(g.class_counts), "?")
        what = f": {g.shared[0]}" if g.shared else ""
        return f"{g.size} {cls}{what}"
    return f"{one(p.a)} vs {one(p.b)}"


def rises_summary(runs: dict, top_rises: int) -> dict[str, dict]:
    """Per run: the largest rises of the total loss between recorded rows (their steps and relative heights)."""
    out = {}
    for name, r in runs.items():
        total = np.asarray(r.losses[:], dtype=np.float64).mean(1)
        d = np.diff(total)
        top = np.argsort(d)[::-1][:top_rises]
        out[name] = {"steps": [int(r.steps[i + 1]) for i in top],
                     "rel_rise": [float(d[i] / total[i]) for i in top], "final_loss": float(total[-1])}
    return out


def table(rows: list[dict]) -> str:
    """The text table: one line per GD pair; ``value (pct)`` with pct the percentile among random groups."""
    cols = [("GD corr", "gd", "corr"), ("SGD corr", "sgd", "corr"), ("2nd half", "sgd", "corr_late"),
            ("AdamW corr", "adamw", "corr"), ("2nd half", "adamw", "corr_late"),
            ("GD rise x", "gd", "rise_x"), ("SGD rise x", "sgd", "rise_x"), ("AdamW rise x", "adamw", "rise_x")]
    pct = {"corr": "corr_pct", "corr_late": "corr_late_pct", "rise_x": "rise_pct"}
    head = f"{'pair':<4} {'groups':<52}" + "".join(f" {c:>13}" for c, _, _ in cols)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = "".join(f" {r[run][key]:>+7.2f} ({r[run][pct[key]]:>3.0f})" for _, run, key in cols)
        lines.append(f"{r['pair']:<4} {r['name'][:52]:<52}{cells}")
    med = {f"{run} {key}": float(np.median([r[run][f"null_{key.replace('_x', '')}_median"] for r in rows]))
           for _, run, key in cols}
    lines.append(f"{'':<4} {'random groups (median over pairs of the medians)':<52}"
                 + "".join(f" {med[f'{run} {key}']:>+7.2f}      " for _, run, key in cols))
    return "\n".join(lines)


def figure(runs: dict, res, rows: list[dict], path: Path) -> None:
    """For the top 2 GD pairs (rows of the figure), the groups' mean loss and the total loss in each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = rows[:2]
    fig, axes = plt.subplots(len(top), 3, figsize=(15, 3.6 * len(top)), squeeze=False)
    gd_ids = runs["gd"].index
    for i, row in enumerate(top):
        a, b = np.array(res.group(row["a"]).members), np.array(res.group(row["b"]).members)
        la, lb = row["name"].split(" vs ")
        for j, name in enumerate(("gd", "sgd", "adamw")):
            r, ax = runs[name], axes[i, j]
            L = np.asarray(r.losses[:], dtype=np.float64)[:, column_of(r, gd_ids)]
            ax.plot(r.steps, L[:, a].mean(1), lw=0.7, color="tab:blue", label=f"group {row['a']}: {la}")
            ax.plot(r.steps, L[:, b].mean(1), lw=0.7, color="tab:orange", label=f"group {row['b']}: {lb}")
            ax.plot(r.steps, L.mean(1), lw=1.0, color="black", label="total loss")
            ax.set_yscale("log")
            st = row[name]
            ax.set_title(f"pair {row['pair']}, {TITLES[name]}\ncorr {st['corr']:+.2f} "
                         f"(random groups: median {st['null_corr_median']:+.2f}), rise x {st['rise_x']:.1f}",
                         fontsize=9)
            ax.set_xlabel("step")
            if j == 0:
                ax.set_ylabel("mean loss")
                ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in RUNS:
        ap.add_argument(f"--{name}", type=Path, help=f"the {name} run directory (default: train it)")
    ap.add_argument("--out-dir", type=Path, default=Path("bench_out/gd_groups/runs"))
    ap.add_argument("--log-dir", type=Path, default=Path("bench_out/gd_groups"))
    ap.add_argument("--draws", type=int, default=200, help="random pairs of groups per GD pair")
    ap.add_argument("--top-rises", type=int, default=10, help="the largest rises of the total loss per run")
    ap.add_argument("--redetect", action="store_true", help="detect on the GD run even if it has signals.json")
    ap.add_argument("--figure", type=Path, default=Path("bench_out/gd_groups/gd-groups-under-minibatch.png"))
    ap.add_argument("--json", type=Path, default=Path("bench_out/gd_groups/gd_groups_under_minibatch.json"))
    args = ap.parse_args()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    from oppsig import open_run
    from oppsig.data import build_datasets

    t0 = time.time()
    given = {name: getattr(args, name) for name in RUNS}
    if not all(given.values()):
        given = train_runs(args.out_dir, args.log_dir)
    t_train = time.time() - t0
    runs = {name: open_run(d) for name, d in given.items()}
    res = gd_signals(given["gd"], args.redetect)
    start = same_start(runs)
    cfg = runs["gd"].config
    train_set = build_datasets(cfg.data, seed=cfg.seed)[0]
    pos = {int(i): k for k, i in enumerate(train_set.index.numpy())}
    labels = train_set.y.numpy()[[pos[int(i)] for i in runs["gd"].index]]
    rows = analyse(runs, res, labels, args.draws, args.top_rises)
    rises = rises_summary(runs, args.top_rises)
    print(f"\nsame start: {start}")
    for name, r in rises.items():
        print(f"{name}: {runs[name].rows} rows; final loss {r['final_loss']:.3f}; largest rises at steps "
              f"{sorted(r['steps'])} (relative {min(r['rel_rise']):.3f}-{max(r['rel_rise']):.3f})")
    print(f"\n{len(rows)} reported GD pairs; corr: correlation of the groups' mean loss changes between recorded rows "
          f"(pct: % of {args.draws} random pairs of the same sizes and classes at least as anti-phase; 2nd half: over "
          f"the second half of the rows only); rise x: the "
          f"pair's share of the net rise over the {args.top_rises} largest total-loss rises over its share of the "
          "examples (pct: % of random pairs carrying at least as much)")
    print(table(rows))
    figure(runs, res, rows, args.figure)
    wall = time.time() - t0
    cpu = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    train_wall = {name: float(np.nanmax(r.metrics["wall_time"])) for name, r in runs.items()}
    print(f"wall time {wall:.0f} s (training here {t_train:.0f} s; the runs' own training wall times "
          f"{ {k: round(v) for k, v in train_wall.items()} } s); CPU time of this process and its children {cpu:.0f} s")
    args.json.write_text(json.dumps({"pairs": rows, "same_start": start, "rises": rises, "train_wall_s": train_wall,
                                     "wall_s": wall, "cpu_s": cpu, "runs": {k: str(v) for k, v in given.items()}},
                                    indent=1))
    print(f"numbers: {args.json}")


if __name__ == "__main__":
    main()
