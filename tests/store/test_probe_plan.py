"""The mini-batch probe's size and interval from its cost budget."""

import math

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
        assert r <= q < r * 2 ** 0.5 + 1e-12  # never below the measurement, at most one grid step above
    assert quantize_share(float("nan")) == FORWARD_SHARE and quantize_share(0.0) == FORWARD_SHARE
    # a dearer forward buys fewer probed values: the plan stays within the budget at its own cost model
    cheap, dear = plan_probe(5000, 128, 2000, forward_share=0.25), plan_probe(5000, 128, 2000, forward_share=1.4)
    assert dear.n * dear.rows < cheap.n * cheap.rows and dear.share <= 0.1 and dear.forward_share == 1.4
