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
    assert "pair 0 (group" in html and "images of group" in html
    # where the time went, stage by stage, and each stage announced
    assert {"training", "detection", "report", "total"} <= set(res.timings)
    assert sum(v for k, v in res.timings.items() if k != "total") <= res.timings["total"] + 1e-6
    assert [ln[:5] for ln in lines if ln.startswith("[")] == ["[1/3]", "[2/3]", "[3/3]"]


def test_an_explicit_data_dir_without_cifar_is_an_error(tmp_path, monkeypatch):
    import pytest

    from oppsig.errors import DataNotFoundError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    trained = []
    monkeypatch.setattr("oppsig.training.train", lambda *a, **k: trained.append(1))
    with pytest.raises(DataNotFoundError, match=r"--data-dir .*nonexistent.*cifar-10-python.tar.gz"):
        run_demo(data_dir=str(tmp_path / "nonexistent"), out_dir=str(tmp_path / "runs"), progress=False,
                 log=lambda m: None)
    assert not trained


def test_too_few_steps_fail_before_training(tmp_path, monkeypatch):
    import pytest

    from oppsig.errors import ConfigError

    trained = []
    monkeypatch.setattr("oppsig.training.train", lambda *a, **k: trained.append(1))
    with pytest.raises(ConfigError, match="--steps 1 is too few"):
        run_demo(out_dir=str(tmp_path / "runs"), steps=1, progress=False, log=lambda m: None)
    assert not trained
