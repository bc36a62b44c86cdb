"""Spike detection, per-step extremes and the loss-matrix reader."""

import numpy as np
import pytest

from oppsig.signals import LossMatrix, SignalsConfig, SignalsError, detect_spikes
from oppsig.signals.detect import coherent_components, scan_losses


def trend_with_spikes(spikes=(150, 420, 700), steps=1000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    y = 0.1 + 2.2 * np.exp(-t / 250.0)  # slow downward trend over a decade of loss
    y *= np.exp(0.02 * rng.standard_normal(steps))  # small multiplicative noise
    for s in spikes:
        y[s - 1] *= 1.4
        y[s] *= 2.2
        y[s + 1] *= 1.3
    return y


def test_spikes_found_on_trend():
    y = trend_with_spikes()
    spikes = detect_spikes(y, steps=np.arange(1000) * 10)
    assert [s.row for s in spikes] == [150, 420, 700]
    assert [s.step for s in spikes] == [1500, 4200, 7000]
    for s in spikes:
        assert 0.9 < s.height < 1.5  # about +120 % over the trend
        assert s.onset_row < s.row and s.z > 4
        assert abs(s.trend - y[s.row] / (1 + s.height)) < 1e-9


def test_no_spike_on_smooth_decay_or_noise():
    y = trend_with_spikes(spikes=())
    assert detect_spikes(y) == []
    flat = np.full(200, 0.7)
    assert detect_spikes(flat) == []


def test_spikes_late_in_training_count_as_much_as_early():
    """Log scale: a doubling at loss 0.1 is as much a spike as a doubling at loss 2."""
    y = trend_with_spikes(spikes=(100, 900))
    assert y[900] < 0.5 and y[100] > 1.5
    assert [s.row for s in detect_spikes(y)] == [100, 900]


def test_close_peaks_merge():
    y = trend_with_spikes(spikes=(300,))
    y[302] *= 2.0
    rows = [s.row for s in detect_spikes(y, config=SignalsConfig(min_spike_gap=5))]
    assert len(rows) == 1 and rows[0] in (300, 302)


def test_sharpness_attached():
    y = trend_with_spikes(spikes=(500,))
    sharp = np.full(1000, np.nan)
    sharp[::100] = np.arange(10.0)
    (s,) = detect_spikes(y, sharpness=sharp)
    assert s.sharpness == 5.0 and s.sharpness_step == 500
    # only a measurement within spike_context rows of the peak is attached
    far = np.full(1000, np.nan)
    far[[470, 530]] = [1.0, 2.0]
    (s,) = detect_spikes(y, sharpness=far, config=SignalsConfig(spike_context=12))
    assert s.sharpness is None and s.sharpness_step is None
    (s,) = detect_spikes(y, sharpness=far, config=SignalsConfig(spike_context=30))
    assert s.sharpness in (1.0, 2.0) and abs(s.sharpness_step - 500) == 30


def test_top_k_and_statistics():
    rng = np.random.default_rng(0)
    loss = 1.0 + 0.01 * rng.standard_normal((30, 50)).cumsum(axis=0)
    loss[:, 7] += 0.5 * (-1.0) ** np.arange(30)  # the wildest oscillator
    m = LossMatrix(loss)
    sc = scan_losses(m, k=3)
    d = np.diff(loss.astype(np.float32), axis=0)
    assert sc.top_up.shape == (29, 3)
    for t in range(29):
        assert set(sc.top_up[t]) == set(np.argsort(-d[t])[:3])
        assert set(sc.top_down[t]) == set(np.argsort(d[t])[:3])
    assert sc.n_up[7] + sc.n_down[7] == 29
    assert sc.alternation[7] > 0.9 and np.argmax(sc.energy) == 7
    np.testing.assert_allclose(sc.total, loss.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(sc.std, d.std(axis=0), rtol=1e-3, atol=1e-7)


def test_streamed_blocks_match_memory():
    rng = np.random.default_rng(1)
    loss = rng.random((37, 20)).astype(np.float32)

    class Lazy:  # only .shape and row slicing, like a zarr array
        shape = loss.shape

        def __getitem__(self, k):
            return loss[k]

    mem = LossMatrix(loss, block_rows=5)
    lazy = LossMatrix(Lazy(), block_rows=5, max_memory_mb=1e-6)
    assert mem.in_memory and not lazy.in_memory
    np.testing.assert_array_equal(np.concatenate([d for _, d in lazy.diff_blocks()]), np.diff(loss, axis=0))
    np.testing.assert_array_equal(lazy.diff_columns(np.array([3, 0])), np.diff(loss, axis=0)[:, [3, 0]])
    a, b = scan_losses(mem, 4), scan_losses(lazy, 4)
    np.testing.assert_array_equal(a.top_up, b.top_up)
    np.testing.assert_allclose(a.energy, b.energy, rtol=1e-6)


def test_component_seed_finds_coherent_block():
    from oppsig.signals.group import component_seeds

    rng = np.random.default_rng(2)
    d = 0.01 * rng.standard_normal((120, 400))
    d[:, 10:30] += 0.01 * np.sin(np.arange(120) / 4.0)[:, None]  # 20 examples move together, each modestly
    loss = 1.0 + np.concatenate([np.zeros((1, 400)), d.cumsum(axis=0)])
    lm = LossMatrix(loss)
    comps = coherent_components(lm, scan_losses(lm, 5), SignalsConfig(n_components=4))
    block = set(range(10, 30))
    best = max(component_seeds(comps, 20), key=lambda t: len(block & set(t.tolist())))
    assert len(block & set(best.tolist())) >= 18


def test_components_match_dense_svd():
    rng = np.random.default_rng(3)
    d = rng.standard_normal((60, 3)) @ rng.standard_normal((3, 80)) + 0.01 * rng.standard_normal((60, 80))
    loss = np.concatenate([np.zeros((1, 80)), d.cumsum(axis=0)])
    lm = LossMatrix(loss)
    comps = coherent_components(lm, scan_losses(lm, 5), SignalsConfig(n_components=3))
    z = np.diff(loss.astype(np.float32), axis=0)
    z = (z - z.mean(0)) / z.std(0)
    s = np.linalg.svd(z, compute_uv=False)
    np.testing.assert_allclose(comps.values, s[:3], rtol=1e-3)


def test_one_spike_window_and_share():
    from oppsig.signals import Spike, rise_shares, spike_window
    from oppsig.signals.spikes import spike_rows

    s = Spike(row=20, step=20, onset_row=17, onset_step=17, loss=2.0, trend=1.0, height=1.0, z=9.0)
    assert spike_window(s, 100, 5) == (12, 21)
    assert spike_window(s, 19, 5) == (12, 19)  # clipped
    assert spike_rows([s], 100, 5).tolist() == list(range(12, 21))
    rng = np.random.default_rng(0)
    loss = 1.0 + rng.random((30, 6))
    d = np.diff(loss, axis=0)
    total = loss.mean(axis=1)
    total[20] = total[17] + 1.0  # a rise of 1 from onset to peak
    # columns 0 and 1 carry (L[20] - L[17]) / 6 of the total's rise
    want = (loss[20, :2] - loss[17, :2]).sum() / 6 / 1.0
    assert rise_shares(d[:, :2], total, [s], 6) == [pytest.approx(want)]
    total[20] = total[17] - 0.5
    assert np.isnan(rise_shares(d[:, :2], total, [s], 6)[0])


def test_bad_series():
    with pytest.raises(SignalsError, match="at least 8"):
        detect_spikes(np.ones(5))
    with pytest.raises(SignalsError, match="1-D"):
        detect_spikes(np.ones((10, 2)))
    with pytest.raises(SignalsError, match="non-finite"):
        detect_spikes(np.r_[np.ones(10), np.nan])


def test_extremes_at_a_step_and_over_a_window():
    from oppsig.signals import extremes

    loss = np.ones((5, 6))
    loss[3] = [1.0, 3.0, 0.2, 1.5, 1.0, 0.9]
    loss[4] = loss[3]
    up, down = extremes(loss, 3, k=2)
    assert up.tolist() == [1, 3] and down.tolist() == [2, 5]
    assert extremes(loss, 4, k=2, window=3)[0].tolist() == [1, 3]
    with pytest.raises(SignalsError, match="rows -1..3"):
        extremes(loss, 3, window=4)
