"""The paper's networks at reduced width: ResNet-18, VGG-11 and a small ViT under full-batch GD on 2,000 CIFAR-10
images, at the edge of stability.

For each network it opens the run of ``configs/<net>-gd-cifar2k.yaml`` (``--train`` trains a missing one, 9-15
CPU-minutes each at one thread), runs ``oppsig detect`` on it when its ``signals.json`` is missing, and prints:
the steps whose certified sharpness lies within 10% of 2/lr (the interval sharpness +- its bound inside
[0.9, 1.1] x 2/lr, converged solves only), the peak certified sharpness with its bound, the pairs detect found, and
the share of the top Hessian eigenvector in the first third of the layers, the middle third, the last third and
the last layer at the start, middle and end of the tracked steps. It writes one figure per network to
``<out>/net-<net>.png`` (sharpness against 2/lr and its 10% band, with the layer shares beneath).

    python benchmarks/paper_networks.py [--runs runs] [--nets resnet18,vgg11,vit,vgg11-mse] [--train] [--out docs]

Wall time: about 4 s per finished, detected run; detect adds 10-30 s per run, training 10-30 minutes per
network on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NETS = ("resnet18", "vgg11", "vit", "vgg11-mse")  # vgg11-mse: VGG-11 under MSE (configs/vgg11-mse-gd-cifar2k.yaml)
BAND = 0.1  # within 10% of 2/lr


def run_dir(runs: Path, net: str) -> Path:
    return runs / f"{net}-gd-cifar2k"


def ensure(runs: Path, net: str, train: bool) -> Path:
    """The run directory of ``net``, trained first with ``--train`` when absent, and detected when not yet."""
    path = run_dir(runs, net)
    if not (path / "metrics.jsonl").exists():
        if not train:
            sys.exit(f"error: no run {path}; train it (pass --train, or: oppsig train "
                     f"configs/{net}-gd-cifar2k.yaml --threads=1 --out-dir {runs})")
        subprocess.run([sys.executable, "-m", "oppsig", "train", str(ROOT / f"configs/{net}-gd-cifar2k.yaml"),
                        "--threads=1", "--no-progress", "--out-dir", str(runs)], check=True)
    if not (path / "signals.json").exists():
        subprocess.run([sys.executable, "-m", "oppsig", "detect", str(path)], check=True)
    return path


def edge_steps(steps, sharp, err, conv, thr, every: int) -> tuple[int, int, int]:
    """(steps within the band, the longest unbroken stretch of them in steps, its first step).

    Each measurement inside the band stands for the ``every`` steps up to the next one.

    Example:
        >>> edge_steps(np.array([0, 10, 20, 30]), np.array([5., 9.8, 10.5, 9.5]), np.zeros(4), np.ones(4),
        ...            np.full(4, 10.), 10)
        (30, 30, 10)
    """
    ok = conv.astype(bool) & (sharp - err >= (1 - BAND) * thr) & (sharp + err <= (1 + BAND) * thr)
    best, start, run, first = 0, -1, 0, -1
    for i, good in enumerate(ok):
        run = run + 1 if good else 0
        if good and run == 1:
            first = int(steps[i])
        if run > best:
            best, start = run, first
    return int(ok.sum()) * every, best * every, start


def shares(run) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(layer names in model order, measurement steps, shares (layers, measurements))."""
    m = run.metrics
    keys = [k for k in m if k.startswith("layer_share/")]
    steps = np.asarray(m["step"])
    rows = np.stack([np.asarray(m[k], dtype=float) for k in keys])
    have = np.isfinite(rows).all(axis=0)
    return [k.split("/", 1)[1] for k in keys], steps[have], rows[:, have]


def thirds(share: np.ndarray) -> dict[str, float]:
    """The share of one measurement summed over the first, middle and last third of the layers, and the last."""
    n = len(share)
    a, b = int(round(n / 3)), int(round(2 * n / 3))
    return {"first third": float(share[:a].sum()), "middle third": float(share[a:b].sum()),
            "last third": float(share[b:].sum()), "last layer": float(share[-1])}


def pairs_in_words(path: Path) -> list[str]:
    """One line per pair detect kept, from signals.json: the two groups' classes and what their images share."""
    sig = json.loads((path / "signals.json").read_text())
    groups = {g["id"]: g for g in sig["groups"]}
    cos = {(v["a"], v["b"]): v for v in sig.get("verifications", [])}
    out = []
    for p in sig["pairs"]:
        v = cos.get((p["a"], p["b"]), {})
        check = "" if not v else (f", not verified: {v['error']}" if v.get("error")
                                  else f", gradient cosine {float(v['grad_cosine']):+.2f} at step {v['step']}")
        out.append(f"{p['name']}: corr {p['corr']:+.2f}" + check
                   + "".join(f"\n      {side}: {groups[p[side]].get('explanation', '')}" for side in "ab"))
    return out


def summarise(path: Path) -> dict:
    """The numbers this script prints for one run."""
    import oppsig

    run = oppsig.open_run(path)
    m = run.metrics
    steps = np.asarray(m["step"])
    have = np.isfinite(np.asarray(m["sharpness"], dtype=float))
    s, sh = steps[have], np.asarray(m["sharpness"], dtype=float)[have]
    err = np.asarray(m["err/sharpness"], dtype=float)[have]
    conv = np.asarray(m["converged/sharpness"], dtype=float)[have]
    thr = np.asarray(m["threshold"], dtype=float)[have]
    every = int(np.median(np.diff(s))) if len(s) > 1 else 1
    total, longest, first = edge_steps(s, sh, err, conv, thr, every)
    cert = np.where(conv > 0, sh, -np.inf)
    i = int(np.argmax(cert))
    names, ls, rows = shares(run)
    pick = {"start": 0, "middle": rows.shape[1] // 2, "end": rows.shape[1] - 1}
    sig = json.loads((path / "signals.json").read_text()) if (path / "signals.json").exists() else {}
    loss = np.asarray(m["loss"], dtype=float)
    return {"path": path, "s": s, "sharp": sh, "err": err, "conv": conv, "thr": thr, "every": every,
            "edge_total": total, "edge_longest": longest, "edge_first": first, "n_solves": len(s),
            "n_converged": int(conv.sum()), "peak": (int(s[i]), float(sh[i]), float(err[i]), float(thr[i])),
            "names": names, "share_steps": ls, "shares": rows,
            "thirds": {k: (int(ls[j]), thirds(rows[:, j])) for k, j in pick.items()},
            "loss": (float(loss[0]), float(loss[-1])), "steps": int(steps[-1]) + 1,
            "spikes": len(sig.get("spikes", [])), "pairs": pairs_in_words(path) if sig else ["(not detected)"]}


def figure(net: str, r: dict, out: Path) -> Path:
    """Sharpness against 2/lr (with the 10% band) above the layer shares of the top eigenvector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(r["names"])
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 3.4 + max(2.0, 0.09 * n)), layout="constrained",
                                 height_ratios=[3.4, max(2.0, 0.09 * n)], sharex=True)
    s, sh, thr, ok = r["s"], r["sharp"], r["thr"], r["conv"] > 0
    ax.fill_between(s, (1 - BAND) * thr, (1 + BAND) * thr, color="tab:red", alpha=0.12, label="2/lr +- 10%")
    ax.plot(s, thr, "--", color="tab:red", lw=1.2, label="2/lr")
    ax.errorbar(s[ok], sh[ok], yerr=r["err"][ok], fmt="o-", ms=3, lw=1.2, color="k", label="certified sharpness")
    if (~ok).any():
        ax.plot(s[~ok], sh[~ok], "x", color="red", ms=7, label="not converged")
    ax.set_ylabel("top Hessian eigenvalue")
    ax.set_title(f"{net}: full-batch GD, 2,000 CIFAR-10 images; {r['edge_longest']} steps within 10% of 2/lr")
    ax.legend(fontsize=7, loc="lower right")
    ls, rows = r["share_steps"], r["shares"]
    edges = np.concatenate([ls, [ls[-1] + (ls[-1] - ls[-2] if len(ls) > 1 else 1)]])
    im = bx.pcolormesh(edges, np.arange(n + 1) - 0.5, rows, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=bx, label="share", fraction=0.03)
    bx.set_yticks(range(n), r["names"], fontsize=5 if n > 20 else 7)
    bx.invert_yaxis()
    bx.set_xlabel("step")
    bx.set_ylabel("layer (input at top)")
    path = out / f"net-{net}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(net: str, r: dict) -> None:
    st, sh, err, thr = r["peak"]
    print(f"== {net}: {r['path']}  ({r['steps']} steps, loss {r['loss'][0]:.3f} -> {r['loss'][1]:.3f}, "
          f"{r['spikes']} loss spikes)")
    print(f"  sharpness solves: {r['n_solves']} every {r['every']} steps, {r['n_converged']} converged")
    print(f"  within 10% of 2/lr: {r['edge_total']} steps in all, longest unbroken {r['edge_longest']} steps "
          f"(from step {r['edge_first']})")
    print(f"  peak certified sharpness {sh:.3f} +- {err:.2g} at step {st} (2/lr = {thr:.3f}, ratio {sh / thr:.2f})")
    print("  pairs found:" + ("" if r["pairs"] else " none"))
    for p in r["pairs"]:
        print("    " + p)
    print("  layer shares of the top eigenvector (first third / middle third / last third / last layer):")
    for when, (step, t) in r["thirds"].items():
        print(f"    {when:6s} step {step:4d}: " + " / ".join(f"{v:.3f}" for v in t.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="parent folder of the runs (default runs)")
    ap.add_argument("--nets", default=",".join(NETS), help="which runs (default all four)")
    ap.add_argument("--train", action="store_true", help="train a run that is missing (default: refuse)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="where the figures go (default docs)")
    a = ap.parse_args()
    for net in a.nets.split(","):
        r = summarise(ensure(a.runs, net, a.train))
        report(net, r)
        print(f"  figure: {figure(net, r, a.out)}")


if __name__ == "__main__":
    main()
