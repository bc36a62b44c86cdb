"""Layer-wise share of the top Hessian eigenvector: recorded by the curvature hook, drawn, shown in the report."""

import numpy as np
import pytest
import torch

from oppsig.curvature.hook import layer_shares
from oppsig.curvature.layout import ParamLayout
from oppsig.report import plot_layer_shares, write_report
from oppsig.store import open_run
from oppsig.training import train


@pytest.fixture(scope="module")
def shares_run(tmp_path_factory):
    from oppsig.config import load_config

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(None, ["data.name=synthetic", "data.n=64", "model.widths=[6,5]", "train.steps=9",
                             "optim.lr=0.05", f"out_dir={out}", "name=shares", "curvature.every=4"])
    return train(cfg, progress=False).run_dir


def test_layer_shares_of_a_vector():
    lay = ParamLayout.from_dict({"a.weight": torch.zeros(2, 2), "a.bias": torch.zeros(2), "b.weight": torch.zeros(3)})
    v = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 1.0])
    s = layer_shares(v, lay, {"a": ["a.weight", "a.bias"], "b": ["b.weight"]})
    assert s == pytest.approx({"layer_share/a": 2 / 7, "layer_share/b": 5 / 7})


def test_recorded_shares_sum_to_one_at_each_measurement(shares_run):
    m = open_run(shares_run).metrics
    keys = [k for k in m if k.startswith("layer_share/")]
    assert keys == ["layer_share/net.1", "layer_share/net.3", "layer_share/net.5"]  # model order
    steps = np.asarray(m["step"])
    share = np.stack([np.asarray(m[k], dtype=float) for k in keys])  # (layers, rows)
    measured = np.isfinite(share).all(0)
    assert steps[measured].tolist() == [0, 4, 8]
    assert np.allclose(share[:, measured].sum(0), 1.0, atol=1e-9)
    assert (share[:, measured] >= 0).all() and (share[:, measured] < 1).all()


def test_figure_is_drawn_and_shown_in_the_report(shares_run):
    run = open_run(shares_run)
    fig = plot_layer_shares(run)
    ax = fig.axes[0]
    mesh = ax.collections[0].get_array()
    assert mesh.shape == (3, 3)  # layers x measurements
    assert np.allclose(np.asarray(mesh).sum(0), 1.0, atol=1e-9)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["net.1", "net.3", "net.5"]
    html = open(write_report([shares_run]), encoding="utf-8").read()
    assert "share in each layer" in html and 'alt="layer shares of the top eigenvector"' in html
