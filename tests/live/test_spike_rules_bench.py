"""benchmarks/spike_rules.py on two tiny synthetic streams: every rule scored, and the event matching."""

import json
import math
import os
import subprocess
import sys

from ..conftest import ROOT


def test_spike_rules_bench_scores_every_rule_on_two_tiny_streams(tmp_path):
    out = tmp_path / "rules.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "benchmarks/spike_rules.py", "--seeds", "1", "--steps", "300",
                        "--families", "spikes,step_lr", "--no-real", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "wall time" in p.stdout
    r = json.loads(out.read_text())
    assert list(r) == ["oppsig_live", "lightning", "skip_step_6sd", "foundry", "megatron", "zclip_loss",
                       "oppsig_offline"]
    for rule, by in r.items():
        assert set(by) == {"overall", "synthetic", "spikes", "step_lr"}, rule
        o = by["overall"]
        assert o["tp"] + o["fn"] == 7, rule  # 4 + 3 planted spikes
        assert math.isnan(o["recall"]) is False and 0 <= o["recall"] <= 1, rule
    assert r["oppsig_live"]["overall"]["tp"] >= 4


def test_matching_counts_one_event_per_spike():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from spike_rules import match
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # events: 10 (spike 1, delay 0), 12 (second inside spike 1: false), 30 (outside: false), 52 (spike 2)
    assert match([10, 12, 30, 52], [(10, 20), (50, 60), (80, 81)]) == (2, 2, 1, [0, 2])
