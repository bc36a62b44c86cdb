"""Which sharpness a mini-batch SGD run is stable against: batch sharpness, batch-Hessian and full-batch eigenvalues.

Three SGD runs (momentum 0.9, batch 128) track, every ``--every`` steps: the batch sharpness of Andreyev &
Beneventano (arXiv 2412.20553), ``E_B[g_B^T H_B g_B / |g_B|^2]``, and the mean top eigenvalue of the batch
Hessians, both over ``--batches`` seeded mini-batches of the run's batch size
(:class:`oppsig.curvature.batch_sharpness.BatchSharpnessHook`); and the full-batch top eigenvalue with its
certified bound (``curvature.every``), against the optimiser's threshold ``(2 + 2b) / lr``
(:func:`oppsig.curvature.stability`). The figure shows the three quantities and the threshold over steps; the table
gives each quantity's median over the last half of the run divided by the threshold.

- ``fc-tanh``: configs/fc-tanh-ce-sgd-cifar5k.yaml (lr 0.02, threshold 190), 2,000 steps, every 80, 8 batches;
  the full-batch Hessian over all 5,000 examples.
- ``fc-tanh-lr0.1``: the same at lr 0.1 (threshold 38), 1,001 steps, every 50, 8 batches.
- ``cnn``: configs/cnn-sgd-minibatch-cifar10k.yaml (lr 0.05, threshold 76) shortened to 401 steps (5 epochs),
  every 100, 4 batches; the "full-batch" Hessian over the first 1,000 training examples (one product over
  1,000 took 13 s on one loaded thread, so one over all 10,000 about two minutes).

Usage (each run in the background at one thread; then the figure and table from all of them)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/minibatch_sharpness.py --run fc-tanh --out bench_out/minibatch
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/minibatch_sharpness.py --run fc-tanh-lr0.1 --out bench_out/minibatch
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/minibatch_sharpness.py --run cnn --out bench_out/minibatch
    python benchmarks/minibatch_sharpness.py --plot --out bench_out/minibatch --figure docs/sharpness-minibatch.png

Wall time (2-core machine shared with other jobs, load average 6-14, one thread each, the three runs at once):
fc-tanh 39 minutes, fc-tanh-lr0.1 33, cnn 35, each about 6-9 minutes of CPU time (each run writes its wall and
CPU time to ``bench.json`` in its run directory); the plot a few seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RUNS = {
    "fc-tanh": {"config": "configs/fc-tanh-ce-sgd-cifar5k.yaml", "steps": 2000, "every": 80, "batches": 8,
                "overrides": []},
    "fc-tanh-lr0.1": {"config": "configs/fc-tanh-ce-sgd-cifar5k.yaml", "steps": 1001, "every": 50, "batches": 8,
                      "overrides": ["optim.lr=0.1"]},
    "cnn": {"config": "configs/cnn-sgd-minibatch-cifar10k.yaml", "steps": 401, "every": 100, "batches": 4,
            "overrides": ["curvature.n=1000"], "note": "; full batch: first 1,000 examples"},
}
QUANTITIES = (("batch_sharpness", "batch sharpness E[g^T H g / |g|^2]"),
              ("batch_eig", "mean top eigenvalue of batch Hessians"),
              ("sharpness", "full-batch top eigenvalue"))


def run(name: str, out: Path, threads: int, **change) -> Path:
    """Train run ``name`` with both hooks (``change``: other steps / every / batches); returns its run directory."""
    import torch

    from oppsig.config import load_config
    from oppsig.curvature.batch_sharpness import BatchSharpnessHook
    from oppsig.training import train

    torch.set_num_threads(threads)
    spec = {**RUNS[name], **{k: v for k, v in change.items() if v is not None}}
    cfg = load_config(spec["config"], [f"name={name}", f"out_dir={out}", f"train.steps={spec['steps']}",
                                       f"curvature.every={spec['every']}", "curvature.max_iter=60",
                                       "record.enabled=false", "train.checkpoint_every=0", *spec["overrides"]])
    hook = BatchSharpnessHook(every=spec["every"], num_batches=spec["batches"])
    t0, c0 = time.perf_counter(), time.process_time()
    train(cfg, hooks=[hook], progress=False, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    run_dir = out / name
    facts = {"wall_s": wall, "cpu_s": cpu, "threads": threads, **spec}
    (run_dir / "bench.json").write_text(json.dumps(facts, indent=1))
    print(f"{name}: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU, {run_dir}")
    return run_dir


def series(run_dir: Path) -> dict[str, np.ndarray]:
    """The measured rows of a run's metrics.jsonl: step, the three quantities, their errors, the threshold."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "batch_sharpness" in r and "sharpness" in r]
    keys = ["step", "threshold", "batch_sharpness", "se/batch_sharpness", "batch_eig", "se/batch_eig",
            "err/batch_eig", "converged/batch_eig", "sharpness", "err/sharpness", "converged/sharpness", "loss",
            "batch_hvps", "batch_time", "hvps", "curv_time", "lr"]
    return {k: np.array([float(r.get(k, np.nan)) for r in rows]) for k in keys}


def table(runs: dict[str, dict[str, np.ndarray]]) -> str:
    """Markdown: per run and quantity, the median over the last half of the run divided by the threshold."""
    lines = ["| run | threshold | " + " | ".join(k for k, _ in QUANTITIES) + " |", "|---|---|---|---|---|"]
    for name, s in runs.items():
        last = s["step"] >= s["step"].max() / 2
        thr = float(np.median(s["threshold"][last]))
        cells = [f"{np.median(s[k][last] / s['threshold'][last]):.2f}" for k, _ in QUANTITIES]
        lines.append(f"| {name} | {thr:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def facts(name: str, s: dict[str, np.ndarray], run_dir: Path) -> str:
    """One line of what else was measured: bounds, convergence, cost."""
    bench = json.loads((run_dir / "bench.json").read_text()) if (run_dir / "bench.json").exists() else {}
    rel = np.nanmax(s["err/sharpness"] / s["sharpness"])
    rel_b = np.nanmax(s["err/batch_eig"] / s["batch_eig"])
    n = len(s["step"])
    return (f"{name}: {n} measurements; full-batch solves converged {int(np.nansum(s['converged/sharpness']))}/{n}"
            f", largest relative bound {rel:.1e}; batch solves all converged in "
            f"{int(np.nansum(s['converged/batch_eig']))}/{n}, largest mean relative bound {rel_b:.1e}; "
            f"median stderr/value: batch sharpness {np.nanmedian(s['se/batch_sharpness'] / s['batch_sharpness']):.2f}"
            f", batch eig {np.nanmedian(s['se/batch_eig'] / s['batch_eig']):.2f}; median seconds per measurement: "
            f"batch {np.nanmedian(s['batch_time']):.0f}, full {np.nanmedian(s['curv_time']):.0f}; "
            f"wall {bench.get('wall_s', float('nan')) / 60:.1f} min")


def plot(runs: dict[str, dict[str, np.ndarray]], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.2), squeeze=False)
    colours = {"batch_sharpness": "C0", "batch_eig": "C1", "sharpness": "C2"}
    for ax, (name, s) in zip(axes[0], runs.items()):
        x = s["step"]
        for key, label in QUANTITIES:
            err = s["se/" + key] if key != "sharpness" else s["err/sharpness"]
            ax.plot(x, s[key], "o-", ms=3, color=colours[key], label=label)
            ax.fill_between(x, s[key] - np.nan_to_num(err), s[key] + np.nan_to_num(err), color=colours[key],
                            alpha=0.2, lw=0)
        ax.plot(x, s["threshold"], "k--", label="threshold (2 + 2b) / lr")
        note = RUNS.get(name, {}).get("note", "")
        ax.set_title(f"{name}: SGD, lr {s['lr'][0]:g}, momentum 0.9, batch 128{note}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("curvature")
        ax.set_ylim(0, None)
    axes[0][0].legend(fontsize=8, loc="center left")
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    print(f"wrote {figure}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", choices=sorted(RUNS), help="train this run (both hooks on)")
    ap.add_argument("--plot", action="store_true", help="figure and table from the runs found under --out")
    ap.add_argument("--out", type=Path, default=Path("bench_out/minibatch"))
    ap.add_argument("--figure", type=Path, default=Path("docs/sharpness-minibatch.png"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, help="instead of the run's steps (e.g. a quick check)")
    ap.add_argument("--every", type=int, help="instead of the run's measurement interval")
    ap.add_argument("--batches", type=int, help="instead of the run's number of mini-batches per measurement")
    args = ap.parse_args()
    if args.run:
        run(args.run, args.out, args.threads, steps=args.steps, every=args.every, batches=args.batches)
    if args.plot:
        found = {n: series(args.out / n) for n in RUNS if (args.out / n / "metrics.jsonl").exists()}
        plot(found, args.figure)
        print(table(found))
        for n, s in found.items():
            print(facts(n, s, args.out / n))


if __name__ == "__main__":
    main()
