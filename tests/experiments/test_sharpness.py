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
        "optim.name=gd", "train.loss=mse", "curvature.every=1", "curvature.top_k=2", "curvature.tol=1e-4",
        "curvature.criterion=eigenvalue", "curvature.max_iter=120"])
    return train(cfg, progress=False).run_dir


def test_replayed_sharpness_equals_the_tracked_one(gd_run):
    res = run_curvature(gd_run, [7, 0, 3, 12], k=2, tol=1e-4, layerwise=True)  # float32: 1e-4 is certifiable
    assert [r.step for r in res] == [0, 3, 7, 12]  # sorted, replayed from checkpoints 0, 0 and 5, 10
    m = open_run(gd_run).metrics
    steps = m["step"].tolist()
    for r in res[:3]:
        i = steps.index(r.step)
        assert r.eigenvalues == pytest.approx([m["sharpness"][i], m["sharpness_2"][i]], rel=2e-4)
        assert r.threshold == pytest.approx(2 / 0.05) and r.error_bound <= 1e-4 and r.hvps > 0
    assert np.isfinite(res[3].sharpness) and res[3].sharpness > 0
    assert set(res[0].layers) == {"net.1", "net.3"}
    assert max(v for v, _, _ in res[0].layers.values()) <= res[0].sharpness * (1 + 1e-9)
    assert all(c for _, _, c in res[0].layers.values()) and all(r.converged for r in res)
    d = res[1].to_dict()
    assert d["eigenvalues"] == list(res[1].eigenvalues) and d["converged"] and len(d["error_bounds"]) == 2
    # the tracked values carry their bounds and flags too
    assert (m["converged/sharpness"] == 1.0).all() and (m["err/sharpness"] <= 1e-4 * m["sharpness"]).all()


def test_a_solve_that_cannot_converge_is_flagged(gd_run, capsys):
    (r,) = run_curvature(gd_run, [5], k=1, tol=1e-12, max_iter=1)
    assert not r.converged and r.to_dict()["converged"] is False and r.error_bounds[0] > 1e-12 * r.sharpness
    assert "(not converged)" in r.describe()
    assert main(["sharpness", str(gd_run), "--steps", "5", "--max-iter", "1", "--tol", "1e-12"]) == 0
    out = capsys.readouterr().out
    assert "(not converged)" in out and "not certified" in out


def test_errors(gd_run):
    with pytest.raises(StoreError, match="outside the run"):
        run_curvature(gd_run, [13])
    with pytest.raises(OppsigError, match="k >= 1"):
        run_curvature(gd_run, [1], k=0)


def test_cli(gd_run, tmp_path, capsys):
    out = tmp_path / "sharp.json"
    assert main(["sharpness", str(gd_run), "--steps", "5,10", "--out", str(out), "--layerwise"]) == 0
    text = capsys.readouterr().out
    assert "sharpness" in text and "threshold" in text and "layers: net.1" in text and "+-" in text
    assert "not converged" not in text
    d = json.loads(out.read_text())
    assert [s["step"] for s in d["steps"]] == [5, 10] and d["steps"][0]["threshold"] == pytest.approx(40.0)
    assert main(["sharpness", str(gd_run), "--steps", "five"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_cli_prints_each_step_once_with_labelled_columns(gd_run, capsys):
    assert main(["sharpness", str(gd_run), "--steps", "5,10", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines[0].split()
    assert head[:6] == ["step", "sharpness", "+-", "eig", "2", "+-"]  # each eigenvalue with its error bound
    rows = [ln.split() for ln in lines[1:] if ln.split() and ln.split()[0].isdigit()]
    assert [r[0] for r in rows] == ["5", "10"]  # each step once
    assert all(len(r) == len(head) - 1 for r in rows)  # 'eig 2' is one column under two words
    assert not any(ln.lstrip().startswith("step 5") for ln in lines)
