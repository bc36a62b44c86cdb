"""Lightning, as a user runs it: their own model and data (no oppsig config), SGD in mini-batches a quarter of the
data set, the callback's default record (the sparse batch record plus a probe planned within 10% of training
time); then ``oppsig detect`` from the record alone and with the data, and ``oppsig report``."""

import contextlib
import io
import shutil

import pytest
import torch

L = pytest.importorskip("lightning.pytorch", reason='needs the lightning extra: pip install -e ".[lightning]"')

from oppsig import detect_run, open_run  # noqa: E402
from oppsig.cli.main import main  # noqa: E402
from oppsig.data import ArrayDataset  # noqa: E402
from oppsig.integrations.lightning import OppsigCallback  # noqa: E402
from oppsig.report.summary import load_signals  # noqa: E402

from ._planted import (BATCH, CLASSES, LR, STEPS, check_record, mlp, planted_pairs_found,  # noqa: E402
                       planted_vectors, record_alone_pairs)
from .test_lightning import Net  # noqa: E402  (a plain module returning its per-example losses)

NO_INPUTS = "explanations in words and image grids need the examples' inputs"


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    x, y, pairs = planted_vectors()
    ids = torch.arange(len(x))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, x, y), batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    run_dir = tmp_path_factory.mktemp("lightning") / "mine"
    cb = OppsigCallback(run_dir, num_examples=len(x), labels=y.numpy(), classes=list(CLASSES), live=False)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=[cb]).fit(Net(mlp(), lr=LR), loader)
    return run_dir, err.getvalue(), (x, y, ids, pairs)


def _copy(planted_run, tmp_path):
    dst = tmp_path / "mine"
    shutil.copytree(planted_run[0], dst)
    return dst


def test_the_default_record_of_a_minibatch_run(planted_run):
    run_dir, printed, _ = planted_run
    check_record(open_run(run_dir), printed)


def test_detect_and_report_from_the_record_alone(planted_run, tmp_path, capsys):
    run_dir = _copy(planted_run, tmp_path)
    pairs = planted_run[2][3]
    assert main(["detect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_INPUTS) == 1 and f"detect_run('{run_dir}', dataset=ArrayDataset(" in out
    assert "image grids: none (the run's inputs were not given)" in out
    sig = load_signals(run_dir)
    assert sig.dataset["inputs"] is False and sig.n_examples == len(planted_run[2][0])
    found = planted_pairs_found(sig, pairs)
    whole = [f for f in found if min(f["f1"]) >= 0.9]  # a planted pair's two groups, found from the losses alone
    assert whole, found
    named = {g.id: g.class_counts for g in sig.groups}  # and named by the classes the run stored
    k = found.index(whole[0])
    assert [set(named[g]) for g in whole[0]["groups"]] == [{CLASSES[2 * k]}, {CLASSES[2 * k + 1]}]
    assert main(["report", str(run_dir)]) == 0
    html = (run_dir / "report.html").read_text()
    assert "images left out: the run has no oppsig config naming its inputs" in html


def test_detect_with_the_data_finds_a_planted_pair(planted_run, tmp_path):
    run_dir = _copy(planted_run, tmp_path)
    x, y, ids, pairs = planted_run[2]
    data = ArrayDataset(x=x, y=y, index=ids, classes=CLASSES)
    res = detect_run(run_dir, dataset=data, verify=0, grids=False)
    assert res.dataset["inputs"] is True
    found = planted_pairs_found(res, pairs)
    assert any(f["found"] for f in found), found


def test_detect_from_the_record_alone_reports_a_planted_pair(planted_run, tmp_path):
    found = record_alone_pairs(planted_run[0], tmp_path, planted_run[2][3])
    assert any(f["found"] for f in found), found
