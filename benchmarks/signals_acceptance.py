"""Acceptance figures of the opposing-signals search (``oppsig.signals``).

Trains with plain full-batch gradient descent, recording every example's loss
at every step, then runs :func:`oppsig.signals.find_signals` and prints:

1. synthetic data with two planted opposing pairs (``opposing_signals()``
   defaults, fc-tanh 200-200, MSE, lr 0.1, at the edge of stability): F1 of
   each planted group against its best-matching found group, and whether each
   planted pair is reported as a pair;
2. the control data set (magnitude 0: no planted feature), trained the same
   way, and a second control trained at its own edge of stability (lr 0.5):
   the number of significant pairs (should be 0);
3. 5k CIFAR-10, fc-tanh, cross-entropy, GD lr 0.1, 1000 steps: the pairs, their
   anti-phase correlation, the gradient cosine of the two groups and their
   alignment with the top Hessian eigenvector at the pair's main spike, the
   share of the spike they carry, and image grids of the groups (PNG);
4. the detection time on the 1000-step x 5000-example CIFAR record;
5. planted groups on real CIFAR-10 images (``planted``): by default 60 cats and 60 dogs
   with a green frame blended in, 60 deer and 60 horses with a magenta frame (blend
   ``--blend``, 1.0: the frame's colour itself), trained in the paper's setting for 800
   steps; F1 of each planted group against its best-matching found group, whether each
   planted pair is reported (its anti-phase against random splits, its p-value), and how
   the members' own swings compare with the median example's (swing: the standard
   deviation over the run of an example's per-step change of its raw loss). ``--pairs``,
   ``--planted-size`` and ``--easiest`` (draw the members from the images of lowest mean
   loss in an unplanted run, ``--baseline``) choose the plant; ``--pilot RUN`` plants
   exactly the members of a previous planted run whose own swing there was at most
   ``--pilot-swing`` x the median example's (``--pilot-corr``: and that followed their
   group in relative terms); ``--saved RUN ...`` detects saved planted runs again
   (``planted.json``, ``losses.npy``, ``raw.npy`` if kept) without writing into them.

The quiet planted pair of docs/findings.md (every member's own swing at most the median example's; each step
plants exactly the quiet members of the run before it, 2-3 minutes each at one thread; ``--plant-seed`` on the
first run draws other images)::

    python benchmarks/signals_acceptance.py --skip synthetic control cifar --out A --blend 1.0 \
        --pairs "4,7,magenta 1,9,yellow" --planted-size 150 --easiest 0.5
    python benchmarks/signals_acceptance.py --skip synthetic control cifar --out B --blend 1.0 \
        --pairs "4,7,magenta 1,9,yellow" --pilot A/planted-1.0-150-easy0.5-magenta-yellow --pilot-swing 1.0
    python benchmarks/signals_acceptance.py --skip synthetic control cifar --out C --blend 1.0 \
        --pairs "4,7,magenta 1,9,yellow" --pilot B/planted-1.0-quiet1.0-magenta-yellow --pilot-swing 1.0

Loss records and checkpoints are cached under ``--out`` (rerunning reuses them).
CIFAR-10 is read from ``$OPPSIG_DATA`` (skipped when absent).

Usage:
    python benchmarks/signals_acceptance.py [--out bench_out/signals_acceptance] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import channel_stats, planted_dataset
from oppsig.data import cifar10, opposing_signals
from oppsig.errors import DataNotFoundError
from oppsig.losses import get_loss
from oppsig.models import build_model
from oppsig.report.grids import save_group_grids
from oppsig.signals.group import relative_floor
from oppsig.signals.synthetic import overlap_f1 as f1
from oppsig.signals import (
    SignalsConfig,
    find_signals,
    summary_text,
    verify_pair,
    write_signals_json,
)


def gd_record(ds, loss_name: str, lr: float, steps: int, seed: int, out: Path, ckpt_every: int = 0):
    """Full-batch GD on fc-tanh 200-200; returns (losses (steps, N) float32, per-step total loss)."""
    f = out / "losses.npy"
    if f.exists():
        return np.load(f), np.load(out / "total.npy")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = build_model("mlp", tuple(ds.x.shape[1:]), ds.num_classes, widths=(200, 200), activation="tanh")
    loss_fn = get_loss(loss_name)
    params = list(model.parameters())
    losses = np.empty((steps, len(ds)), dtype=np.float32)
    t0 = time.time()
    for t in range(steps):
        per = loss_fn(model(ds.x), ds.y)
        losses[t] = per.detach().numpy()
        if ckpt_every and t % ckpt_every == 0:
            torch.save(model.state_dict(), out / f"ckpt_{t:05d}.pt")
        grads = torch.autograd.grad(per.mean(), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
        if not np.isfinite(losses[t]).all():
            raise FloatingPointError(f"training diverged at step {t}")
        if t % 100 == 0:
            print(f"    step {t}: loss {losses[t].mean():.4f} ({time.time() - t0:.0f} s)", flush=True)
    total = losses.mean(axis=1, dtype=np.float64)
    np.save(f, losses)
    np.save(out / "total.npy", total)
    return losses, total


def top_eigvec(model, ds, loss_name: str):
    """Top Hessian eigenvector of the full-batch loss (oppsig.curvature, else 30 power iterations)."""
    try:
        from oppsig.curvature import make_batches, sharpness

        r = sharpness(model, make_batches(ds.x, ds.y, 5000), get_loss(loss_name), k=1, tol=1e-3, max_iter=60)
        return float(r.eigenvalues[0]), r.eigenvectors[:, 0]
    except ImportError:
        pass
    names = [n for n, _ in model.named_parameters()]
    base = [p.detach() for p in model.parameters()]
    loss_fn = get_loss(loss_name)

    def f(*ps):
        return loss_fn(torch.func.functional_call(model, dict(zip(names, ps)), (ds.x,)), ds.y).mean()

    v = [torch.randn_like(p) for p in base]
    lam = 0.0
    for _ in range(30):
        nv = torch.sqrt(sum((t * t).sum() for t in v))
        v = [t / nv for t in v]
        _, hv = torch.autograd.functional.hvp(f, tuple(base), tuple(v))
        lam = float(sum((a * b).sum() for a, b in zip(hv, v)))
        v = list(hv)
    nv = torch.sqrt(sum((t * t).sum() for t in v))
    return lam, torch.cat([(t / nv).reshape(-1) for t in v])


def synthetic_part(out: Path, steps: int, cfg: SignalsConfig) -> dict:
    print("== synthetic data, two planted opposing pairs (opposing_signals defaults, n=5000)")
    print(f"   fc-tanh 200-200, MSE, full-batch GD lr 0.1, {steps} steps")
    ds = opposing_signals(n=5000, seed=0)
    losses, total = gd_record(ds, "mse", 0.1, steps, 0, out / "synthetic")
    t0 = time.perf_counter()
    res = find_signals(losses, np.arange(steps), ds, config=cfg)
    dt = time.perf_counter() - t0
    write_signals_json(res, out / "synthetic" / "signals.json")
    g = ds.groups
    best = {}
    for k in range(4):
        truth = np.flatnonzero(g == k)
        scores = [(f1(G.members, truth), G.id) for G in res.groups] or [(0.0, None)]
        best[k] = max(scores)
        print(f"   planted group {k} ({len(truth)} examples): best F1 {best[k][0]:.3f} (found group {best[k][1]})")
    reported = {frozenset((p.a, p.b)) for p in res.pairs}
    pairs_ok = []
    for k, pr in enumerate(ds.meta["pairs"]):
        ga, gb = best[pr["groups"][0]][1], best[pr["groups"][1]][1]
        ok = frozenset((ga, gb)) in reported
        pairs_ok.append(ok)
        p = next((p for p in res.pairs if {p.a, p.b} == {ga, gb}), None)
        extra = f": corr {p.corr:.2f} (null {p.anti_phase.null_corr:.2f}), p={p.coherence.p_value:.2g}" if p else ""
        print(f"   planted pair {k} ({pr['feature']}, classes {pr['class_a']} vs {pr['class_b']}): "
              f"reported as a pair: {ok}{extra}")
    print(f"   significant pairs: {len(res.pairs)}; groups: {len(res.groups)}; detection {dt:.1f} s")
    return {"f1": [best[k][0] for k in range(4)], "pairs_reported": pairs_ok, "n_pairs": len(res.pairs)}


def control_part(out: Path, steps: int, cfg: SignalsConfig) -> dict:
    print("== control data set (magnitude 0: no planted feature)")
    ds = opposing_signals(n=5000, magnitude=0.0, seed=0)
    outcome = {}
    for name, lr in (("control", 0.1), ("control_eos", 0.5)):
        print(f"   fc-tanh 200-200, MSE, full-batch GD lr {lr}, {steps} steps")
        losses, _ = gd_record(ds, "mse", lr, steps, 0, out / name)
        res = find_signals(losses, np.arange(steps), ds, config=cfg)
        write_signals_json(res, out / name / "signals.json")
        best = res.rejected_pairs[0] if res.rejected_pairs else None
        why = (f"; best candidate corr {best.corr:.2f}, p={best.coherence.p_value:.2g} "
               f"(groups {best.coherence.p_a:.2g} / {best.coherence.p_b:.2g})" if best else "")
        print(f"   lr {lr}: significant pairs {len(res.pairs)} (groups {len(res.groups)}, spikes {len(res.spikes)}, "
              f"generic null halves correlate at {res.null_corr:.2f}){why}")
        outcome[name] = len(res.pairs)
    return outcome


def cifar_part(out: Path, steps: int, cfg: SignalsConfig) -> dict | None:
    print("== CIFAR-10, first 5000 training images, fc-tanh 3072-200-200-10, cross-entropy, GD lr 0.1, seed 0")
    try:
        ds = cifar10(n=5000)
    except DataNotFoundError as e:
        print(f"   skipped: {e}")
        return None
    d = out / "cifar10"
    losses, total = gd_record(ds, "ce", 0.1, steps, 0, d, ckpt_every=10)
    t0 = time.perf_counter()
    res = find_signals(losses, np.arange(steps), ds, config=cfg)
    dt = time.perf_counter() - t0
    print(f"   detection on {steps} steps x {len(ds)} examples: {dt:.1f} s "
          f"({', '.join(f'{k} {v:.1f}' for k, v in res.timings.items())})")
    big = sorted(res.spikes, key=lambda s: -s.height)[:5]
    print(f"   spikes: {len(res.spikes)}; largest at steps "
          + ", ".join(f"{s.step} (+{100 * s.height:.0f}%)" for s in big))
    print(f"   top-{2 * cfg.k} examples carry {100 * res.top_share:.1f}% of |loss change| per step (mean)")
    for s in big[:3]:
        rise = total[s.row] - total[s.onset_row]
        d_top = losses[s.row, list(s.top_up) + list(s.top_down)] - losses[s.row - 1, list(s.top_up) + list(s.top_down)]
        step_rise = total[s.row] - total[s.row - 1]
        print(f"   spike at step {s.step}: rise {rise:.2f}; the step into the peak: top-{2 * cfg.k} carry "
              f"{100 * d_top.sum() / len(ds) / step_rise:.0f}% of its net rise")
    print(f"   significant pairs: {len(res.pairs)} (generic null halves correlate at {res.null_corr:.2f})")
    loss_fn = get_loss("ce")
    model = build_model("mlp", (3, 32, 32), 10, widths=(200, 200), activation="tanh")
    verifs = []
    for p in res.pairs:
        ga, gb = res.group(p.a), res.group(p.b)
        row = p.spikes[0] if p.spikes else int(np.argmax(total))
        spike = next(s for s in res.spikes if s.row == row) if p.spikes else None
        at = (spike.onset_row if spike else row) // 10 * 10
        model.load_state_dict(torch.load(d / f"ckpt_{at:05d}.pt"))
        lam, v = top_eigvec(model, ds, "ce") if len(verifs) < 3 else (float("nan"), None)
        ver = verify_pair(model, ds, loss_fn, (ga, gb), eigvec=v, step=at)
        verifs.append(ver)
        mix = lambda g: ", ".join(f"{k} {c}" for k, c in list(g.class_counts.items())[:2])  # noqa: E731
        share = ", ".join(f"step {res.steps[r]}: {100 * x:.0f}%" for r, x in zip(p.spikes, p.spike_rise_share))
        eig = (f"; sharpness {lam:.1f}, |cos| with top eigenvector {ver.eig_cosine_a:.2f} / {ver.eig_cosine_b:.2f}"
               if v is not None else "")
        print(f"   pair {p.a} vs {p.b}: corr {p.corr:.2f}, gradient cosine at step {at}: {ver.grad_cosine:+.2f}{eig}")
        print(f"      group {ga.id}: {ga.size} ({mix(ga)}): {', '.join(ga.shared)}")
        print(f"      group {gb.id}: {gb.size} ({mix(gb)}): {', '.join(gb.shared)}")
        print(f"      share of the total-loss rise: {share}")
    import dataclasses

    res = dataclasses.replace(res, verifications=tuple(verifs))
    write_signals_json(res, d / "signals.json")
    ids = sorted({i for p in res.pairs[:3] for i in (p.a, p.b)})
    paths = save_group_grids(res, ds, d / "grids", max_images=40, groups=ids)
    print(f"   image grids: {', '.join(str(p) for p in paths)}")
    (d / "summary.txt").write_text(summary_text(res) + "\n")
    ok = [(p, v) for p, v in zip(res.pairs, verifs) if p.corr <= -0.5 and v.grad_cosine < 0]
    print(f"   pairs with corr <= -0.5 and negative gradient cosine: {len(ok)} of {len(res.pairs)}")
    return {"time_s": dt, "n_pairs": len(res.pairs), "ok_pairs": len(ok),
            "pairs": [{"a": p.a, "b": p.b, "corr": p.corr, "grad_cosine": v.grad_cosine}
                      for p, v in zip(res.pairs, verifs)]}


FRAME_COLOURS = {"green": (0, 255, 0), "magenta": (255, 0, 255), "yellow": (255, 255, 0)}
PLANTED = ((3, 5, "green"), (4, 7, "magenta"))  # (class a, class b, colour): cat/dog, deer/horse


def parse_pairs(text: str) -> tuple[tuple[int, int, str], ...]:
    """``"4,7,magenta 1,9,yellow"`` -> ``((4, 7, "magenta"), (1, 9, "yellow"))``."""
    out = []
    for item in text.split():
        a, b, colour = item.split(",")
        if colour not in FRAME_COLOURS:
            raise SystemExit(f"--pairs: unknown colour {colour!r}; known: {', '.join(FRAME_COLOURS)}")
        out.append((int(a), int(b), colour))
    return tuple(out)


def easy_pool(baseline: np.ndarray, y: np.ndarray, share: float) -> np.ndarray:
    """Rows whose mean loss over an unplanted run is in the lowest ``share`` of their class (all rows for 1.0)."""
    if share >= 1.0:
        return np.ones(len(y), dtype=bool)
    mean = baseline.mean(axis=0, dtype=np.float64)
    pool = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        pool[rows[np.argsort(mean[rows], kind="stable")[: int(round(share * len(rows)))]]] = True
    return pool


def plant_frames(raw: np.ndarray, y: np.ndarray, blend: float, size: int = 60, width: int = 4, seed: int = 0,
                 pairs=PLANTED, pool: np.ndarray | None = None, chosen: list[np.ndarray] | None = None):
    """Blend the 4-pixel border of ``size`` images of each planted class toward the pair's colour.

    Args:
        pool: rows that may be planted (default all), e.g. :func:`easy_pool`.
        chosen: the rows of each planted group (a0, b0, a1, b1, ...) instead of a random draw.

    Returns:
        ``(raw images with the frames, [rows of each planted group])`` (groups a0, b0, a1, b1, ...).
    """
    rng = np.random.default_rng(seed)
    raw = raw.astype(np.float32).copy()
    used = np.zeros(len(y), dtype=bool) if pool is None else ~pool
    frame = np.zeros((raw.shape[2], raw.shape[3]), dtype=bool)
    frame[:width] = frame[-width:] = True
    frame[:, :width] = frame[:, -width:] = True
    groups = []
    for k, (a, b, colour) in enumerate(pairs):
        col = np.array(FRAME_COLOURS[colour], dtype=np.float32)[:, None]
        for j, c in enumerate((a, b)):
            if chosen is not None:
                rows = np.asarray(chosen[2 * k + j])
            else:
                rows = rng.choice(np.flatnonzero((y == c) & ~used), size, replace=False)
            used[rows] = True
            part = raw[rows]
            part[:, :, frame] = (1 - blend) * part[:, :, frame] + blend * col
            raw[rows] = part
            groups.append(np.sort(rows))
    return np.clip(np.round(raw), 0, 255).astype(np.uint8), groups


def baseline_losses(path: str | None, ds, steps: int, out: Path) -> np.ndarray:
    """Per-example losses of an unplanted run in the same setting: ``path`` (a ``losses.npy`` or an oppsig run
    directory), else trained here (cached under ``out/baseline-<steps>``)."""
    if path is None:
        return gd_record(ds, "ce", 0.1, steps, 0, out / f"baseline-{steps}")[0]
    if path.endswith(".npy"):
        return np.load(path, mmap_mode="r")[:steps]
    from oppsig import open_run

    return np.asarray(open_run(path).losses[:steps])


def quiet_members(pilot: str, max_swing: float, min_corr: float | None = None) -> list[np.ndarray]:
    """The planted groups of a pilot run (``planted.json`` and ``losses.npy`` in ``pilot``), each cut to the members
    whose own swing in that run was at most ``max_swing`` x the median example's and, with ``min_corr``, whose
    relative loss changes (of ``log L``) correlated at least ``min_corr`` with the mean of the rest of their group
    there (the members that followed the planted feature)."""
    groups = [np.asarray(g) for g in json.loads((Path(pilot) / "planted.json").read_text())["groups"]]
    losses = np.load(Path(pilot) / "losses.npy").astype(np.float64)
    swing = np.diff(losses, axis=0).std(axis=0)
    ratio = swing / np.median(swing)
    out = []
    for g in groups:
        keep = ratio[g] <= max_swing
        if min_corr is not None:
            rel = np.diff(np.log(losses[:, g] + relative_floor(losses[0])), axis=0)
            rest = (rel.sum(axis=1, keepdims=True) - rel) / (len(g) - 1)
            keep &= np.array([np.corrcoef(rel[:, i], rest[:, i])[0, 1] for i in range(len(g))]) >= min_corr
        out.append(g[keep])
    return out


def planted_cifar_part(out: Path, steps: int, blend: float, cfg: SignalsConfig, pairs=PLANTED, size: int = 60,
                       easiest: float = 1.0, baseline: str | None = None, pilot: str | None = None,
                       pilot_swing: float = 0.6, pilot_corr: float | None = None, plant_seed: int = 0) -> dict | None:
    names = ", ".join(f"{colour} {a}/{b}" for a, b, colour in pairs)
    try:
        ds = cifar10(n=5000)
    except DataNotFoundError as e:
        print(f"== CIFAR-10 with planted frames: skipped: {e}")
        return None
    y = ds.y.numpy()
    if pilot:  # exactly the quiet members of a pilot run's groups
        chosen = quiet_members(pilot, pilot_swing, pilot_corr)
        follow = ("" if pilot_corr is None
                  else f" and whose relative loss changes followed the group's (corr >= {pilot_corr})")
        print(f"== CIFAR-10 with planted frames (blend {blend}): {names}; the members of {pilot}'s groups whose own "
              f"swing there was <= {pilot_swing} x the median example's{follow} "
              f"({', '.join(str(len(g)) for g in chosen)})")
        raw, groups = plant_frames(ds.raw.numpy(), y, blend, pairs=pairs, chosen=chosen)
    else:
        pick = "" if easiest >= 1 else f", drawn from the easiest {100 * easiest:.0f}% of their class (unplanted run)"
        print(f"== CIFAR-10 with planted frames (blend {blend}): {names}; {size} images each{pick}")
        pool = easy_pool(baseline_losses(baseline, ds, steps, out), y, easiest) if easiest < 1 else None
        raw, groups = plant_frames(ds.raw.numpy(), y, blend, size=size, pairs=pairs, pool=pool, seed=plant_seed)
    mean, std = channel_stats(raw)
    ds = planted_dataset(ds, raw, mean, std)
    tag = "" if (pairs, size, easiest, pilot) == (PLANTED, 60, 1.0, None) else (
        f"-{size}-easy{easiest}-" if pilot is None else f"-quiet{pilot_swing}-" + ("" if pilot_corr is None else
                                                                                   f"follow{pilot_corr}-")
    ) + "-".join(c for _, _, c in pairs) + (f"-seed{plant_seed}" if plant_seed and pilot is None else "")
    d = out / f"planted-{blend}{tag}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "planted.json").write_text(json.dumps({"blend": blend, "size": size, "easiest": easiest, "pilot": pilot,
                                                "pilot_swing": pilot_swing, "pilot_corr": pilot_corr,
                                                "plant_seed": plant_seed, "pairs": [list(p) for p in pairs],
                                                "mean": mean.tolist(), "std": std.tolist(),
                                                "groups": [g.tolist() for g in groups]}) + "\n")
    np.save(d / "raw.npy", raw)  # the planted images, for re-detection (--saved) and the calibration harness
    losses, _ = gd_record(ds, "ce", 0.1, steps, 0, d)
    return planted_figures(ds, groups, pairs, losses, d, cfg)


def saved_planted_part(run: str, out: Path, cfg: SignalsConfig) -> dict | None:
    """The planted figures of a saved planted run (``planted.json``, ``losses.npy`` and ``raw.npy`` if the run
    kept its images, else re-planted), detected again with this code; nothing is written into ``run``."""
    run_dir = Path(run)
    meta = json.loads((run_dir / "planted.json").read_text())
    pairs = tuple((int(a), int(b), str(c)) for a, b, c in meta["pairs"])
    groups = [np.asarray(g) for g in meta["groups"]]
    try:
        ds = cifar10(n=5000)
    except DataNotFoundError as e:
        print(f"== saved planted run {run}: skipped: {e}")
        return None
    raw = (np.load(run_dir / "raw.npy") if (run_dir / "raw.npy").exists()
           else plant_frames(ds.raw.numpy(), ds.y.numpy(), meta["blend"], pairs=pairs, chosen=groups)[0])
    print(f"== saved planted run {run} (blend {meta['blend']}; "
          + ", ".join(f"{c} {a}/{b}" for a, b, c in pairs) + f"; groups of {', '.join(str(len(g)) for g in groups)})")
    return planted_figures(planted_dataset(ds, raw), groups, pairs, np.load(run_dir / "losses.npy"),
                           out / f"saved-{run_dir.name}", cfg)


def planted_figures(ds, groups, pairs, losses: np.ndarray, d: Path, cfg: SignalsConfig) -> dict:
    """Detect on ``losses`` and print, for each planted group, the best F1 and its members' swing; for each
    planted pair, whether it is reported (corr, p-value). Writes ``signals.json`` and the group grids into ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    steps = len(losses)
    res = find_signals(losses, np.arange(steps), ds, config=cfg)
    write_signals_json(res, d / "signals.json")
    # swing: the standard deviation over the run of an example's per-step loss change (raw loss)
    swing = np.diff(losses, axis=0).std(axis=0)
    med = float(np.median(swing))
    best, rows = {}, []
    for k, truth in enumerate(groups):
        best[k] = max([(f1(g.members, truth), g.id) for g in res.groups] or [(0.0, None)])
        ratio = swing[truth] / med
        size = res.group(best[k][1]).size if best[k][1] is not None else 0
        print(f"   planted group {k} ({len(truth)}): best F1 {best[k][0]:.3f} (found group {best[k][1]}, {size} "
              f"members); members' own swing / median example's: max {ratio.max():.2f}, median {np.median(ratio):.2f}")
        rows.append({"f1": best[k][0], "found": size, "max_swing_ratio": float(ratio.max()),
                     "median_swing_ratio": float(np.median(ratio))})
    reported = {frozenset((p.a, p.b)) for p in res.pairs}
    pairs_ok = []
    for k, (a, b, colour) in enumerate(pairs):
        ga, gb = best[2 * k][1], best[2 * k + 1][1]
        ok = frozenset((ga, gb)) in reported
        pairs_ok.append(ok)
        p = next((p for p in res.pairs if {p.a, p.b} == {ga, gb}), None)
        if p is None:
            q = next((q for q in res.rejected_pairs if {q.a, q.b} == {ga, gb}), None)
            if q is not None:
                print(f"   planted pair {k} ({colour}): tested, not reported: corr {q.corr:.2f}, "
                      f"p={q.coherence.p_value:.2g}, "
                      f"failed {', '.join(q.failed) or '-'}")
        extra = (f": corr {p.corr:.2f} (random splits {p.anti_phase.null_corr:.2f}, "
                 f"anti-phase p={p.anti_phase.p:.2g}"
                 f"{', flagged weak' if p.anti_phase.weak else ''}), p={p.coherence.p_value:.2g} "
                 f"(groups {p.coherence.p_a:.2g} / {p.coherence.p_b:.2g})" if p else "")
        print(f"   planted pair {k} ({colour}): reported as a pair: {ok}{extra}")
        for gid in (ga, gb):
            if gid is not None:
                print(f"      group {gid}: {res.group(gid).explanation}")
    print(f"   significant pairs: {len(res.pairs)} ({res.test.get('n_null')} permutations, "
          f"family-wise alpha {res.test.get('alpha')}); detection {res.timings.get('total', 0):.1f} s "
          f"({', '.join(f'{k} {v:.1f}' for k, v in res.timings.items() if k != 'total')})")
    save_group_grids(res, ds, d / "grids", groups=[best[k][1] for k in best if best[k][1] is not None])
    return {"groups": rows, "pairs_reported": pairs_ok, "n_pairs": len(res.pairs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out/signals_acceptance")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cifar-steps", type=int, default=1000)
    ap.add_argument("--synthetic-steps", type=int, default=600)
    ap.add_argument("--planted-steps", type=int, default=800)
    ap.add_argument("--blend", type=float, default=1.0, help="planted frames: blend toward the colour (0..1)")
    ap.add_argument("--pairs", default="3,5,green 4,7,magenta",
                    help="planted pairs 'class_a,class_b,colour ...' (colours: " + ", ".join(FRAME_COLOURS) + ")")
    ap.add_argument("--planted-size", type=int, default=60, help="planted images per class")
    ap.add_argument("--easiest", type=float, default=1.0,
                    help="draw planted images from this share of their class with the lowest mean loss in an "
                         "unplanted run (1.0: from all)")
    ap.add_argument("--plant-seed", type=int, default=0, help="seed of the draw of the planted images")
    ap.add_argument("--baseline", help="the unplanted run for --easiest: losses.npy or a run directory "
                                       "(default: trained here)")
    ap.add_argument("--pilot", help="a planted run directory: plant exactly its groups' members whose own swing "
                                    "there was at most --pilot-swing x the median example's")
    ap.add_argument("--pilot-swing", type=float, default=0.6)
    ap.add_argument("--pilot-corr", type=float, help="with --pilot: keep only the members whose relative loss "
                                                     "changes correlated at least this with their group's there")
    ap.add_argument("--saved", nargs="*", default=[],
                    help="saved planted runs (planted.json, losses.npy, raw.npy) to detect again (written under --out)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "control", "cifar", "planted"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    cfg = SignalsConfig()
    figures = {}
    if "synthetic" not in a.skip:
        figures["synthetic"] = synthetic_part(out, a.synthetic_steps, cfg)
    if "control" not in a.skip:
        figures["control"] = control_part(out, a.synthetic_steps, cfg)
    if "cifar" not in a.skip:
        figures["cifar10"] = cifar_part(out, a.cifar_steps, cfg)
    if "planted" not in a.skip:
        figures["planted"] = planted_cifar_part(out, a.planted_steps, a.blend, cfg, parse_pairs(a.pairs),
                                                a.planted_size, a.easiest, a.baseline, a.pilot, a.pilot_swing,
                                                a.pilot_corr, a.plant_seed)
    for run in a.saved:
        figures[f"saved {run}"] = saved_planted_part(run, out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    print("== acceptance")
    if "synthetic" in figures:
        s = figures["synthetic"]
        print(f"   synthetic: F1 per planted group {[round(x, 3) for x in s['f1']]} (need >= 0.9 each): "
              f"{all(x >= 0.9 for x in s['f1'])}; planted pairs reported {s['pairs_reported']}")
    if "control" in figures:
        ctrl = figures["control"]
        print(f"   control: significant pairs {ctrl} (need 0): {all(v == 0 for v in ctrl.values())}")
    if figures.get("cifar10"):
        c = figures["cifar10"]
        print(f"   CIFAR-10: pairs with corr <= -0.5 and negative gradient cosine: {c['ok_pairs']} (need >= 1); "
              f"detection {c['time_s']:.1f} s (need < 60 s)")


if __name__ == "__main__":
    main()
