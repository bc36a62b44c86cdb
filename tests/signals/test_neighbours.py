"""Neighbourhood seeds: a small group in a record with few rows and many columns (a mini-batch run's probe)."""

import dataclasses

import numpy as np
import pytest

from oppsig.errors import ConfigError
from oppsig.signals import SignalsConfig
from oppsig.signals.detect import coherent_components, scan_losses
from oppsig.signals.group import find_groups, noise_edge
from oppsig.signals.matrix import LossMatrix
from oppsig.signals.neighbours import neighbour_seeds

from ._synth import f1

ROWS, COLS, SIZE = 75, 1024, 12
PROBE = dataclasses.replace(SignalsConfig(), min_corr=0.6, min_recurrence=1)


def _probe_like(seed: int, planted: bool, shared: float = 0.3) -> tuple[LossMatrix, np.ndarray]:
    """Loss changes of a probe: noise, a shared oscillation each column follows with its own loading (of standard
    deviation ``shared``), and (when ``planted``) ``SIZE`` columns that also follow one series of their own at
    pairwise correlation about 0.5."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((ROWS - 1, COLS))
    members = rng.choice(COLS, SIZE, replace=False)
    if planted:  # no larger than the others: never the step's extremes more often than chance
        d[:, members] = np.sqrt(0.5) * rng.standard_normal((ROWS - 1, 1)) + np.sqrt(0.5) * d[:, members]
    d += np.sin(np.arange(ROWS - 1) / 2.0)[:, None] * rng.normal(0.0, shared, COLS)[None, :]
    return LossMatrix(np.concatenate([np.zeros((1, COLS)), np.cumsum(d, axis=0)])), np.sort(members)


def _groups(lm: LossMatrix, neighbour_seeds: int) -> list[np.ndarray]:
    cfg = dataclasses.replace(PROBE, neighbour_seeds=neighbour_seeds)
    scan = scan_losses(lm, cfg.k)
    return find_groups(lm, scan, coherent_components(lm, scan, cfg), cfg, relative=None)


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_a_small_group_inside_the_noise_bulk_is_found_from_its_neighbourhood(seed):
    """A group of 12 among 1,024 columns over 74 changes: its eigenvalue (about 1 + 11 x 0.5) lies inside the
    noise bulk (edge about 22), and here the component seeds miss it; the neighbourhood seeds find at least three
    quarters of it (a member whose correlation with the group's mean falls under ``min_corr`` is left out)."""
    lm, members = _probe_like(seed, planted=True)
    assert max((f1(g, members) for g in _groups(lm, 0)), default=0.0) < 0.5
    assert max(f1(g, members) for g in _groups(lm, 8)) >= 0.75


@pytest.mark.parametrize("seed", range(5))
def test_noise_gives_no_neighbourhood_seed_and_a_shared_oscillation_no_group(seed):
    """Noise alone seeds nothing; with the shared oscillation, examples of like loading follow it alike, but once
    the broad components above the noise are taken out they seed no group either."""
    lm, _ = _probe_like(seed, planted=False, shared=0.0)
    assert neighbour_seeds(lm, scan_losses(lm, 20), 8, 0.6) == []
    lm, _ = _probe_like(seed, planted=False)
    assert [g.tolist() for g in _groups(lm, 8)] == [g.tolist() for g in _groups(lm, 0)]


def test_neighbourhood_groups_only_fill_the_room_the_other_groups_leave():
    """With a strong shared oscillation the components find two groups and the neighbourhoods a third (the planted
    one, here swinging three times as much as the others); capped at two groups, the two of the components stay,
    though the third's swing is the largest."""
    lm, members = _probe_like(6, planted=True, shared=0.7)
    losses = lm.columns(np.arange(COLS))
    losses[:, members] *= 3.0
    lm = LossMatrix(losses)
    first, more = _groups(lm, 0), _groups(lm, 8)
    assert len(first) == 2 and len(more) == 3 and max(f1(g, members) for g in more) > 0.5
    cfg = dataclasses.replace(PROBE, neighbour_seeds=8, max_groups=2)
    scan = scan_losses(lm, cfg.k)
    capped = find_groups(lm, scan, coherent_components(lm, scan, cfg), cfg, relative=None)
    assert sorted(g.tolist() for g in capped) == sorted(g.tolist() for g in first)


def test_neighbourhood_seeds_follow_a_permutation_of_the_columns():
    lm, _ = _probe_like(5, planted=True, shared=0.0)
    perm = np.random.default_rng(1).permutation(COLS)
    moved = LossMatrix(lm.columns(np.arange(COLS))[:, perm])
    before = neighbour_seeds(lm, scan_losses(lm, 20), 8, 0.6)
    after = neighbour_seeds(moved, scan_losses(moved, 20), 8, 0.6)
    assert len(before) >= 1
    assert [sorted(perm[s].tolist()) for s in after] == [s.tolist() for s in before]


def test_neighbourhood_seeds_leave_out_the_rows_of_groups_found_before():
    lm, members = _probe_like(5, planted=True, shared=0.0)
    scan = scan_losses(lm, 20)
    assert any(np.isin(s, members).sum() >= 6 for s in neighbour_seeds(lm, scan, 8, 0.6))
    assert neighbour_seeds(lm, scan, 8, 0.6, exclude=members) == []


def test_the_noise_edge_matches_the_largest_eigenvalue_of_noise():
    """The Marchenko-Pastur edge against the largest eigenvalue of the correlation matrix of Gaussian noise
    (74 changes x 1,024 series); at this size the largest eigenvalue lies within a few per cent of the edge."""
    z = np.random.default_rng(0).standard_normal((74, 1024))
    c = np.corrcoef(z.T)
    top = float(np.linalg.eigvalsh(c)[-1])
    assert abs(top / noise_edge(75, 1024) - 1) < 0.1


@pytest.mark.parametrize("field", ["neighbour_seeds", "probe_neighbour_seeds"])
def test_a_neighbourhood_of_one_is_refused(field):
    with pytest.raises(ConfigError, match=field):
        SignalsConfig(**{field: 1})
