"""Each command through the CLI (``oppsig.cli.main.main``, in-process) on tiny synthetic runs.

The commands that read a run share one recorded run (``recorded_run`` in tests/conftest.py); those that
write into it work on a copy. Assertions are on files, shapes, data and exit codes, not on the wording of
the printed text or the report.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import re
import tarfile

import numpy as np
import pytest

from oppsig.cli.main import main
from oppsig.report.summary import load_signals
from oppsig.store import open_run
from tests.conftest import ROOT, TINY_RUN
from tests.data.test_cifar import write_fake_cifar
from tests.report.test_report import add_fake_signals

CONFIG = str(ROOT / "configs" / "synthetic-gd.yaml")


def one_line_error(capsys, rc: int, code: int = 2) -> str:
    """The single ``error: ...`` line a failed command printed (and nothing else on stderr)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def usage_error(capsys, argv) -> str:
    """argparse's refusal: exit status 2 and a usage message naming the problem."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def embedded_pngs(html: str) -> list[bytes]:
    """The PNG images embedded in a page, decoded."""
    return [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


# ----------------------------------------------------------------------------- detect


def test_detect_writes_signals_of_the_run(run_copy, capsys):
    assert main(["detect", str(run_copy), "--k", "5", "--verify", "0"]) == 0
    out = capsys.readouterr().out
    assert str(run_copy / "signals.json") in out
    run, sig = open_run(run_copy), load_signals(run_copy)
    L = np.asarray(run.losses, dtype=np.float64)
    assert (sig.n_rows, sig.n_examples) == L.shape == (24, 128)
    assert np.array_equal(sig.steps, run.steps)
    assert np.allclose(sig.total_loss, L.mean(1), rtol=1e-5)
    assert sig.config["k"] == 5  # --k reached the detection
    for g in sig.groups:  # groups hold column positions of the run; one image grid each
        assert 0 <= min(g.members) and max(g.members) < 128
        assert (run_copy / "signals" / f"group_{g.id:02d}.png").read_bytes()[:4] == b"\x89PNG"


def test_detect_no_grids_and_errors(run_copy, tmp_path, capsys):
    assert main(["detect", str(run_copy), "--verify", "0", "--no-grids"]) == 0
    assert (run_copy / "signals.json").exists() and not (run_copy / "signals").exists()
    capsys.readouterr()
    msg = one_line_error(capsys, main(["detect", str(tmp_path / "nothing")]))
    assert "nothing" in msg
    assert "invalid int" in usage_error(capsys, ["detect", str(run_copy), "--k", "many"])


# ----------------------------------------------------------------------------- report


def test_report_of_one_run_and_of_two(recorded_run, run_copy, tmp_path, capsys):
    add_fake_signals(run_copy)  # a pair of groups (rows 0-9 vs 10-19) as detection would write it
    assert main(["report", str(run_copy)]) == 0
    path = run_copy / "report.html"
    assert f"report: {path}" in capsys.readouterr().out
    pngs = embedded_pngs(path.read_text())
    # loss, sharpness, heat map, and for the pair its group losses and each group's images
    assert len(pngs) >= 7 and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    out = tmp_path / "both.html"  # the shared run has no signals.json: its section has fewer figures
    assert main(["report", str(run_copy), str(recorded_run), "--out", str(out)]) == 0
    html = out.read_text()
    assert str(run_copy) in html and str(recorded_run) in html
    assert len(embedded_pngs(html)) >= len(pngs) + 3  # + the shared run's loss and sharpness, + comparison figures
    assert not (recorded_run / "report.html").exists()  # --out: nothing written into the runs
    capsys.readouterr()
    msg = one_line_error(capsys, main(["report", str(tmp_path / "nothing")]))
    assert "nothing" in msg


# ----------------------------------------------------------------------------- export


def test_export_table_matches_the_recorded_arrays(recorded_run, tmp_path, capsys):
    out = tmp_path / "ex.csv"
    assert main(["export", str(recorded_run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    run = open_run(recorded_run)
    L = np.asarray(run.losses, dtype=np.float64)
    C = np.asarray(run.correct, dtype=bool)
    assert len(rows) == 128
    col = lambda k: np.array([float(r[k]) for r in rows])  # noqa: E731
    assert np.array_equal(col("id").astype(int), np.asarray(run.index))
    six_digits = dict(rtol=1e-5, atol=1e-12)  # the CSV holds 6 significant digits
    assert np.allclose(col("mean_loss"), L.mean(0), **six_digits)
    assert np.allclose(col("loss_std"), L.std(0), rtol=1e-4, atol=1e-7)  # summed in blocks: a little looser
    assert np.allclose(col("final_loss"), L[-1], **six_digits)
    assert np.allclose(col("accuracy"), C.mean(0))
    assert np.array_equal(col("forgetting").astype(int), (C[:-1] & ~C[1:]).sum(0))


def test_export_default_path_and_errors(run_copy, tmp_path, capsys):
    assert main(["export", str(run_copy)]) == 0
    assert (run_copy / "examples.csv").read_text().count("\n") == 129  # header + one line per example
    capsys.readouterr()
    msg = one_line_error(capsys, main(["export", str(tmp_path / "nothing")]))
    assert "nothing" in msg  # Parquet, with and without pyarrow: test_export_parquet.py


# ----------------------------------------------------------------------------- compare


def test_compare_branches_from_one_state(tmp_path, capsys):
    argv = ["compare", CONFIG, "--optimizers", "gd,adam", "--branch-at", "4", "--steps", "12", *TINY_RUN,
            "--data.n=64", "--curvature.every=0", f"--out_dir={tmp_path}", "--name=cmp"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    base, gd, adam = (open_run(tmp_path / f"cmp-{b}") for b in ("base", "gd", "adam"))
    assert base.steps.tolist() == list(range(4))
    assert gd.steps.tolist() == adam.steps.tolist() == list(range(4, 12))
    assert gd.losses.shape == (8, 64)
    assert (gd.config.optim.name, adam.config.optim.name) == ("gd", "adam")
    assert (tmp_path / "cmp-gd" / "signals.json").exists()  # each branch was searched
    # the printed table: a header, then one row per branch
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["branch", "optimiser"])
    assert [ln.split()[0] for ln in lines[head + 1 : head + 3]] == ["gd", "adam"]
    assert embedded_pngs((tmp_path / "cmp-comparison.html").read_text())


def test_compare_refuses_bad_input(tmp_path, capsys):
    common = [CONFIG, *TINY_RUN, f"--out_dir={tmp_path}", "--train.steps=10"]
    msg = one_line_error(capsys, main(["compare", *common, "--optimizers", "gd,lion", "--branch-at", "4"]))
    assert "lion" in msg and "adam" in msg  # the valid names are listed
    msg = one_line_error(capsys, main(["compare", *common, "--branch-at", "10"]))
    assert "branch-at" in msg and "9" in msg
    assert "--branch-at" in usage_error(capsys, ["compare", *common])
    assert list(tmp_path.iterdir()) == []  # nothing trained


# ----------------------------------------------------------------------------- intervene


def test_intervene_branches_untouched_changed_and_control(run_copy, capsys):
    add_fake_signals(run_copy)  # the pair: rows 0-9 vs rows 10-19
    argv = ["intervene", str(run_copy), "--mode", "remove", "--from-step", "6", "--steps", "12", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    runs = run_copy.parent
    orig = open_run(run_copy)
    untouched, removed, control = (open_run(runs / f"tiny-{b}")
                                   for b in ("untouched", "remove-groups", "remove-control"))
    for r in (untouched, removed, control):
        assert r.steps.tolist() == list(range(6, 12))
    # the untouched branch continues the recorded run exactly
    assert np.allclose(np.asarray(untouched.losses), np.asarray(orig.losses)[6:12], rtol=1e-5, atol=1e-7)
    # the groups (ids of rows 0-19) are gone; the control removed as many other examples
    ids = set(np.asarray(orig.index)[:20].tolist())
    assert len(removed.index) == len(control.index) == 108
    assert not ids & set(removed.index.tolist()) and ids <= set(control.index.tolist())
    for label in ("untouched", "remove-groups", "remove-control"):
        assert any(ln.split()[:1] == [label] for ln in out.splitlines())
    assert embedded_pngs((runs / "tiny-intervention.html").read_text())


def test_intervene_refuses_bad_input(run_copy, capsys):
    msg = one_line_error(capsys, main(["intervene", str(run_copy), "--no-progress"]))
    assert "signals.json" in msg and "oppsig detect" in msg  # no detection yet: says what to run
    add_fake_signals(run_copy)
    numbers = lambda msg: set(re.findall(r"\d+", msg))  # noqa: E731
    msg = one_line_error(capsys, main(["intervene", str(run_copy), "--group", "7", "--no-progress"]))
    assert {"7", "0", "1"} <= numbers(msg)  # the bad group and the valid ones
    msg = one_line_error(capsys, main(["intervene", str(run_copy), "--from-step", "5", "--no-progress"]))
    assert {"5", "0", "6", "12", "18"} <= numbers(msg)  # the bad step and the kept checkpoints
    assert "invalid choice" in usage_error(capsys, ["intervene", str(run_copy), "--mode", "delete"])
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["tiny"]  # nothing branched


# ----------------------------------------------------------------------------- data


def _fake_archive(tmp_path) -> tuple[str, str, np.ndarray]:
    """A cifar-10-python.tar.gz with one small training batch: (file URL, its MD5, the images)."""
    root = write_fake_cifar(tmp_path / "src", n=30)
    arc = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from oppsig.data.cifar import load_cifar10_arrays

    x, _, _ = load_cifar10_arrays(root)
    return arc.as_uri(), hashlib.md5(arc.read_bytes()).hexdigest(), x


def test_data_download_fetches_checks_and_unpacks(tmp_path, monkeypatch, capsys):
    import oppsig.data.cifar as cifar

    url, md5, x = _fake_archive(tmp_path)
    real = cifar.download_cifar10
    monkeypatch.setattr(cifar, "download_cifar10", functools.partial(real, url=url, md5=md5))
    dest = tmp_path / "cache"
    assert main(["data", "download", "cifar10", "--dest", str(dest)]) == 0
    assert str(dest / "cifar-10-batches-py") in capsys.readouterr().out
    got, _, _ = cifar.load_cifar10_arrays(dest)
    assert np.array_equal(got, x)
    # offline (the URL cannot be read): one line, nothing left half-written
    monkeypatch.setattr(cifar, "download_cifar10", functools.partial(real, url=url + ".missing", md5=md5))
    msg = one_line_error(capsys, main(["data", "download", "cifar10", "--dest", str(tmp_path / "c2")]))
    assert url + ".missing" in msg and not (tmp_path / "c2" / "cifar-10-python.tar.gz").exists()


def test_data_download_refuses_a_corrupt_archive(tmp_path, capsys):
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "cifar-10-python.tar.gz").write_bytes(b"not the archive")  # checked against the official MD5
    msg = one_line_error(capsys, main(["data", "download", "cifar10", "--dest", str(dest)]))
    assert "MD5" in msg and not (dest / "cifar-10-python.tar.gz").exists()
    assert "invalid choice" in usage_error(capsys, ["data", "download", "mnist"])


# ----------------------------------------------------------------------------- demo


def test_demo_runs_the_pipeline_on_synthetic_data(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPPSIG_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no CIFAR-10 anywhere: the synthetic data
    assert main(["demo", "--steps", "12", "--n", "100", "--out-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "demo-synthetic"
    run = open_run(run_dir)
    assert run.losses.shape == (12, 100) and run.config.data.name == "synthetic"
    assert run.config.model.widths == (200, 200) and run.config.optim.name == "gd"  # the demo's network
    sig = load_signals(run_dir)
    assert sig.n_rows == 12 and sig.n_examples == 100
    assert f"report: {run_dir / 'report.html'}" in out
    assert len(embedded_pngs((run_dir / "report.html").read_text())) >= 2
    assert "invalid int" in usage_error(capsys, ["demo", "--steps", "many"])
