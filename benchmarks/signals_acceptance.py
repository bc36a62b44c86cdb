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
5. planted groups on real CIFAR-10 images (``--planted``): 60 cats and 60 dogs
   with a green frame blended in, 60 deer and 60 horses with a magenta frame
   (blend ``--blend``, 1.0: the frame's colour itself), trained in the paper's
   setting for 800 steps; F1 of each planted group against its best-matching
   found group, whether each planted pair is reported, and how the members'
   own swings compare with the median example's.

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

from oppsig.data import cifar10, opposing_signals
from oppsig.errors import DataNotFoundError
from oppsig.losses import get_loss
from oppsig.models import build_model
from oppsig.report.grids import save_group_grids
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
        extra = f": corr {p.corr:.2f} (null {p.null_corr:.2f}), p={p.p_value:.2g}" if p else ""
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
        why = (f"; best candidate corr {best.corr:.2f}, p={best.p_value:.2g} (groups {best.p_a:.2g} / {best.p_b:.2g})"
               if best else "")
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


FRAME_COLOURS = {"green": (0, 255, 0), "magenta": (255, 0, 255)}
PLANTED = ((3, 5, "green"), (4, 7, "magenta"))  # (class a, class b, colour): cat/dog, deer/horse


def plant_frames(raw: np.ndarray, y: np.ndarray, blend: float, size: int = 60, width: int = 4, seed: int = 0):
    """Blend the 4-pixel border of ``size`` images of each planted class toward the pair's colour.

    Returns:
        ``(raw images with the frames, [rows of each planted group])`` (groups a0, b0, a1, b1).
    """
    rng = np.random.default_rng(seed)
    raw = raw.astype(np.float32).copy()
    used = np.zeros(len(y), dtype=bool)
    frame = np.zeros((raw.shape[2], raw.shape[3]), dtype=bool)
    frame[:width] = frame[-width:] = True
    frame[:, :width] = frame[:, -width:] = True
    groups = []
    for a, b, colour in PLANTED:
        col = np.array(FRAME_COLOURS[colour], dtype=np.float32)[:, None]
        for c in (a, b):
            rows = rng.choice(np.flatnonzero((y == c) & ~used), size, replace=False)
            used[rows] = True
            part = raw[rows]
            part[:, :, frame] = (1 - blend) * part[:, :, frame] + blend * col
            raw[rows] = part
            groups.append(np.sort(rows))
    return np.clip(np.round(raw), 0, 255).astype(np.uint8), groups


def planted_cifar_part(out: Path, steps: int, blend: float, cfg: SignalsConfig) -> dict | None:
    import dataclasses

    print(f"== CIFAR-10 with planted frames (blend {blend}): green cat/dog, magenta deer/horse, 60 images each")
    try:
        ds = cifar10(n=5000)
    except DataNotFoundError as e:
        print(f"   skipped: {e}")
        return None
    raw, groups = plant_frames(ds.raw.numpy(), ds.y.numpy(), blend)
    r64 = raw.reshape(len(raw), 3, -1).astype(np.float64)
    mean, std = r64.mean(axis=(0, 2)), r64.std(axis=(0, 2))
    x = ((raw.astype(np.float32) - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
    ds = dataclasses.replace(ds, raw=torch.from_numpy(raw), x=torch.from_numpy(x))
    d = out / f"planted-{blend}"
    losses, total = gd_record(ds, "ce", 0.1, steps, 0, d)
    res = find_signals(losses, np.arange(steps), ds, config=cfg)
    write_signals_json(res, d / "signals.json")
    swing = np.diff(losses, axis=0).std(axis=0)
    med = float(np.median(swing))
    best, rows = {}, []
    for k, truth in enumerate(groups):
        best[k] = max([(f1(g.members, truth), g.id) for g in res.groups] or [(0.0, None)])
        ratio = swing[truth] / med
        print(f"   planted group {k} ({len(truth)}): best F1 {best[k][0]:.3f} (found group {best[k][1]}); members' "
              f"own swing / median example's: max {ratio.max():.2f}, median {np.median(ratio):.2f}")
        rows.append({"f1": best[k][0], "max_swing_ratio": float(ratio.max())})
    reported = {frozenset((p.a, p.b)) for p in res.pairs}
    pairs_ok = []
    for k, (a, b, colour) in enumerate(PLANTED):
        ga, gb = best[2 * k][1], best[2 * k + 1][1]
        ok = frozenset((ga, gb)) in reported
        pairs_ok.append(ok)
        p = next((p for p in res.pairs if {p.a, p.b} == {ga, gb}), None)
        extra = f": corr {p.corr:.2f}, p={p.p_value:.2g}" if p else ""
        print(f"   planted pair {k} ({colour}): reported as a pair: {ok}{extra}")
        for gid in (ga, gb):
            if gid is not None:
                print(f"      group {gid}: {res.group(gid).explanation}")
    print(f"   significant pairs: {len(res.pairs)} ({res.test.get('n_null')} permutations, "
          f"family-wise alpha {res.test.get('alpha')}); detection {res.timings.get('total', 0):.1f} s")
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
        figures["planted"] = planted_cifar_part(out, a.planted_steps, a.blend, cfg)
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
