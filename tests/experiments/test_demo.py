"""The demo end to end on the embedded synthetic default (shortened)."""

import pytest

from oppsig.experiments.demo import run_demo


@pytest.mark.slow
def test_demo_on_synthetic_data(tmp_path, monkeypatch):
    monkeypatch.delenv("OPPSIG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no CIFAR-10 anywhere
    lines = []
    res = run_demo(out_dir=str(tmp_path / "runs"), steps=150, n=2000, progress=False, log=lines.append)
    assert "synthetic" in res.data_note and "CIFAR-10 not found" in lines[0]
    assert (res.run_dir / "signals.json").exists() and res.report.exists()
    assert res.n_pairs >= 1  # a planted pair is found within 150 steps
    html = res.report.read_text()
    assert "Pair 1" in html and "images of group" in html
