"""benchmarks/paper_networks.py: the edge-of-stability count and the layer-share summary it prints."""

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("paper_networks", ROOT / "benchmarks" / "paper_networks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_edge_steps_counts_only_certified_measurements_inside_the_band():
    P = _module()
    steps = np.arange(0, 80, 10)
    thr = np.full(8, 10.0)
    sharp = np.array([5.0, 9.5, 10.5, 10.8, 12.0, 9.2, 10.0, 10.0])
    err = np.array([0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0])  # step 30: 10.8 + 0.3 leaves the band
    conv = np.array([1, 1, 1, 1, 1, 1, 0, 1])  # step 60 did not converge: not certified
    total, longest, first = P.edge_steps(steps, sharp, err, conv, thr, 10)
    assert (total, longest, first) == (40, 20, 10)  # steps 10, 20, 50, 70; the longest unbroken run is 10-20


def test_edge_steps_is_zero_when_nothing_is_near_the_threshold():
    P = _module()
    s = np.arange(5) * 20
    assert P.edge_steps(s, np.full(5, 30.0), np.zeros(5), np.ones(5), np.full(5, 10.0), 20) == (0, 0, -1)


def test_thirds_split_the_layers_in_model_order():
    P = _module()
    t = P.thirds(np.array([0.5, 0.1, 0.1, 0.1, 0.1, 0.1]))
    assert t == {"first third": 0.6, "middle third": 0.2, "last third": 0.2, "last layer": 0.1}
