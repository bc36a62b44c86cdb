import numpy as np
import pytest
import torch

from oppsig.data import opposing_signals
from oppsig.errors import ConfigError
from oppsig.experiments.intervene import apply, matched_control


@pytest.fixture(scope="module")
def ds():
    return opposing_signals(n=400, frequency=0.2, seed=0)


def test_matched_control_has_same_size_and_classes(ds):
    members = np.flatnonzero(ds.groups >= 0)
    c = matched_control(ds, members, seed=1)
    y = ds.y.numpy()
    assert len(c) == len(members) and not set(c) & set(members)
    assert np.array_equal(np.bincount(y[c], minlength=10), np.bincount(y[members], minlength=10))


def test_remove_and_downweight(ds):
    rows = np.array([3, 10, 11])
    d, w = apply(ds, rows, "remove")
    assert len(d) == len(ds) - 3 and not set(d.index.tolist()) & {3, 10, 11}
    d, w = apply(ds, rows, "downweight", weight=0.25)
    assert d is ds and w[rows].tolist() == [0.25] * 3 and float(w.sum()) == len(ds) - 3 + 0.75


def test_attenuate_scales_the_group_direction(ds):
    rows = np.flatnonzero(ds.groups == 0)
    mu = ds.x.mean(0)
    d = ds.x[rows].mean(0) - mu
    dn = d / d.norm()
    proj = lambda x: ((x[rows] - mu) * dn).flatten(1).sum(1)  # noqa: E731
    out, _ = apply(ds, rows, "attenuate", attenuation=0.25)
    assert torch.allclose(proj(out.x), 0.25 * proj(ds.x), atol=1e-3)
    others = np.setdiff1d(np.arange(len(ds)), rows)
    assert torch.equal(out.x[others], ds.x[others])
    with pytest.raises(ConfigError, match="valid: remove"):
        apply(ds, rows, "delete")


def test_intervene_end_to_end(tiny_cfg):
    """Three branches from a kept checkpoint: untouched, the pair's groups changed, a matched control."""
    from oppsig.experiments.intervene import intervene
    from oppsig.store import open_run
    from oppsig.training import train
    from tests.report.test_report import add_fake_signals

    res0 = train(tiny_cfg(steps=12), progress=False)  # checkpoints kept at 0, 5, 10
    add_fake_signals(res0.run_dir)
    out = intervene(res0.run_dir, mode="remove", steps=12, progress=False, report=False, log=lambda *_: None)
    assert out.from_step in (0, 5) and set(out.branches) == {"untouched", "remove-groups", "remove-control"}
    assert len(out.members) == 20 and len(out.control) == 20 and not set(out.members) & set(out.control)
    removed = open_run(out.branches["remove-groups"])
    assert len(removed.index) == 128 - 20 and not set(removed.index.tolist()) & set(range(20))
    assert removed.steps[0] == out.from_step
    for row in out.table.values():
        assert {"spikes", "final loss", "mean sharpness"} <= set(row)
