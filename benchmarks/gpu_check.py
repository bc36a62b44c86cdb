"""Device check for a machine with a GPU, in at most ``--budget`` seconds (280 by default: a second try fits in
15 minutes of GPU time), with every figure written to one JSON file.

It runs, in this order, each part skipped with a note once the budget is spent:

1. the CUDA tests (``pytest -m cuda``: curvature products against float64 dense references, training on the
   device against the CPU);
2. ResNet-18 at full width (``model.width=64``, BatchNorm) on 10,000 images under full-batch GD, every example's
   loss recorded at every step, sharpness and the layer shares of its eigenvector every ``--every`` steps:
   seconds per step, Hessian-vector products and seconds per measurement, peak memory;
3. the same network under mini-batch SGD (batch 128, momentum 0.9, ``record.mode=batch``): seconds per step and
   the record's share of it;
4. the sharpness benchmark (``bench_sharpness.py``: products cached and in batched blocks, against power
   iteration and ``eigsh``), on CIFAR-10 only.

The data are the first 10,000 CIFAR-10 images when found (``$OPPSIG_DATA``), else synthetic images (the JSON says
which). ``--dry-run`` runs the same code paths on the CPU at tiny sizes (ResNet-18 at width 4 on 64 synthetic
images, a few steps), as the test suite does.

Usage:
    OPPSIG_DATA=/path/to/data python benchmarks/gpu_check.py --out gpu_check.json     # on the GPU machine
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.json               # anywhere, ~15 s
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import batch_record_time, data_overrides  # noqa: E402


class Budget:
    """Seconds left of the whole check; a part that would start after it is spent is skipped."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def _finite(a) -> list[float]:
    a = np.asarray(a, dtype=float)
    return [round(float(v), 4) for v in a[np.isfinite(a)]]


def _train(cfg_overrides: list[str]) -> tuple[dict, float, float]:
    """Train ResNet-18 with ``cfg_overrides``; (metrics, wall seconds, peak GiB on the device)."""
    from oppsig.config import load_config
    from oppsig.store import open_run
    from oppsig.training import train

    cfg = load_config(str(ROOT / "configs" / "resnet18-gd-cifar10k.yaml"), cfg_overrides)
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = train(cfg, overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if cfg.device.startswith("cuda") else float("nan")
    return open_run(res.run_dir).metrics, wall, peak


def full_batch_gd(a, common: list[str]) -> dict:
    """ResNet-18 under full-batch GD: step time, sharpness and its cost, layer shares."""
    m, wall, peak = _train(common + ["name=gpu-check-gd", f"train.steps={a.gd_steps}", f"curvature.every={a.every}",
                                     f"curvature.n={a.curv_n}", f"curvature.max_iter={a.max_iter}"])
    w = np.asarray(m["wall_time"], dtype=float)
    shares = {k.split("/", 1)[1]: float(np.asarray(m[k], dtype=float)[np.isfinite(m[k])][-1])
              for k in m if k.startswith("layer_share/")}
    top = [(k, round(v, 4)) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:5]]
    return {"steps": a.gd_steps, "wall_s": round(wall, 2),
            "s_per_step_incl_curvature": round(float((w[-1] - w[1]) / max(len(w) - 2, 1)), 4),
            "sharpness": _finite(m["sharpness"]), "hvps_per_measurement": _finite(m["hvps"]),
            "curv_seconds": _finite(m["curv_time"]), "layer_share_sum": round(sum(shares.values()), 6),
            "top_layer_shares_last": dict(top), "final_loss": _finite(m["loss"])[-1],
            "peak_mem_GiB": round(peak, 2)}


def minibatch_sgd(a, common: list[str]) -> dict:
    """ResNet-18 under mini-batch SGD with the per-batch record, and the record's share of the step time."""
    with batch_record_time() as spent:
        m, wall, peak = _train(common + ["name=gpu-check-sgd", "optim.name=sgd", "optim.lr=0.05",
                                         "optim.momentum=0.9", f"train.batch_size={a.batch}",
                                         f"train.steps={a.sgd_steps}", "curvature.every=0", "record.mode=batch"])
    return {"steps": a.sgd_steps, "batch_size": a.batch, "wall_s": round(wall, 2),
            "s_per_step": round(wall / a.sgd_steps, 4), "record_share": round(spent[0] / wall, 4),
            "final_loss": _finite(m["loss"])[-1], "peak_mem_GiB": round(peak, 2)}


def _run(cmd: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1))
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = "timeout", str(e.stdout or "")
    return {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
            "tail": out.strip().splitlines()[-25:]}


def cuda_tests(a, budget: Budget) -> dict:
    files = ["tests/curvature/test_cuda.py", "tests/training/test_cuda.py"]
    return _run([sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", "-rs"],
                min(a.test_timeout, budget.left()))


def sharpness_bench(a, budget: Budget) -> dict:
    cmd = [sys.executable, "benchmarks/bench_sharpness.py", "--device", a.device, "--loss", "ce", "--lr", "0.1"]
    cmd += (["--n", "64", "--steps", "2", "--more-steps", "1", "--seeds", "1", "--reps", "1", "--max-iter", "60"]
            if a.dry_run else ["--n", "5000", "--steps", "20", "--seeds", "3"])
    return _run(cmd, budget.left())


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check.json", help="the JSON file of all figures")
    ap.add_argument("--dry-run", action="store_true", help="the same code paths on the CPU at tiny sizes")
    ap.add_argument("--budget", type=float, default=280.0, help="seconds for the whole check")
    ap.add_argument("--gd-steps", type=int, default=None, help="full-batch GD steps (20; dry run 3)")
    ap.add_argument("--sgd-steps", type=int, default=None, help="mini-batch SGD steps (160; dry run 4)")
    a = ap.parse_args(argv)
    dry = a.dry_run
    a.device = "cpu" if dry else "cuda"
    a.n, a.width, a.batch = (64, 4, 16) if dry else (10_000, 64, 128)
    a.gd_steps = a.gd_steps or (3 if dry else 20)
    a.sgd_steps = a.sgd_steps or (4 if dry else 160)
    a.every, a.curv_n, a.max_iter = (2, 32, 8) if dry else (10, 2500, 40)
    a.test_timeout = 60.0 if dry else 120.0
    return a


def main(argv=None) -> int:
    a = parse(argv)
    if not a.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); pass --dry-run to check on the CPU")
        return 2
    budget = Budget(a.budget)
    result: dict = {"dry_run": a.dry_run, "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
                    "torch": torch.__version__, "python": platform.python_version(), "budget_s": a.budget}
    data, what = (["data.name=synthetic", f"data.n={a.n}"], f"synthetic ({a.n} images)") if a.dry_run \
        else data_overrides(a.n)
    result["data"] = what
    with tempfile.TemporaryDirectory() as tmp:
        common = data + [f"out_dir={tmp}", f"device={a.device}", f"model.width={a.width}", "data.test_n=0",
                         "train.checkpoint_every=0"] + (["train.physical_batch_size=32"] if a.dry_run else [])
        parts = [("cuda_tests", lambda: cuda_tests(a, budget)), ("resnet18_gd", lambda: full_batch_gd(a, common)),
                 ("resnet18_sgd", lambda: minibatch_sgd(a, common)),
                 ("sharpness_bench", lambda: sharpness_bench(a, budget))]
        for name, part in parts:
            if budget.left() <= 5:
                result[name] = {"skipped": f"time budget of {a.budget:.0f} s spent"}
                continue
            t0 = time.perf_counter()
            result[name] = part()
            result[name]["part_s"] = round(time.perf_counter() - t0, 1)
            print(name, json.dumps(result[name])[:400], flush=True)
    result["total_s"] = round(a.budget - budget.left(), 1)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out} ({result['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
