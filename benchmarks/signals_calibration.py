"""Calibration of the opposing-signals test: false-pair rates on null families, a power curve, and speed.

The claim: at the default level (``alpha = 0.01``, family-wise), a loss record
without opposing groups yields a significant pair in at most ``alpha`` of the
runs, whatever the generic structure of the record, and planted groups are
recovered even when no member swings more than the median example.

1. **Null families** (``--seeds`` runs each, 20 by default), each run through
   :func:`oppsig.signals.find_signals`:

   - ``random-signs``: generic period-2 oscillation, each example its own sign
     and log-normal size (:func:`oppsig.signals.synthetic.eos_matrix`);
   - ``class-signs``: the same with one sign per class;
   - ``heavy-tails``: Pareto (shape 1.5) per-example amplitudes;
   - ``relabelled``: a real CIFAR-10 GD run's loss record (``--real-run``, a
     ``losses.npy``) on 2,000 random examples, its columns assigned to the
     images at random;
   - ``adam``: real Adam runs without spikes (``--adam-dir``, ``losses_XX.npy``
     of fc-tanh on the first 1,000 CIFAR-10 images, Adam lr 1e-4, 300 steps).

   The synthetic families use the first 1,000 CIFAR-10 images as inputs when
   ``$OPPSIG_DATA`` holds them (else the synthetic control images). Printed: the
   false-pair rate (runs with at least one significant pair), and the
   Kolmogorov-Smirnov distance from uniform of the groups' *unadjusted*
   permutation p-values (``(1 + #null >= observed) / (n + 1)``, 199 permutations).

2. **Power curve**: one planted pair (groups of 20, 10 or 5 examples of 1,000)
   at decreasing amplitude, the last ones with ``ordinary=True`` (no member
   swings more than the median example): mean best F1 of the two groups and the
   share of runs that report them as a pair; then quiet pairs (:func:`oppsig.signals.synthetic.quiet_matrix`:
   low-loss members that move together only in relative terms, every member quieter than the median example).

3. **Speed**: detection on synthetic records of 1,000 x 5,000, 500 x 5,000 and
   1,000 x 2,500 (steps x examples): seconds per stage, and the growth.

Usage:
    python benchmarks/signals_calibration.py [--seeds 20] [--real-run RUN/losses.npy] [--adam-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kstest

from oppsig.data import cifar10, opposing_signals
from oppsig.errors import DataNotFoundError
from oppsig.signals import SignalsConfig, find_signals
from oppsig.signals.pair import CoherenceTest
from oppsig.signals.explain import coherence_features, input_descriptors
from oppsig.signals.synthetic import eos_matrix, overlap_f1, quiet_matrix


def images(n: int):
    try:
        return cifar10(n=n), "CIFAR-10"
    except DataNotFoundError:
        return opposing_signals(n=n, magnitude=0.0, seed=0), "synthetic control"


def raw_pvalues(res, ds, cfg, n: int = 199, seed: int = 0) -> list[float]:
    """Unadjusted within-class permutation p-values of every group of ``res``."""
    if not res.groups:
        return []
    labels = ds.y.numpy()
    test = CoherenceTest(coherence_features(ds, input_descriptors(ds), cfg.n_pcs, cfg.seed), labels)
    groups = [np.asarray(g.members) for g in res.groups]
    obs = np.array([test.statistic(g) for g in groups])
    perm = test.permuted_statistics(groups, n, np.random.default_rng(seed))
    return list((1 + (perm >= obs[None, :]).sum(axis=0)) / (n + 1))


def null_families(seeds: int, real_run: str | None, adam_dir: str | None, cfg: SignalsConfig,
                  only: list[str] | None = None) -> dict:
    ds, source = images(1000)
    y = ds.y.numpy()
    fams = {
        "random-signs": lambda s: eos_matrix(1000, 200, seed=s),
        "class-signs": lambda s: eos_matrix(1000, 200, seed=s, labels=y),
        "heavy-tails": lambda s: eos_matrix(1000, 200, seed=s, tails="pareto"),
    }
    out = {}
    print(f"== null families ({seeds} seeds each; inputs: {source}; alpha {cfg.alpha}, family-wise)")
    print(f"   {'family':<14}{'false-pair rate':>17}{'groups':>8}{'KS (p-values)':>15}{'KS p':>8}{'s/run':>7}")

    def run(name, make):
        hits, pv, t0, ng = 0, [], time.perf_counter(), 0
        for s in range(seeds):
            losses, data = make(s)
            res = find_signals(losses, np.arange(len(losses)), data, config=cfg)
            hits += bool(res.pairs)
            ng += len(res.groups)
            pv += raw_pvalues(res, data, cfg, seed=s)
        ks = kstest(pv, "uniform") if pv else None
        dt = (time.perf_counter() - t0) / seeds
        out[name] = {"false_pair_rate": hits / seeds, "runs": seeds, "groups": ng,
                     "ks": ks.statistic if ks else None, "ks_p": ks.pvalue if ks else None, "s_per_run": dt}
        ks_s = f"{ks.statistic:15.3f}{ks.pvalue:8.2f}" if ks else f"{'-':>15}{'-':>8}"
        print(f"   {name:<14}{f'{hits}/{seeds}':>17}{ng:>8}{ks_s}{dt:7.1f}", flush=True)

    for name, make in fams.items():
        if not only or name in only:
            run(name, lambda s, make=make: (make(s), ds))
    if only and "relabelled" not in only:
        pass
    elif real_run and Path(real_run).exists():
        full = np.load(real_run, mmap_mode="r")
        ds5, _ = images(full.shape[1])

        def relabelled(s):
            rng = np.random.default_rng(s)
            cols = np.sort(rng.choice(full.shape[1], 2000, replace=False))
            return np.asarray(full[:, rng.permutation(cols)]), ds5.take(cols)

        run("relabelled", relabelled)
    else:
        print("   relabelled: skipped (no --real-run losses.npy)")
    files = sorted(Path(adam_dir).glob("losses_*.npy")) if adam_dir else []
    if only and "adam" not in only:
        pass
    elif files:
        n_runs = seeds
        if len(files) < seeds:
            print(f"   (adam: {len(files)} runs found; the family has {len(files)} runs)")
            n_runs = len(files)
        hold = seeds
        seeds = n_runs
        run("adam", lambda s: (np.load(files[s]), ds))
        seeds = hold
    else:
        print("   adam: skipped (no --adam-dir)")
    return out


def power_curve(seeds: int, cfg: SignalsConfig) -> list[dict]:
    print(f"== power: one planted pair in 1,000 examples x 200 steps ({seeds} seeds per cell)")
    print(f"   {'size':>5}{'amplitude':>10}{'ordinary':>9}{'member swing/median (max)':>27}{'F1':>7}{'pair reported':>15}")
    rows = []
    for size in (20, 10, 5):
        for amp, ordinary in ((0.4, False), (0.1, False), (0.04, False), (0.02, True), (0.015, True)):
            f1s, found, swing = [], 0, []
            for s in range(seeds):
                ds = opposing_signals(n=1000, frequency=size / 100, seed=s)
                g = ds.groups
                truth = (np.flatnonzero(g == 0), np.flatnonzero(g == 1))
                losses = eos_matrix(1000, 200, {0: truth}, seed=100 + s, amplitude=amp, ordinary=ordinary)
                sw = np.diff(losses, axis=0).std(axis=0)
                swing.append(float(sw[np.concatenate(truth)].max() / np.median(sw)))
                res = find_signals(losses, np.arange(200), ds, config=cfg)
                best = [max(res.groups, key=lambda gr: overlap_f1(gr.members, t), default=None) for t in truth]
                f1s += [overlap_f1(b.members, t) if b else 0.0 for b, t in zip(best, truth)]
                found += bool(best[0] and best[1] and any({p.a, p.b} == {best[0].id, best[1].id} for p in res.pairs))
            rows.append({"size": size, "amplitude": amp, "ordinary": ordinary, "max_member_swing": float(np.mean(swing)),
                         "f1": float(np.mean(f1s)), "pair_rate": found / seeds})
            print(f"   {size:>5}{amp:>10}{str(ordinary):>9}{np.mean(swing):>27.2f}{np.mean(f1s):>7.2f}"
                  f"{f'{found}/{seeds}':>15}", flush=True)
    print("   quiet: members' losses fall to 1% of the others' and swing in anti-phase in log L only (quiet_matrix)")
    for size in (20, 10, 5):
        for amp in (0.3, 0.1):
            f1s, found, swing = [], 0, []
            for s in range(seeds):
                ds = opposing_signals(n=1000, frequency=size / 100, seed=s)
                g = ds.groups
                truth = (np.flatnonzero(g == 0), np.flatnonzero(g == 1))
                losses = quiet_matrix(1000, 200, truth, amplitude=amp, seed=100 + s)
                sw = np.diff(losses, axis=0).std(axis=0)
                swing.append(float(sw[np.concatenate(truth)].max() / np.median(sw)))
                res = find_signals(losses, np.arange(200), ds, config=cfg)
                best = [max(res.groups, key=lambda gr: overlap_f1(gr.members, t), default=None) for t in truth]
                f1s += [overlap_f1(b.members, t) if b else 0.0 for b, t in zip(best, truth)]
                found += bool(best[0] and best[1] and any({p.a, p.b} == {best[0].id, best[1].id} for p in res.pairs))
            rows.append({"size": size, "amplitude": amp, "quiet": True, "max_member_swing": float(np.mean(swing)),
                         "f1": float(np.mean(f1s)), "pair_rate": found / seeds})
            print(f"   {size:>5}{amp:>10}{'quiet':>9}{np.mean(swing):>27.2f}{np.mean(f1s):>7.2f}"
                  f"{f'{found}/{seeds}':>15}", flush=True)
    return rows


def speed(cfg: SignalsConfig) -> list[dict]:
    print("== speed (synthetic record, 2 planted pairs; seconds per stage)")
    rows = []
    for steps, n in ((1000, 5000), (500, 5000), (1000, 2500)):
        ds = opposing_signals(n=n, seed=0)
        g = ds.groups
        planted = {0: (np.flatnonzero(g == 0), np.flatnonzero(g == 1)), 1: (np.flatnonzero(g == 2), np.flatnonzero(g == 3))}
        losses = eos_matrix(n, steps, planted, seed=0, amplitude=0.04)
        t0 = time.perf_counter()
        res = find_signals(losses, np.arange(steps), ds, config=cfg)
        dt = time.perf_counter() - t0
        rows.append({"steps": steps, "examples": n, "total_s": dt, **{k: v for k, v in res.timings.items()}})
        print(f"   {steps} x {n}: total {dt:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()
                                                        if k != "total") + ")", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--power-seeds", type=int, default=3)
    ap.add_argument("--real-run", help="losses.npy of a real CIFAR-10 GD run (the relabelled family)")
    ap.add_argument("--adam-dir", help="folder of losses_XX.npy of Adam runs on the first 1,000 CIFAR-10 images")
    ap.add_argument("--skip", nargs="*", default=[], choices=["null", "power", "speed"])
    ap.add_argument("--families", nargs="*", help="null families to run (default: all)")
    ap.add_argument("--out", default="bench_out/signals_calibration.json")
    a = ap.parse_args()
    cfg = SignalsConfig()
    figures = {}
    if "null" not in a.skip:
        figures["null"] = null_families(a.seeds, a.real_run, a.adam_dir, cfg, a.families)
    if "power" not in a.skip:
        figures["power"] = power_curve(a.power_seeds, cfg)
    if "speed" not in a.skip:
        figures["speed"] = speed(cfg)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
