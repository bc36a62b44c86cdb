"""Per-example scores (oppsig.signals.scores) against hand-computed values of their published definitions."""

import numpy as np
import pytest

from oppsig.errors import OppsigError
from oppsig.signals.scores import (FLAGS, auroc, aum, data_maps, el2n, forgetting_counts, loss_variance, margins,
                                   never_learned, p_true_from_logits, p_true_from_loss, per_example_scores, top_k)

nan = np.nan


def test_data_maps_mean_and_population_std_of_true_class_probability():
    p = np.array([[0.2, 1.0, 0.5], [0.6, nan, 0.1], [0.4, 0.8, nan]])
    conf, var = data_maps(p)
    np.testing.assert_allclose(conf, [0.4, 0.9, 0.3])
    # population std (1/E): column 0 sqrt((0.2^2 + 0.2^2 + 0) / 3); 1/(E-1) would give 0.2
    np.testing.assert_allclose(var, [np.sqrt(0.08 / 3), 0.1, 0.2])


def test_true_class_probability_from_loss_and_from_logits_agree_for_cross_entropy():
    z = np.array([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])
    y = np.array([1, 0])
    p = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(p_true_from_logits(z, y), [[p[0, 0, 1], p[0, 1, 0]]])
    ce = -np.log(p_true_from_logits(z, y))
    np.testing.assert_allclose(p_true_from_loss(ce), p_true_from_logits(z, y))
    np.testing.assert_allclose(p_true_from_loss(np.array([[np.log(2.0), nan]])), [[0.5, nan]])


def test_loss_variance_is_the_population_variance_over_measured_rows():
    L = np.array([[1.0, 2.0], [3.0, nan], [nan, nan]])
    np.testing.assert_allclose(loss_variance(L), [1.0, 0.0])  # 1/(E-1) would give 2.0
    assert np.isnan(loss_variance(np.array([[nan], [nan]])))[0]


def test_forgetting_counts_correct_to_incorrect_only():
    c = np.array([[0, 1, 1], [1, 0, 1], [0, 0, 1], [1, 0, 1], [1, 0, 0]], dtype=bool)
    # column 0: 0 1 0 1 1 -> 1 (learning events: 2); column 1: 1 0 0 0 0 -> 1 (none); column 2: 1 1 1 1 0 -> 1
    np.testing.assert_array_equal(forgetting_counts(c), [1, 1, 1])
    c = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=bool)  # 1 0 1 0 -> 2; 0 1 0 1 -> 1 (learning 2)
    np.testing.assert_array_equal(forgetting_counts(c), [2, 1])


def test_forgetting_never_learned_and_never_measured():
    c = np.array([[0.0, 0.0, nan], [0.0, 1.0, nan], [nan, 0.0, nan]])
    f = forgetting_counts(c)
    assert f[0] == np.inf and f[1] == 1 and np.isnan(f[2])
    np.testing.assert_array_equal(never_learned(c), [True, False, False])
    assert forgetting_counts(c, never=-1.0)[0] == -1.0


def test_forgetting_skips_rows_an_example_was_not_measured():
    # 1 (gap) 0: a forgetting between consecutive measured rows; 1 (gap, stored False) 1: none
    c = np.array([[1, 1], [0, 0], [0, 1]], dtype=bool)
    measured = np.array([[1, 1], [0, 0], [1, 1]], dtype=bool)
    np.testing.assert_array_equal(forgetting_counts(c, measured), [1, 0])
    np.testing.assert_array_equal(forgetting_counts(c), [1, 1])  # all rows measured: the gap row counts


def test_el2n_is_the_l2_norm_of_softmax_minus_onehot_averaged_over_rows():
    p = np.array([[[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]], [[0.1, 0.1, 0.8], [nan, nan, nan]]])
    z = np.log(p)
    y = np.array([0, 1])
    # example 0: row 0 |(-0.3, 0.2, 0.1)| = sqrt(0.14), row 1 |(-0.9, 0.1, 0.8)| = sqrt(1.46);
    # example 1: row 0 |(0.7, -0.8, 0.1)| = sqrt(1.14), row 1 not measured
    np.testing.assert_allclose(el2n(z, y), [(np.sqrt(0.14) + np.sqrt(1.46)) / 2, np.sqrt(1.14)])
    np.testing.assert_allclose(el2n(z, y, rows=[0]), [np.sqrt(0.14), np.sqrt(1.14)])
    np.testing.assert_allclose(el2n(z, y, rows=slice(1, 2))[0], np.sqrt(1.46))
    assert np.isnan(el2n(z, y, rows=[1])[1])


def test_aum_is_the_mean_margin_of_the_true_logit_over_the_largest_other():
    z = np.array([[[2.0, 0.0, 1.0], [0.0, 5.0, 1.0]], [[0.0, 3.0, 1.0], [nan, nan, nan]]])
    y = np.array([0, 1])
    np.testing.assert_allclose(margins(z, y), [[1.0, 4.0], [-3.0, nan]])
    np.testing.assert_allclose(aum(z, y), [-1.0, 4.0])  # not the margin to the second largest logit overall
    np.testing.assert_allclose(aum(z, y, rows=[0]), [1.0, 4.0])


def test_flags_rank_flagged_examples_first():
    assert FLAGS == {"confidence": -1, "variability": 1, "loss_variance": 1, "forgetting": 1, "el2n": 1, "aum": -1}
    s = np.array([0.2, nan, 0.9, 0.5])
    assert top_k(s, 2).tolist() == [2, 3]
    assert top_k(s, 3, -1).tolist() == [0, 3, 2]  # NaN last in either direction
    assert top_k(np.array([1.0, np.inf, 2.0]), 1).tolist() == [1]


def test_per_example_scores_on_a_small_record():
    L = np.array([[0.1, 2.0], [0.3, nan], [0.2, 1.0]])
    C = np.array([[1, 0], [0, 1], [1, 0]], dtype=bool)
    s = per_example_scores(L, C)
    assert set(s) == {"confidence", "variability", "loss_variance", "forgetting"}
    np.testing.assert_allclose(s["confidence"], [np.exp([-0.1, -0.3, -0.2]).mean(), np.exp([-2.0, -1.0]).mean()])
    # column 1 is stored True at row 1 where its loss is NaN (not measured): never learned
    np.testing.assert_array_equal(s["forgetting"], [1, np.inf])
    z = np.zeros((1, 2, 3))
    s = per_example_scores(L, C, z, np.array([0, 2]))
    np.testing.assert_allclose(s["aum"], [0.0, 0.0])
    np.testing.assert_allclose(s["el2n"], np.sqrt((2 / 3) ** 2 + 2 / 9))


def test_auroc_exact_values():
    assert auroc(np.array([0.9, 0.1, 0.5, 0.5]), np.array([True, False, True, False])) == 0.875
    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 1.0
    assert auroc(np.array([3.0, 2.0, 1.0]), np.array([False, False, True])) == 0.0
    assert auroc(np.array([nan, 2.0, 1.0]), np.array([True, True, False])) == 1.0
    assert np.isnan(auroc(np.array([1.0, 2.0]), np.array([False, False])))


@pytest.mark.parametrize("call, name", [
    (lambda: data_maps(np.zeros(3)), "p_true"),
    (lambda: loss_variance(np.zeros((2, 3, 1))), "losses"),
    (lambda: p_true_from_loss(np.zeros(3)), "losses"),
    (lambda: forgetting_counts(np.zeros(3, dtype=bool)), "correct"),
    (lambda: forgetting_counts(np.zeros((2, 3), dtype=bool), np.ones((3, 2), dtype=bool)), "measured"),
    (lambda: el2n(np.zeros((2, 3)), np.zeros(3, dtype=int)), "logits"),
    (lambda: el2n(np.zeros((2, 3, 4)), np.zeros(2, dtype=int)), "labels"),
    (lambda: aum(np.zeros((2, 3, 4)), np.array([0, 1, 4])), "labels"),
    (lambda: aum(np.zeros((2, 3, 4)), np.zeros(3)), "labels"),
    (lambda: margins(np.zeros((2, 3, 1)), np.zeros(3, dtype=int)), "class"),
    (lambda: auroc(np.zeros(3), np.zeros(2, dtype=bool)), "score"),
])
def test_bad_shapes_raise_one_line_oppsig_errors(call, name):
    with pytest.raises(OppsigError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and name in msg and ("pass" in msg or "needs" in msg)
