"""Detection at scale: time and peak memory on synthetic stores, dense and sparse, local and on Dask.

Sizes (examples N x recorded steps R) default to 5,000 x 1,000, 50,000 x 1,000 and 50,000 x 10,000
(the last is a 2 GB float32 dense store): from the first to the second only N grows, from the second to
the third only R, so the two ratios give the growth exponents of detection's time in examples and in
steps. Each store is written chunk by chunk (never whole in memory) under --dir and deleted after.
Each detection runs in a fresh process with its loss-matrix memory budget (--max-memory-mb) and
reports its wall time and peak resident memory (ru_maxrss, including Python, torch and the data set).

The synthetic losses: a slow decay, a generic period-2 oscillation with a random sign and size per
example, noise, and two planted pairs of groups (the data set's planted groups, ~1% of the examples)
swinging in anti-phase in growing episodes, with total-loss spikes. The equivalent sparse mini-batch
layout of a size keeps N and R with a batch of N/50 examples (50 steps an epoch, every example once an
epoch, entries = R x N / 50), read back per epoch.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py                        # all three sizes (slow)
    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --sizes 5000x1000,20000x1000 --dask
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STEPS_PER_EPOCH = 50


def planted_rows(n: int):
    from oppsig.data import opposing_signals

    ds = opposing_signals(n=n, size=8, seed=0)
    g = ds.groups
    return ds, [(np.flatnonzero(g == 0), np.flatnonzero(g == 1)), (np.flatnonzero(g == 2), np.flatnonzero(g == 3))]


def loss_rows(t: np.ndarray, r: int, n: int, pairs, rng, c: np.ndarray) -> np.ndarray:
    """Losses (len(t), n) of rows ``t`` (see the module docstring); rows of any block, any order."""
    alt = (-1.0) ** t
    growth = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * t / 60.0))
    base = 1.0 + 0.5 * np.exp(-t / (0.3 * r))
    L = base[:, None] + 0.02 * (alt * growth)[:, None] * c[None, :]
    L += 0.005 * rng.standard_normal((len(t), n), dtype=np.float32)
    for k, (a, b) in enumerate(pairs):
        period = 70 + 23 * k
        ramp = (t - 10 - 17 * k) % period
        env = np.where(ramp < 25, np.exp(ramp / 8.0) / np.exp(3.0), 0.0)
        osc = 0.4 * alt * (0.15 + env)
        L[:, a] += osc[:, None]
        L[:, b] -= osc[:, None]
    spikes = (t % 397) == 200
    L[spikes] *= 1.2
    return np.maximum(L, 0.01).astype(np.float32)


def write_dense(path: Path, n: int, r: int, dtype: str = "float32") -> float:
    from oppsig.store import StoreWriter

    _, pairs = planted_rows(n)
    rng = np.random.default_rng(1)
    c = (rng.choice([-1.0, 1.0], size=n) * rng.lognormal(0.0, 0.5, size=n)).astype(np.float32)
    t0 = time.perf_counter()
    w = StoreWriter(path, np.arange(n), capacity=r, dtype=dtype, chunk_steps=32)
    for s in range(0, r, 32):
        t = np.arange(s, min(r, s + 32))
        for i, row in zip(t, loss_rows(t, r, n, pairs, rng, c)):
            w.append(int(i), row)
    w.close()
    return time.perf_counter() - t0


def write_sparse(path: Path, n: int, r: int) -> float:
    from oppsig.store import BatchWriter, StoreWriter

    _, pairs = planted_rows(n)
    rng = np.random.default_rng(1)
    c = (rng.choice([-1.0, 1.0], size=n) * rng.lognormal(0.0, 0.5, size=n)).astype(np.float32)
    bs = n // STEPS_PER_EPOCH
    t0 = time.perf_counter()
    StoreWriter(path, np.arange(n), capacity=1).close()
    w = BatchWriter(path, np.arange(n))
    for e in range(r // STEPS_PER_EPOCH):
        row = loss_rows(np.array([e]), r // STEPS_PER_EPOCH, n, pairs, rng, c)[0]  # each example's loss in epoch e
        perm = rng.permutation(n)
        for b in range(STEPS_PER_EPOCH):
            cols = perm[b * bs : (b + 1) * bs]
            w.append(e * STEPS_PER_EPOCH + b, cols, row[cols])
    w.close()
    return time.perf_counter() - t0


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def detect_one(path: str, max_memory_mb: float, source: str, dask: str | None) -> dict:
    """One detection (in this process); prints its figures as JSON."""
    from oppsig.signals import SignalsConfig, find_signals_in_run
    from oppsig.store import open_run

    run = open_run(path)
    n = len(run.batches.index) if source == "batch" else len(run.index)
    ds, _ = planted_rows(n)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = SignalsConfig(max_memory_mb=max_memory_mb)
    client = cluster = None
    scheduler = None
    if dask:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=int(dask), threads_per_worker=1, processes=False, dashboard_address=None)
        scheduler = client = Client(cluster)
    t0 = time.perf_counter()
    res = find_signals_in_run(run, ds, cfg, source=source, steps_per_epoch=STEPS_PER_EPOCH, scheduler=scheduler)
    wall = time.perf_counter() - t0
    if client is not None:
        client.close()
        cluster.close()
    truth = [set(a.tolist()) | set(b.tolist()) for a, b in planted_rows(n)[1]]
    found = set().union(*[set(g.members) for p in res.pairs for g in (res.group(p.a), res.group(p.b))]) \
        if res.pairs else set()
    recall = len(found & set().union(*truth)) / len(set().union(*truth))
    return {"wall_s": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "base_mb": base, "spikes": [s.row for s in res.spikes], "groups": [list(g.members) for g in res.groups],
            "pairs": [(p.a, p.b) for p in res.pairs], "planted_recall": recall, "timings": res.timings}


def run_child(path: Path, max_memory_mb: float, source: str, dask: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--max-memory-mb", str(max_memory_mb), "--source", source]
    if dask:
        cmd += ["--child-dask", dask]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"detection failed on {path}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponents(rows: list[dict], key: str) -> tuple[float, float]:
    """Growth exponents of ``key`` in examples (size 0 -> 1) and in steps (size 1 -> 2)."""
    a, b, c = rows[:3]
    en = math.log(b[key] / a[key]) / math.log(b["n"] / a["n"]) if b["n"] != a["n"] else float("nan")
    er = math.log(c[key] / b[key]) / math.log(c["r"] / b["r"]) if c["r"] != b["r"] else float("nan")
    return en, er


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000x1000,50000x1000,50000x10000", help="N x R, comma separated")
    ap.add_argument("--dir", default="/work/scale-data/bench", help="where the stores are written (and deleted)")
    ap.add_argument("--max-memory-mb", type=float, default=512.0, help="detection's loss-matrix memory budget")
    ap.add_argument("--dask", default="", help="also on a local Dask cluster of this many workers (e.g. 2), "
                                               "for sizes up to --dask-max-values")
    ap.add_argument("--dask-max-values", type=float, default=1e8)
    ap.add_argument("--no-sparse", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-dask", help=argparse.SUPPRESS)
    ap.add_argument("--source", default="dense", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(detect_one(a.child, a.max_memory_mb, a.source, a.child_dask)))
        return
    sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    print(f"detection at scale; loss-matrix budget {a.max_memory_mb:.0f} MB; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    dense, sparse = [], []
    for n, r in sizes:
        p = root / f"dense-{n}x{r}"
        shutil.rmtree(p, ignore_errors=True)
        wt = write_dense(p, n, r)
        row = {"n": n, "r": r, "write_s": wt, "store_mb": du(p) / 2**20, **run_child(p, a.max_memory_mb, "dense", None)}
        line = (f"dense  {n:>6} x {r:>6}: store {row['store_mb']:7.0f} MB (written in {wt:5.0f} s); detect "
                f"{row['wall_s']:6.1f} s, peak {row['peak_mb']:6.0f} MB (of which {row['base_mb']:.0f} MB before "
                f"detection); {len(row['spikes'])} spikes, {len(row['groups'])} groups, {len(row['pairs'])} pairs, "
                f"planted recall {row['planted_recall']:.2f}")
        print(line, flush=True)
        if a.dask and n * r <= a.dask_max_values:
            d = run_child(p, a.max_memory_mb, "dense", a.dask)
            same = (d["spikes"], d["groups"], d["pairs"]) == (row["spikes"], row["groups"], row["pairs"])
            print(f"  dask ({a.dask} workers) {d['wall_s']:6.1f} s, peak {d['peak_mb']:6.0f} MB; same spikes, groups "
                  f"and pairs as local: {same}", flush=True)
            row["dask"] = {**d, "same": same}
        dense.append(row)
        shutil.rmtree(p, ignore_errors=True)
        if not a.no_sparse:
            q = root / f"sparse-{n}x{r}"
            shutil.rmtree(q, ignore_errors=True)
            wt = write_sparse(q, n, r)
            srow = {"n": n, "r": r, "write_s": wt, "store_mb": du(q) / 2**20,
                    **run_child(q, a.max_memory_mb, "batch", None)}
            print(f"sparse {n:>6} x {r:>6} (batch {n // STEPS_PER_EPOCH}, {r // STEPS_PER_EPOCH} epochs, "
                  f"{r * (n // STEPS_PER_EPOCH):,} entries): store {srow['store_mb']:6.0f} MB; detect "
                  f"{srow['wall_s']:6.1f} s, peak {srow['peak_mb']:6.0f} MB; {len(srow['groups'])} groups, "
                  f"{len(srow['pairs'])} pairs, planted recall {srow['planted_recall']:.2f}", flush=True)
            sparse.append(srow)
            shutil.rmtree(q, ignore_errors=True)
    for name, rows in (("dense", dense), ("sparse", sparse)):
        if len(rows) >= 3:
            for key in ("wall_s", "peak_mb"):
                en, er = exponents(rows, key)
                print(f"{name}: growth exponent of {key}: {en:.2f} in examples, {er:.2f} in steps")
    (root / "bench_scale.json").write_text(json.dumps({"dense": dense, "sparse": sparse}, indent=1, default=str))


if __name__ == "__main__":
    main()
