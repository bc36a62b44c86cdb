"""benchmarks/bench_overhead.py at tiny size on synthetic data: every variant timed, finite ratios, one JSON."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["plain", "off", "record", "probe", "sharpness", "live"]


def test_bench_overhead_writes_every_variant(tmp_path):
    out = tmp_path / "overhead.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "benchmarks/bench_overhead.py", "--family", "fc-tanh-gd", "--synthetic",
                        "--n", "64", "--steps", "5", "--rounds", "1", "--threads", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out.read_text())
    assert r["family"] == "fc-tanh-gd" and r["full_batch"] and r["n"] == 64 and r["data"].startswith("synthetic")
    assert list(r["variants"]) == VARIANTS
    for v in VARIANTS:
        x = r["variants"][v]
        assert len(x["rounds"]) == 1 and x["s_per_step"] > 0 and math.isfinite(x["ratio"]) and x["ratio"] > 0, v
    assert r["variants"]["plain"]["ratio"] == 1.0
    # full-batch GD has no probe; its sharpness interval (25) and record come from the config
    assert [r["variants"][v]["applies"] for v in VARIANTS] == [True, True, True, False, True, True]
    assert r["variants"]["probe"]["share"] == 0.0
    shares = sum(r["variants"][v]["share"] for v in VARIANTS[1:])
    assert math.isclose(1 + shares, r["total"]["ratio"], rel_tol=1e-9)
    assert r["total"]["budget"] == 1.10 and r["total"]["met"] == (r["total"]["ratio"] <= 1.10)
    assert ("met" if r["total"]["met"] else "missed") in p.stdout.splitlines()[-1]
