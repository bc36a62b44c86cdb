import json

import numpy as np
import pytest

from oppsig.cli.main import main
from oppsig.config import load_config
from oppsig.experiments.sharpness import run_curvature
from oppsig.errors import OppsigError, StoreError
from oppsig.store import open_run
from oppsig.training import train


@pytest.fixture(scope="module")
def gd_run(tmp_path_factory):
    cfg = load_config(None, [
        "data.name=synthetic", "data.n=128", "model.widths=[16]", "train.steps=12", "train.physical_batch_size=50",
        "optim.lr=0.05", f"out_dir={tmp_path_factory.mktemp('runs')}", "name=tiny", "train.checkpoint_every=5",
        "optim.name=gd", "train.loss=mse", "curvature.every=1", "curvature.top_k=2", "curvature.tol=1e-9",
        "curvature.criterion=residual", "curvature.max_iter=120"])
    return train(cfg, progress=False).run_dir


def test_replayed_sharpness_equals_the_tracked_one(gd_run):
    res = run_curvature(gd_run, [7, 0, 3, 12], k=2, tol=1e-9, layerwise=True)
    assert [r.step for r in res] == [0, 3, 7, 12]  # sorted, replayed from checkpoints 0, 0 and 5, 10
    m = open_run(gd_run).metrics
    steps = m["step"].tolist()
    for r in res[:3]:
        i = steps.index(r.step)
        assert r.eigenvalues == pytest.approx([m["sharpness"][i], m["sharpness_2"][i]], rel=1e-6)
        assert r.threshold == pytest.approx(2 / 0.05) and r.error_bound <= 1e-9 and r.hvps > 0
    assert np.isfinite(res[3].sharpness) and res[3].sharpness > 0
    assert set(res[0].layers) == {"net.1", "net.3"} and max(res[0].layers.values()) <= res[0].sharpness * (1 + 1e-9)
    assert res[1].to_dict()["eigenvalues"] == list(res[1].eigenvalues)


def test_errors(gd_run):
    with pytest.raises(StoreError, match="outside the run"):
        run_curvature(gd_run, [13])
    with pytest.raises(OppsigError, match="k >= 1"):
        run_curvature(gd_run, [1], k=0)


def test_cli(gd_run, tmp_path, capsys):
    out = tmp_path / "sharp.json"
    assert main(["sharpness", str(gd_run), "--steps", "5,10", "--out", str(out), "--layerwise"]) == 0
    text = capsys.readouterr().out
    assert "sharpness" in text and "threshold" in text and "layers: net.1" in text
    d = json.loads(out.read_text())
    assert [s["step"] for s in d["steps"]] == [5, 10] and d["steps"][0]["threshold"] == pytest.approx(40.0)
    assert main(["sharpness", str(gd_run), "--steps", "five"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_cli_prints_each_step_once_with_labelled_columns(gd_run, capsys):
    assert main(["sharpness", str(gd_run), "--steps", "5,10", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split()
    assert head[:4] == ["step", "sharpness", "eig", "2"]  # the second eigenvalue has a column name
    rows = [ln.split() for ln in lines[1:] if ln.split() and ln.split()[0].isdigit()]
    assert [r[0] for r in rows] == ["5", "10"]  # each step once
    assert all(len(r) == len(head) - 1 for r in rows)  # 'eig 2' is one column under two words
    assert not any(ln.lstrip().startswith("step 5") for ln in lines)
