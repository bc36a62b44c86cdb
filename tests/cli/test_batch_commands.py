"""The sparse mini-batch record through the CLI: train with record.mode=both, detect and export either record."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from oppsig.cli.main import main
from oppsig.report.summary import load_signals
from oppsig.store import open_run
from tests.conftest import ROOT, TINY_RUN


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    argv = ["train", str(ROOT / "configs" / "synthetic-gd.yaml"), *TINY_RUN, "--curvature.every=0",
            "--optim.name=sgd", "--optim.momentum=0.9", "--train.batch_size=32", "--train.steps=40",
            "--record.mode=both", "--record.every=4", "--record.probe_n=128", f"--out_dir={out}", "--name=sgd"]
    assert main(argv) == 0
    return out / "sgd"


def test_detect_and_export_read_either_record(sgd_run, tmp_path, capsys):
    run = open_run(sgd_run)
    assert run.rows == 10 and run.batches.entries == 40 * 32
    assert main(["detect", str(sgd_run), "--source", "batch", "--verify", "0", "--no-grids",
                 "--max-memory-mb", "0.01", "--dask", "synchronous"]) == 0
    sig = load_signals(sgd_run)
    assert sig.dataset["record"] == {**sig.dataset["record"], "source": "batch", "steps_per_epoch": 4, "epochs": 10}
    assert sig.steps.tolist() == list(range(0, 40, 4)) and sig.n_examples == 128
    assert main(["detect", str(sgd_run), "--source", "dense", "--verify", "0", "--no-grids"]) == 0
    assert "record" not in load_signals(sgd_run).dataset
    capsys.readouterr()
    for source in ("batch", "dense"):
        out = tmp_path / f"{source}.csv"
        assert main(["export", str(sgd_run), "--source", source, "--out", str(out)]) == 0
        rows = list(csv.DictReader(open(out)))
        assert len(rows) == 128
    b = {int(r["id"]): float(r["mean_loss"]) for r in csv.DictReader(open(tmp_path / "batch.csv"))}
    step, col, loss, _ = run.batches.arrays()
    j = int(col[0])
    assert np.isclose(b[int(run.batches.index[j])], loss[col == j].mean(), rtol=1e-5)
