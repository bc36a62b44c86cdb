"""benchmarks/gpu_check.py --dry-run: the GPU check's code paths on the CPU at tiny sizes, one JSON of figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OPPSIG_DATA": str(tmp_path / "no-data"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(out.read_text())
    assert r["dry_run"] and r["device"] == "cpu" and r["data"].startswith("synthetic")
    assert r["cuda_tests"]["rc"] == 0 and "skipped" in " ".join(r["cuda_tests"]["tail"])
    gd = r["resnet18_gd"]
    assert gd["steps"] == 3 and len(gd["sharpness"]) == 2 and all(s > 0 for s in gd["sharpness"])
    assert abs(gd["layer_share_sum"] - 1) < 1e-6 and len(gd["top_layer_shares_last"]) == 5
    sgd = r["resnet18_sgd"]
    assert sgd["steps"] == 4 and sgd["s_per_step"] > 0 and 0 < sgd["record_share"] < 1
    assert r["sharpness_bench"]["rc"] == 0
    assert r["total_s"] <= r["budget_s"]
