"""Calibration of the opposing-signals test: false-pair rates on null families, a power curve, and speed.

The claim: at the default level (``alpha = 0.01``, family-wise), a loss record
without opposing groups yields a significant pair in at most ``alpha`` of the
runs, whatever the generic structure of the record, and planted groups are
recovered even when no member swings more than the median example.

Every run is grouped and tested once; then each gate set of :data:`VARIANTS` (all
gates after the test, each one left out, the anti-phase gate alone, none) selects
its pairs from the same tested pairs, so the columns differ only by the gates.

1. **Null families** (``--seeds`` runs each, 20 by default), each run through
   the pipeline of :func:`oppsig.signals.find_signals`:

   - ``random-signs``: generic period-2 oscillation, each example its own sign
     and log-normal size (:func:`oppsig.signals.synthetic.eos_matrix`);
   - ``class-signs``: the same with one sign per class;
   - ``heavy-tails``: Pareto (shape 1.5) per-example amplitudes;
   - ``relabelled``: a real CIFAR-10 GD run's loss record (``--real-run``, a run
     directory or a ``losses.npy``) on 2,000 random examples, its columns
     assigned to the images at random;
   - ``adam``: real Adam runs without spikes (``--adam-dir``, ``losses_XX.npy``
     of fc-tanh on the first 1,000 CIFAR-10 images, Adam lr 1e-4, 300 steps;
     ``--make-adam N`` trains the missing runs 0..N-1 by that recipe).

   The synthetic families use the first 1,000 CIFAR-10 images as inputs when
   ``$OPPSIG_DATA`` holds them (else the synthetic control images). Printed: the
   false-pair rate (runs with at least one reported pair) per gate set, and the
   Kolmogorov-Smirnov distance from uniform of the groups' *unadjusted*
   permutation p-values (``(1 + #null >= observed) / (n + 1)``, 199 permutations).

2. **Power curve**: one planted pair (groups of 20, 10 or 5 examples of 1,000)
   at decreasing amplitude, the last ones with ``ordinary=True`` (no member
   swings more than the median example): mean best F1 of the two groups and the
   share of runs that report them as a pair, per gate set; then quiet pairs
   (:func:`oppsig.signals.synthetic.quiet_matrix`: low-loss members that move together
   only in relative terms, every member quieter than the median example); then cross-class
   pairs (:func:`oppsig.signals.synthetic.cross_class_matrix`: groups of classes 0 and 1
   sharing a feature, each also opposed by a louder, less anti-phase group of its own class
   with a feature of its own): the planted cross-class pair reported.

3. **Real runs** (``--planted`` runs with ``planted.json``, ``--plain`` run
   directories): whether each planted pair is reported, and the number of pairs, per gate set.

4. **Speed**: detection on synthetic records of 1,000 x 5,000, 500 x 5,000 and
   1,000 x 2,500 (steps x examples): seconds per stage, and the growth.

Usage:
    python benchmarks/signals_calibration.py [--seeds 20] [--real-run RUN] [--adam-dir DIR [--make-adam 20]]
        [--planted RUN ...] [--plain RUN ...] [--skip null power real speed]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kstest

from _common import planted_dataset
from oppsig.data import PlantedPair, cifar10, opposing_signals
from oppsig.errors import DataNotFoundError
from oppsig.signals import SignalsConfig, find_signals
from oppsig.signals.pairing import Inputs, pair_candidates
from oppsig.signals.pipeline import detect_stage, group_stage
from oppsig.signals.pair import GATES, CoherenceTest, select_pairs
from oppsig.signals.descriptors import input_descriptors
from oppsig.signals.explain import coherence_features
from oppsig.signals.synthetic import cross_class_matrix, eos_matrix, overlap_f1, quiet_matrix

VARIANTS = {
    "all gates (default)": GATES,
    "no anti-phase": tuple(g for g in GATES if g != "anti-phase"),
    "no visible": tuple(g for g in GATES if g != "visible"),
    "no leading": tuple(g for g in GATES if g != "leading"),
    "anti-phase only": ("anti-phase",),
    "no gates": (),
}
"""Gate sets after the test: each run is grouped and tested once, then every set is applied to its pairs."""


def analyse(losses, steps, ds, cfg: SignalsConfig, inputs: Inputs | None = None):
    """Group and test once, then select the pairs under every gate set of :data:`VARIANTS`.

    Returns:
        ``(group rows, {variant: reported pairs})``; ``all gates`` is what
        :func:`oppsig.signals.find_signals` reports.
    """
    det = detect_stage(losses, steps, ds, None, None, cfg)
    rows, series = group_stage(det, cfg)
    inputs = inputs or Inputs.build(ds, cfg)
    tested, _ = pair_candidates(det, rows, series, inputs, cfg)
    out = {}
    for name, gates in VARIANTS.items():
        sel = select_pairs(tested, cfg.anti_phase_level, cfg.min_direction_ratio, cfg.max_leading_corr, gates)
        out[name] = [p for p in sel if p.significant]
    return rows, out


def images(n: int):
    try:
        return cifar10(n=n), "CIFAR-10"
    except DataNotFoundError:
        return opposing_signals(n=n, magnitude=0.0, seed=0), "synthetic control"


def raw_pvalues(groups, ds, cfg, n: int = 199, seed: int = 0) -> list[float]:
    """Unadjusted within-class permutation p-values of every group (rows of ``ds``)."""
    if not groups:
        return []
    labels = ds.y.numpy()
    test = CoherenceTest(coherence_features(ds, input_descriptors(ds), cfg.n_pcs, cfg.seed), labels)
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
    names = list(VARIANTS)
    print(f"== null families ({seeds} seeds each; inputs: {source}; alpha {cfg.alpha}, family-wise)")
    print("   false-pair rate (runs with a reported pair) by the gates applied after the test: "
          + ", ".join(names))
    print(f"   {'family':<14}" + "".join(f"{n:>17}" for n in names) + f"{'groups':>8}{'KS':>7}{'KS p':>7}{'s/run':>7}")
    cache = {}

    def run(name, make, n_runs):
        hits, pv, t0, ng = dict.fromkeys(names, 0), [], time.perf_counter(), 0
        for s in range(n_runs):
            losses, data = make(s)
            inputs = cache.setdefault(id(data), Inputs.build(data, cfg)) if data is ds else None
            rows, sel = analyse(losses, np.arange(len(losses)), data, cfg, inputs)
            for v in names:
                hits[v] += bool(sel[v])
            ng += len(rows)
            pv += raw_pvalues(rows, data, cfg, seed=s)
        ks = kstest(pv, "uniform") if pv else None
        dt = (time.perf_counter() - t0) / n_runs
        out[name] = {"false_pair_rate": {v: hits[v] / n_runs for v in names}, "runs": n_runs, "groups": ng,
                     "ks": ks.statistic if ks else None, "ks_p": ks.pvalue if ks else None, "s_per_run": dt}
        ks_s = f"{ks.statistic:7.3f}{ks.pvalue:7.2f}" if ks else f"{'-':>7}{'-':>7}"
        print(f"   {name:<14}" + "".join(f"{f'{hits[v]}/{n_runs}':>17}" for v in names) + f"{ng:>8}{ks_s}{dt:7.1f}",
              flush=True)

    for name, make in fams.items():
        if not only or name in only:
            run(name, lambda s, make=make: (make(s), ds), seeds)
    if only and "relabelled" not in only:
        pass
    elif real_run and Path(real_run).exists():
        full = real_losses(real_run)
        ds5, _ = images(full.shape[1])

        def relabelled(s):
            rng = np.random.default_rng(s)
            cols = np.sort(rng.choice(full.shape[1], 2000, replace=False))
            return np.asarray(full[:, rng.permutation(cols)]), ds5.take(cols)

        run("relabelled", relabelled, seeds)
    else:
        print("   relabelled: skipped (no --real-run)")
    files = sorted(Path(adam_dir).glob("losses_*.npy")) if adam_dir else []
    if only and "adam" not in only:
        pass
    elif files:
        if len(files) < seeds:
            print(f"   (adam: {len(files)} runs found, fewer than {seeds}; make more with --make-adam)")
        run("adam", lambda s: (np.load(files[s]), ds), min(seeds, len(files)))
    else:
        print("   adam: skipped (no --adam-dir)")
    return out


CROSS_CLASS = (PlantedPair("bright_top", 0, 1), PlantedPair("dark_border", 0, 1))
"""The cross-class cells' data: groups 0 and 1 share a feature (the planted pair), 2 and 3 (their partners,
of classes 0 and 1) another."""


def power_cell(make, size: int, seeds: int, cfg: SignalsConfig, names: list[str], data_pairs=None) -> dict:
    """One cell of the power curve: ``make(planted, s)`` gives the losses of seed ``s`` with the planted groups
    ``planted`` (rows of ``opposing_signals`` groups 0, 1, ...; groups of ``size`` in 1,000 examples; its
    ``data_pairs``); the mean largest member's swing over the median example's, the mean best F1 of groups 0 and 1,
    and how often they are reported as a pair per gate set (``found``: counts, ``pair_rate``: shares)."""
    f1s, found, swing = [], dict.fromkeys(names, 0), []
    for s in range(seeds):
        ds = opposing_signals(n=1000, frequency=size / 100, seed=s, pairs=data_pairs)
        g = ds.groups
        planted = [np.flatnonzero(g == k) for k in range(int(g.max()) + 1)]
        truth = planted[:2]
        losses = make(planted, s)
        sw = np.diff(losses, axis=0).std(axis=0)
        swing.append(float(sw[np.concatenate(truth)].max() / np.median(sw)))
        groups, sel = analyse(losses, np.arange(len(losses)), ds, cfg)
        best = [max(range(len(groups)), key=lambda i: overlap_f1(groups[i], t), default=None) for t in truth]
        f1s += [overlap_f1(groups[b], t) if b is not None else 0.0 for b, t in zip(best, truth)]
        for v in names:
            found[v] += bool(None not in best and any({p.a, p.b} == set(best) for p in sel[v]))
    return {"max_member_swing": float(np.mean(swing)), "f1": float(np.mean(f1s)), "found": found,
            "pair_rate": {v: found[v] / seeds for v in names}}


def power_curve(seeds: int, cfg: SignalsConfig) -> list[dict]:
    names = list(VARIANTS)
    print(f"== power: one planted pair in 1,000 examples x 200 steps ({seeds} seeds per cell); "
          "pair reported, by the gates applied")
    print(f"   {'size':>5}{'amplitude':>10}{'ordinary':>9}{'swing/median':>13}{'F1':>6}"
          + "".join(f"{n:>17}" for n in names))
    rows = []
    for size in (20, 10, 5):
        for amp, ordinary in ((0.4, False), (0.1, False), (0.04, False), (0.02, True), (0.015, True)):
            cell = power_cell(lambda planted, s: eos_matrix(1000, 200, {0: tuple(planted[:2])}, seed=100 + s,
                                                             amplitude=amp, ordinary=ordinary), size, seeds, cfg, names)
            found = cell.pop("found")
            rows.append({"size": size, "amplitude": amp, "ordinary": ordinary, **cell})
            print(f"   {size:>5}{amp:>10}{str(ordinary):>9}{cell['max_member_swing']:>13.2f}{cell['f1']:>6.2f}"
                  + "".join(f"{f'{found[v]}/{seeds}':>17}" for v in names), flush=True)
    print("   quiet: members' losses fall to 1% of the others' and swing in anti-phase in log L only (quiet_matrix)")
    for size in (20, 10, 5):
        for amp in (0.3, 0.1):
            cell = power_cell(lambda planted, s: quiet_matrix(1000, 200, tuple(planted[:2]), amplitude=amp,
                                                               seed=100 + s), size, seeds, cfg, names)
            found = cell.pop("found")
            rows.append({"size": size, "amplitude": amp, "quiet": True, **cell})
            print(f"   {size:>5}{amp:>10}{'quiet':>9}{cell['max_member_swing']:>13.2f}{cell['f1']:>6.2f}"
                  + "".join(f"{f'{found[v]}/{seeds}':>17}" for v in names), flush=True)
    print("   cross-class: the planted pair shares a feature across classes 0 and 1; each group is also opposed,")
    print("   less anti-phase, by a group of its own class swinging 8x as much (cross_class_matrix)")
    for size in (20, 10):
        for amp in (0.04, 0.1):
            cell = power_cell(lambda planted, s: cross_class_matrix(1000, 200, tuple(planted[:2]), tuple(planted[2:]),
                                                                     amplitude=amp, seed=100 + s),
                              size, seeds, cfg, names, CROSS_CLASS)
            found = cell.pop("found")
            rows.append({"size": size, "amplitude": amp, "cross_class": True, **cell})
            print(f"   {size:>5}{amp:>10}{'cross':>9}{cell['max_member_swing']:>13.2f}{cell['f1']:>6.2f}"
                  + "".join(f"{f'{found[v]}/{seeds}':>17}" for v in names), flush=True)
    return rows


def real_losses(path: str) -> np.ndarray:
    """A loss record: a ``losses.npy`` (memory-mapped) or a run directory's dense record."""
    if Path(path).is_dir():
        from oppsig.store import open_run

        return np.asarray(open_run(path).losses[:])
    return np.load(path, mmap_mode="r")


def real_runs(planted: list[str], plain: list[str], cfg: SignalsConfig) -> list[dict]:
    """Real CIFAR-10 runs by gate set: planted frames (``planted.json`` beside ``losses.npy``): each planted
    pair reported?; plain run directories (e.g. 100 steps before the first spike): the number of pairs."""
    names = list(VARIANTS)
    print("== real CIFAR-10 runs: planted pairs reported (green, magenta) / pairs reported, by the gates applied")
    print(f"   {'run':<28}" + "".join(f"{n:>17}" for n in names))
    out = []
    for d in planted:
        meta = json.loads((Path(d) / "planted.json").read_text())
        ds = planted_dataset(cifar10(n=5000), np.load(Path(d) / "raw.npy"), meta["mean"], meta["std"])
        losses = np.load(Path(d) / "losses.npy")
        groups, sel = analyse(losses, np.arange(len(losses)), ds, cfg)
        best = [max(range(len(groups)), key=lambda i: overlap_f1(groups[i], t), default=None) for t in meta["groups"]]
        cells = {}
        for v in names:
            ok = [any({p.a, p.b} == {best[2 * k], best[2 * k + 1]} for p in sel[v])  # groups a0, b0, a1, b1
                  for k in range(len(meta["pairs"]))]
            cells[v] = "".join("y" if o else "n" for o in ok) + f" / {len(sel[v])}"
        out.append({"run": str(d), "blend": meta.get("blend"), "cells": cells,
                    "f1": [overlap_f1(groups[b], t) if b is not None else 0.0 for b, t in zip(best, meta["groups"])]})
        print(f"   {Path(d).name:<28}" + "".join(f"{cells[v]:>17}" for v in names), flush=True)
    for d in plain:
        from oppsig.data import build_datasets
        from oppsig.store import open_run, run_dataset

        run = open_run(d)
        ds = run_dataset(run, build_datasets(run.config.data, seed=run.config.seed)[0])
        _, sel = analyse(run.losses, np.asarray(run.steps), ds, cfg)
        cells = {v: str(len(sel[v])) for v in names}
        out.append({"run": str(d), "cells": cells,
                    "pairs": {v: [[p.a, p.b, round(p.corr, 3)] for p in sel[v]] for v in names}})
        print(f"   {Path(d).name:<28}" + "".join(f"{cells[v]:>17}" for v in names), flush=True)
    return out


def make_adam(folder: str, runs: int, steps: int = 300, lr: float = 1e-4) -> None:
    """The Adam family's records: fc-tanh 200-200 on the first 1,000 CIFAR-10 images, cross-entropy,
    full-batch Adam (lr 1e-4), 300 steps, seed s; ``losses_{s:02d}.npy`` (steps, 1000), every example's
    loss before each step. Existing files are kept."""
    import torch

    from oppsig.losses import get_loss
    from oppsig.models import build_model

    ds = cifar10(n=1000)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for s in range(runs):
        f = Path(folder) / f"losses_{s:02d}.npy"
        if f.exists():
            continue
        torch.manual_seed(s)
        model = build_model("mlp", tuple(ds.x.shape[1:]), ds.num_classes, widths=(200, 200), activation="tanh")
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = get_loss("ce")
        out = np.empty((steps, len(ds)), dtype=np.float32)
        for t in range(steps):
            per = loss_fn(model(ds.x), ds.y)
            out[t] = per.detach().numpy()
            opt.zero_grad()
            per.mean().backward()
            opt.step()
        np.save(f, out)
        print(f"   adam run {s}: loss {out[0].mean():.3f} -> {out[-1].mean():.3f}", flush=True)


def speed(cfg: SignalsConfig) -> list[dict]:
    print("== speed (synthetic record, 2 planted pairs; seconds per stage)")
    rows = []
    for steps, n in ((1000, 5000), (500, 5000), (1000, 2500)):
        ds = opposing_signals(n=n, seed=0)
        g = ds.groups
        planted = {0: (np.flatnonzero(g == 0), np.flatnonzero(g == 1)),
                   1: (np.flatnonzero(g == 2), np.flatnonzero(g == 3))}
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
    ap.add_argument("--real-run", help="a real CIFAR-10 GD run: its directory or a losses.npy (the relabelled family)")
    ap.add_argument("--adam-dir", help="folder of losses_XX.npy of Adam runs on the first 1,000 CIFAR-10 images")
    ap.add_argument("--make-adam", type=int, default=0, metavar="N",
                    help="first train the Adam runs 0..N-1 missing from --adam-dir")
    ap.add_argument("--planted", nargs="*", default=[], help="planted-frame runs (losses.npy, raw.npy, planted.json)")
    ap.add_argument("--plain", nargs="*", default=[], help="run directories without planted groups (pairs counted)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["null", "power", "speed", "real"])
    ap.add_argument("--families", nargs="*", help="null families to run (default: all)")
    ap.add_argument("--out", default="bench_out/signals_calibration.json")
    a = ap.parse_args()
    cfg = SignalsConfig()
    figures = {}
    if a.make_adam:
        if not a.adam_dir:
            ap.error("--make-adam needs --adam-dir")
        make_adam(a.adam_dir, a.make_adam)
    if "null" not in a.skip:
        figures["null"] = null_families(a.seeds, a.real_run, a.adam_dir, cfg, a.families)
    if "power" not in a.skip:
        figures["power"] = power_curve(a.power_seeds, cfg)
    if "real" not in a.skip and (a.planted or a.plain):
        figures["real"] = real_runs(a.planted, a.plain, cfg)
    if "speed" not in a.skip:
        figures["speed"] = speed(cfg)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
