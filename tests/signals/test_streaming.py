"""Detection streams a matrix larger than its memory budget: block height from the budget, same figures."""

import numpy as np

from oppsig.signals import SignalsConfig, find_signals
from oppsig.signals.detect import coherent_components, scan_losses
from oppsig.signals.matrix import LossMatrix
from oppsig.signals.tuning import WORKING_COPIES


class Lazy:
    """A lazy (R, N) matrix that records the most rows read at once and never gives its whole self."""

    def __init__(self, a):
        self.a, self.shape, self.most = a, a.shape, 0

    def __getitem__(self, key):
        rows = self.a[key]
        self.most = max(self.most, len(rows))
        return rows


def test_block_height_follows_the_budget_and_figures_match(planted_spikes):
    ds, losses, res = planted_spikes
    r, n = losses.shape
    budget = 15 * n * 4 * WORKING_COPIES / 2**20  # room for 15 rows' working set, not the matrix
    lazy = Lazy(losses)
    m = LossMatrix(lazy, block_rows=256, max_memory_mb=budget)
    assert not m.in_memory and m.block_rows == 15
    a, b = scan_losses(m, 20), scan_losses(LossMatrix(losses, block_rows=15), 20)
    assert lazy.most <= 16  # one block and the row before it, never more
    for f in ("total", "mean", "std", "alternation", "abs_row"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    assert np.array_equal(a.top_up, b.top_up)
    ca = coherent_components(m, a, SignalsConfig())
    cb = coherent_components(LossMatrix(losses, block_rows=15), b, SignalsConfig())
    assert np.allclose(ca.values, cb.values, rtol=1e-6)
    got = find_signals(Lazy(losses), np.arange(r), ds, sharpness=np.full(r, 19.5),
                       config=SignalsConfig(max_memory_mb=budget))
    assert [s.row for s in got.spikes] == [s.row for s in res.spikes]
    assert [g.members for g in got.groups] == [g.members for g in res.groups]
    assert [(p.a, p.b) for p in got.pairs] == [(p.a, p.b) for p in res.pairs]


def test_columns_and_diff_columns_streamed_equal_in_memory(planted):
    _, losses, _ = planted
    m = LossMatrix(Lazy(losses), block_rows=7, max_memory_mb=1e-9)
    cols = np.array([5, 0, 999, 17])
    assert m.block_rows == 2  # the smallest block: the budget is below one row
    assert np.array_equal(m.columns(cols), losses[:, cols])
    assert np.array_equal(m.diff_columns(cols), np.diff(losses[:, cols], axis=0))


def test_block_partials_do_not_keep_their_block_alive():
    """A streamed pass holds one block at a time only if no partial result is a view into a block's temporaries."""
    from oppsig.signals.detect import _scan_block, _z_block, _zt_block
    from oppsig.signals.group import _dt_block

    blk = np.random.default_rng(0).random((9, 50)).astype(np.float32)
    mu, inv = np.zeros(50, np.float32), np.ones(50, np.float32)
    parts = [_scan_block(0, blk, k=3), {"zt": _zt_block(0, blk, mu, inv, np.ones((8, 2))),
                                         "z": _z_block(0, blk, mu, inv, np.ones((50, 2), np.float32)),
                                         "dt": _dt_block(0, blk, np.ones((8, 2), np.float32))}]
    for p in parts:
        for name, a in p.items():
            assert a.base is None or a.base.size <= a.size, name  # owns its data (or a view of no more than itself)
