"""The mini-batch probe's size and interval from its cost budget."""

import math

import numpy as np
import pytest

from oppsig.errors import ConfigError
from oppsig.store.probe_plan import FORWARD_SHARE, MIN_EXAMPLES, MIN_ROWS, plan_probe


@pytest.mark.parametrize("n", [100, 1024, 5000, 50_000])
@pytest.mark.parametrize("batch", [32, 128, 512])
@pytest.mark.parametrize("steps", [60, 600, 5000])
@pytest.mark.parametrize("budget", [0.02, 0.1, 0.5])
def test_plan_keeps_to_the_budget_and_its_own_cost_model(n, batch, steps, budget):
    p = plan_probe(n, batch, steps, budget)
    assert 1 <= p.n <= n and p.every >= 1
    assert p.share == pytest.approx(p.n * FORWARD_SHARE / (p.every * batch))
    assert p.share <= budget * (1 + 1e-9) or (p.n == 1 and p.every == 1)  # one example every step at least
    assert p.rows == len(range(0, steps, p.every))
    # examples first, up to MIN_EXAMPLES (or all), as long as the series keeps MIN_ROWS rows
    if p.rows >= MIN_ROWS and p.n < min(n, MIN_EXAMPLES):
        assert p.every == max(1, steps // MIN_ROWS)


def test_plan_of_the_shipped_sgd_config():
    p = plan_probe(5000, batch_size=128, steps=2000)
    assert (p.n, p.every, p.rows) == (1024, 27, 75)
    assert "1,024 of 5,000 examples (seeded) every 27 steps" in p.describe(5000)


def test_settings_the_user_fixes_are_kept():
    p = plan_probe(5000, 128, 2000, every=5)
    assert p.every == 5 and p.n == math.floor(5 * 0.1 * 128 / FORWARD_SHARE)
    p = plan_probe(5000, 128, 2000, n=5000)
    assert p.n == 5000 and p.share <= 0.1 and p.every == math.ceil(5000 * FORWARD_SHARE / (0.1 * 128))
    p = plan_probe(5000, 128, 2000, every=1, n=5000)  # both fixed: kept, and the plan says what they cost
    assert (p.n, p.every) == (5000, 1) and p.share == pytest.approx(5000 / 3 / 128)
    assert plan_probe(300, 128, 2000, n=5000).n == 300


@pytest.mark.parametrize("args", [(100, 32, 10, 0.0), (100, 32, 10, 1.5), (0, 32, 10, 0.1), (100, 0, 10, 0.1)])
def test_bad_plans_are_config_errors(args):
    with pytest.raises(ConfigError):
        plan_probe(*args)


def test_measured_share_is_rounded_up_to_its_grid():
    from oppsig.store.probe_plan import quantize_share

    for r in (0.05, 0.3, 0.34, 0.5, 0.9, 1.4, 3.0):
        q = quantize_share(r)
        assert r <= q < r * 2 ** 0.25 + 1e-12  # never below the measurement, at most one grid step above
    assert quantize_share(float("nan")) == FORWARD_SHARE and quantize_share(0.0) == FORWARD_SHARE
    # a dearer forward buys fewer probed values: the plan stays within the budget at its own cost model
    cheap, dear = plan_probe(5000, 128, 2000, forward_share=0.25), plan_probe(5000, 128, 2000, forward_share=1.4)
    assert dear.n * dear.rows < cheap.n * cheap.rows and dear.share <= 0.1 and dear.forward_share == 1.4


def test_probe_examples_take_the_stratum_whole_and_a_seeded_sample_of_the_rest():
    from oppsig.store.probe_plan import probe_examples

    rng = np.random.default_rng(3)
    scores = rng.standard_normal(500)
    rows, top = probe_examples(scores, 100, 0.25, seed=11)
    assert np.array_equal(top, np.sort(np.argsort(-scores)[:25]))  # the 25 largest scores
    assert len(rows) == 100 and len(np.unique(rows)) == 100 and np.isin(top, rows).all()
    again, _ = probe_examples(scores, 100, 0.25, seed=11)
    other, _ = probe_examples(scores, 100, 0.25, seed=12)
    assert np.array_equal(rows, again) and not np.array_equal(rows, other)
    # no stratum: the uniform sample a probe has always been (np.random.default_rng(seed).choice(N, n))
    uniform, none = probe_examples(scores, 100, 0.0, seed=11)
    old = np.sort(np.random.default_rng(11).choice(500, 100, replace=False))
    assert len(none) == 0 and np.array_equal(uniform, old)
    every, _ = probe_examples(scores, 900, 0.5, seed=0)
    assert np.array_equal(every, np.arange(500))
    with pytest.raises(ConfigError, match="probe_outliers"):
        probe_examples(scores, 100, 1.5, seed=0)


def test_weighted_probe_mean_is_unbiased_over_every_possible_sample():
    from itertools import combinations

    from oppsig.store.probe_plan import probe_weights

    losses = np.array([9.0, 0.5, 7.0, 1.0, 2.0, 0.25, 3.0])  # examples 0 and 2: the stratum
    top = np.array([0, 2])
    rest = [1, 3, 4, 5, 6]
    means = []
    for drawn in combinations(rest, 2):  # every uniform sample of 2 of the other 5, equally likely
        ids = np.sort(np.concatenate([top, drawn]))
        w = probe_weights(ids, top, len(losses))
        assert w.sum() == pytest.approx(1.0)
        means.append(w @ losses[ids])
    assert np.mean(means) == pytest.approx(losses.mean(), rel=1e-12)
    assert not np.isclose(np.mean([losses[np.sort(np.r_[top, d])].mean() for d in combinations(rest, 2)]),
                          losses.mean())  # the plain probe mean is biased towards the stratum


def test_input_scores_are_distances_from_the_mean_input():
    import torch

    from oppsig.store.probe_plan import input_scores

    x = torch.randn(37, 3, 4, 4)
    ref = np.linalg.norm((x.double() - x.double().mean(0)).reshape(37, -1).numpy(), axis=1)
    assert np.allclose(input_scores(x, chunk=8), ref, rtol=1e-12)
