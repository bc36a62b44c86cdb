import numpy as np
import pytest

from oppsig.data import PlantedPair, opposing_signals
from oppsig.data.synthetic import feature_map
from oppsig.errors import ConfigError


def test_planted_groups_have_stated_magnitude_and_labels():
    ds = opposing_signals(n=2000, magnitude=2.0, frequency=0.2, seed=3, standardize=False)
    y, g = ds.y.numpy(), ds.groups
    raw = ds.raw.numpy().astype(np.float64)
    for k, pair in enumerate(ds.meta["pairs"]):
        a, b = pair["class_a"], pair["class_b"]
        fmap = feature_map(pair["feature"])
        mask = fmap != 0
        for gid, cls in ((2 * k, a), (2 * k + 1, b)):
            members = g == gid
            # every member is of its class; ~frequency of the class carries the feature
            assert (y[members] == cls).all()
            frac = members.sum() / (y == cls).sum()
            assert abs(frac - 0.2) < 0.02
            # the feature shifts member pixels by magnitude * pattern (40 grey levels per unit), sign included
            others = (g == -1) & (y == cls)
            diff = raw[members].mean(0) - raw[others].mean(0)
            shift = (diff[mask] / fmap[mask]).mean() / 40.0
            assert 0.85 * 2.0 < shift < 1.1 * 2.0, shift  # a little below 2 where pixels clip at 255
    # opposite label correlation: the same feature, two different classes
    p0 = ds.meta["pairs"][0]
    assert p0["class_a"] != p0["class_b"]


def test_control_has_no_feature_shift():
    ds = opposing_signals(n=2000, magnitude=0.0, seed=3, standardize=False)
    raw = ds.raw.numpy().astype(np.float64)
    fmap = feature_map("bright_top")
    members = ds.groups == 0
    diff = raw[members].mean(0) - raw[ds.groups == -1].mean(0)
    assert abs(diff[fmap != 0].mean()) < 3.0  # a few grey levels of noise, not 120


def test_deterministic_and_indexed():
    a = opposing_signals(n=100, seed=1)
    b = opposing_signals(n=100, seed=1)
    assert (a.raw == b.raw).all() and (a.groups == b.groups).all()
    assert a.index.tolist() == list(range(100))
    assert a[5][0] == 5


def test_bad_parameters():
    with pytest.raises(ConfigError, match="frequency"):
        opposing_signals(n=10, frequency=1.5)
    with pytest.raises(ConfigError, match="class 12"):
        opposing_signals(n=10, pairs=(PlantedPair("bright_top", 0, 12),))
    with pytest.raises(ConfigError, match="unknown synthetic feature"):
        opposing_signals(n=10, pairs=(PlantedPair("sparkles", 0, 1),))
