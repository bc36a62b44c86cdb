"""Every command that reads a run's data checks them against the run's data fingerprint (meta.json).

Other data (here: the run's config changed to plant a weaker signal, or a CIFAR-10 folder with one pixel
changed) are a one-line error naming both digests; ``--allow-other-data`` goes on and every output says so.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from oppsig.cli.main import main
from tests.cli.test_commands import one_line_error
from tests.conftest import ROOT, TINY_RUN
from tests.data.test_cifar import write_fake_cifar
from tests.report.test_report import add_fake_signals


def own_digest(run) -> str:
    """The digest of the training set in the run's meta.json ("" when it has none)."""
    meta = json.loads((run / "meta.json").read_text())
    return ((meta.get("fingerprint") or {}).get("train") or {}).get("sha256", "")


@pytest.fixture
def other(run_copy):
    """``(run, its own digest)``: a run whose config now rebuilds other images (a weaker planted signal)."""
    cfg = run_copy / "config.yaml"
    assert "magnitude: 3.0" in cfg.read_text()
    cfg.write_text(cfg.read_text().replace("magnitude: 3.0", "magnitude: 2.5"))
    return run_copy, own_digest(run_copy)


def digests(msg: str, own: str) -> str:
    """The digest of the other data in a one-line error that names both (12 hex digits each) and the way out."""
    named = set(re.findall(r"\b[0-9a-f]{12}\b", msg))
    assert own and own[:12] in named and len(named) == 2 and "--allow-other-data" in msg, msg
    return (named - {own[:12]}).pop()


def test_detect_refuses_other_data_and_flags_them_when_allowed(other, capsys):
    run, own = other
    found = digests(one_line_error(capsys, main(["detect", str(run), "--verify", "0", "--no-grids"])), own)
    assert not (run / "signals.json").exists()
    assert main(["detect", str(run), "--verify", "0", "--no-grids", "--allow-other-data"]) == 0
    assert "OTHER DATA" in capsys.readouterr().out
    flag = json.loads((run / "signals.json").read_text())["dataset"]["data_mismatch"]
    assert flag["expected"] == own and flag["found"].startswith(found)


def test_report_and_export_refuse_other_data_and_flag_them_when_allowed(other, capsys):
    run, own = other
    add_fake_signals(run)
    found = digests(one_line_error(capsys, main(["report", str(run)])), own)
    assert not (run / "report.html").exists()
    assert main(["report", str(run), "--allow-other-data"]) == 0
    html = (run / "report.html").read_text()
    assert "class='otherdata'" in html and found[:12] in html
    assert digests(one_line_error(capsys, main(["export", str(run)])), own) == found
    assert not (run / "examples.csv").exists()
    assert main(["export", str(run), "--allow-other-data"]) == 0
    rows = list(csv.DictReader((run / "examples.csv").open()))
    assert len(rows) == 128 and all(found[:12] in r["other_data"] for r in rows)


def test_sharpness_and_intervene_refuse_other_data(other, tmp_path, capsys):
    run, own = other
    found = digests(one_line_error(capsys, main(["sharpness", str(run), "--steps", "6"])), own)
    out = tmp_path / "sharpness.json"
    assert main(["sharpness", str(run), "--steps", "6", "--allow-other-data", "--out", str(out)]) == 0
    assert "OTHER DATA" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["data_mismatch"]["found"].startswith(found) and res["steps"][0]["data_mismatch"]["expected"] == own
    add_fake_signals(run)
    msg = one_line_error(capsys, main(["intervene", str(run), "--from-step", "6", "--steps", "8", "--no-progress"]))
    assert digests(msg, own) == found
    assert sorted(p.name for p in run.parent.iterdir()) == ["tiny"]  # nothing branched


def test_the_run_own_data_pass_and_a_run_without_fingerprint_warns(run_copy, capsys):
    assert own_digest(run_copy)  # written at training
    assert main(["export", str(run_copy)]) == 0
    assert "other_data" not in (run_copy / "examples.csv").open().readline()
    assert "warning" not in capsys.readouterr().err
    meta = json.loads((run_copy / "meta.json").read_text())
    del meta["fingerprint"]  # a run written before fingerprints: read as before, with a warning
    (run_copy / "meta.json").write_text(json.dumps(meta))
    assert main(["export", str(run_copy)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "no data fingerprint" in err[0]


def test_a_cifar_folder_with_one_changed_pixel_is_other_data(tmp_path, monkeypatch, capsys):
    import pickle

    import numpy as np

    from oppsig.data import safe_load_pickle

    own_dir = write_fake_cifar(tmp_path / "a", n=40)
    monkeypatch.setenv("OPPSIG_DATA", str(own_dir))
    assert main(["train", str(ROOT / "configs" / "synthetic-gd.yaml"), *TINY_RUN, "--data.name=cifar10",
                 "--data.n=40", "--train.steps=4", f"--out_dir={tmp_path / 'runs'}", "--name=c"]) == 0
    run = tmp_path / "runs" / "c"
    capsys.readouterr()
    copy = tmp_path / "b"
    shutil.copytree(own_dir, copy)
    batch = copy / "cifar-10-batches-py" / "data_batch_1"
    obj = safe_load_pickle(batch)
    obj[b"data"][7, 100] = np.uint8((int(obj[b"data"][7, 100]) + 1) % 256)  # one pixel of one image
    batch.write_bytes(pickle.dumps(obj, protocol=3))
    monkeypatch.setenv("OPPSIG_DATA", str(copy))
    digests(one_line_error(capsys, main(["export", str(run)])), own_digest(run))
    monkeypatch.setenv("OPPSIG_DATA", str(own_dir))
    assert main(["export", str(run)]) == 0
