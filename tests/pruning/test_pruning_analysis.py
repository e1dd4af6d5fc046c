"""Pruning-impact statistics against hand-computed values on a 3 runs × 4 sparsities × 3 classes fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torchmetrics.functional.classification import binary_auroc, multilabel_average_precision

from monai_bayes.metrics import auroc, average_precision
from monai_bayes.pruning import (
    co_occurrence_iou,
    disease_count_distribution,
    fcd_matrix,
    fcd_pairs,
    fcd_regression,
    first_forgotten_k,
    first_significant_k,
    forgettability_curves,
    frequency_correlation,
    ols,
    per_image_spearman,
    pie_auroc,
    prevalence_ratio,
    select_pies,
    welch_mean_ap,
)

SPARSITIES = [0.0, 0.3, 0.6, 0.9]
#: AP[run, k, class]; written class by class: AP at k = 0, 0.3, 0.6, 0.9 for runs 0, 1, 2
_BY_CLASS = [
    [[0.5, 0.4, 0.8], [0.5, 0.4, 0.8], [0.45, 0.3, 0.8], [0.25, 0.2, 0.4]],
    [[1.0, 0.5, 0.5], [0.9, 0.5, 0.4], [0.7, 0.4, 0.4], [0.1, 0.1, 0.2]],
    [[0.2, 0.2, 0.4], [0.2, 0.2, 0.4], [0.2, 0.1, 0.4], [0.1, 0.2, 0.3]],
]
AP = np.transpose(np.array(_BY_CLASS), (2, 1, 0))  # (class, k, run) -> (run, k, class)
#: eq. 1 by hand: median over runs of the relative change (e.g. class 1, k = 0.6: median(-0.3, -0.2, -0.2))
CURVES = np.array([[0, 0, 0], [0, -0.1, 0], [-0.1, -0.2, 0], [-0.5, -0.8, -0.25]])


def test_fixture_layout() -> None:
    assert AP.shape == (3, 4, 3)
    assert AP[1, 2, 0] == 0.3 and AP[2, 3, 1] == 0.2


def test_forgettability_curves_by_hand() -> None:
    np.testing.assert_allclose(forgettability_curves(AP), CURVES, atol=1e-12)


def test_first_forgotten_k_by_hand() -> None:
    np.testing.assert_allclose(first_forgotten_k(CURVES, SPARSITIES, drop=0.15), [0.9, 0.6, 0.9])
    np.testing.assert_allclose(first_forgotten_k(CURVES, SPARSITIES, drop=0.6), [1.0, 0.9, 1.0])
    assert np.isnan(first_forgotten_k(CURVES, SPARSITIES, drop=0.6, never=np.nan)[0])


def test_fcd_by_hand() -> None:
    # (0,1): diffs 0, .1, .1, .3 -> (0 + .01 + .01 + .09) / 4; (0,2): 0, 0, -.1, -.25; (1,2): 0, -.1, -.2, -.55
    expected = {(0, 1): 0.11 / 4, (0, 2): 0.0725 / 4, (1, 2): 0.3525 / 4}
    fcd = fcd_matrix(CURVES)
    for (a, b), v in expected.items():
        assert fcd[a, b] == pytest.approx(v) and fcd[b, a] == pytest.approx(v)
    assert np.all(np.diag(fcd) == 0)


def test_welch_against_the_formula() -> None:
    res = welch_mean_ap(AP, SPARSITIES)
    np.testing.assert_allclose(res.mean_ap[:, 0], [1.7 / 3, 1.1 / 3, 1.7 / 3])
    for k in range(1, 4):
        a, b = res.mean_ap[:, k], res.mean_ap[:, 0]
        va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
        t = (a.mean() - b.mean()) / math.sqrt(va + vb)
        dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)  # Welch–Satterthwaite
        assert res.t[k] == pytest.approx(t)
        assert res.p[k] == pytest.approx(2 * stats.t.sf(abs(t), dof))
    assert np.isnan(res.t[0])
    first = first_significant_k(res, alpha=0.05)
    assert first == pytest.approx(next(SPARSITIES[k] for k in range(1, 4) if res.p[k] < 0.05 and res.t[k] < 0))


def test_frequency_correlation_matches_scipy() -> None:
    freq = np.array([100.0, 10.0, 1000.0, 30.0, 3.0])
    values = np.array([0.7, 0.5, 0.9, np.nan, 0.2])
    res = frequency_correlation(freq, values)
    ok = [0, 1, 2, 4]
    assert res.n == 4
    assert res.pearson_r == pytest.approx(np.corrcoef(np.log10(freq[ok]), values[ok])[0, 1])
    assert res.spearman_rho == pytest.approx(1.0)  # monotone in frequency
    with pytest.raises(ValueError, match="positive"):
        frequency_correlation(np.array([0.0, 1, 2]), np.array([1.0, 2, 3]))


LABELS = np.array([[1, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]])


def test_iou_and_pairs_by_hand() -> None:
    iou = co_occurrence_iou(LABELS)
    # class 0 in {0,1,3}, class 1 in {1,2}, class 2 in {1}
    assert iou[0, 1] == pytest.approx(1 / 4) and iou[0, 2] == pytest.approx(1 / 3) and iou[1, 2] == pytest.approx(1 / 2)
    pairs = fcd_pairs(CURVES, LABELS)
    np.testing.assert_array_equal(pairs.a, [0, 0, 1])
    np.testing.assert_array_equal(pairs.b, [1, 2, 2])
    np.testing.assert_allclose(pairs.abs_log_freq_diff, [math.log(3 / 2), math.log(3), math.log(2)])
    np.testing.assert_allclose(pairs.iou_quarter, np.array([1 / 4, 1 / 3, 1 / 2]) ** 0.25)
    np.testing.assert_allclose(pairs.fcd, [0.11 / 4, 0.0725 / 4, 0.3525 / 4])


def test_ols_simple_regression_matches_linregress() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 0.5 + 2 * x + rng.normal(size=30)
    res = ols(y, np.column_stack([np.ones_like(x), x]), ("intercept", "x"))
    ref = stats.linregress(x, y)
    assert res.coef[1] == pytest.approx(ref.slope) and res.coef[0] == pytest.approx(ref.intercept)
    assert res.se[1] == pytest.approx(ref.stderr) and res.se[0] == pytest.approx(ref.intercept_stderr)
    assert res.p[1] == pytest.approx(ref.pvalue) and res.r2 == pytest.approx(ref.rvalue**2)


def test_fcd_regression_exact_coefficients_and_fwl_standard_errors() -> None:
    rng = np.random.default_rng(1)
    n = 40
    d, q = rng.uniform(0, 3, n), rng.uniform(0, 1, n)
    X = np.column_stack([np.ones(n), d, q, d * q])
    beta = np.array([0.27, 0.21, -0.05, -0.31])  # the seed's eq. 2
    e = rng.normal(0, 0.05, n)
    e -= X @ np.linalg.lstsq(X, e, rcond=None)[0]  # residual orthogonal to X: the fit must return beta exactly
    from monai_bayes.pruning.analysis import PairTable

    pairs = PairTable(np.arange(n), np.arange(n), X @ beta + e, d, q)
    res = fcd_regression(pairs)
    np.testing.assert_allclose(res.coef, beta, atol=1e-10)
    sigma2 = (e @ e) / (n - 4)
    for j in range(4):  # Frisch–Waugh–Lovell: var(β_j) = σ² / RSS of x_j regressed on the other columns
        others = np.delete(X, j, axis=1)
        r = X[:, j] - others @ np.linalg.lstsq(others, X[:, j], rcond=None)[0]
        assert res.se[j] == pytest.approx(math.sqrt(sigma2 / (r @ r)))
        assert res.p[j] == pytest.approx(2 * stats.t.sf(abs(beta[j] / res.se[j]), n - 4))
    with pytest.raises(ValueError, match="full-rank"):
        ols(np.ones(3), np.ones((3, 4)), "abcd")


UNPRUNED = np.array([[0.1, 0.2, 0.3]] * 4)
PRUNED = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.2, 0.1, 0.3], [0.1, 0.3, 0.2]])


def test_per_image_spearman_by_hand_and_scipy() -> None:
    rho = per_image_spearman(UNPRUNED, PRUNED)
    np.testing.assert_allclose(rho, [1.0, -1.0, 0.5, 0.5])  # 1 - 6 Σd² / (n (n² - 1)), Σd² = 0, 8, 2, 2
    rng = np.random.default_rng(2)
    a, b = rng.random((5, 14)), rng.random((5, 14))
    b[0, :3] = b[0, 3]  # ties
    ref = [stats.spearmanr(a[i], b[i]).statistic for i in range(5)]
    np.testing.assert_allclose(per_image_spearman(a, b), ref)


def test_select_pies_bottom_fraction() -> None:
    rho = np.array([1.0, -1.0, 0.5, 0.5])
    np.testing.assert_array_equal(select_pies(rho, 0.05), [False, True, False, False])  # ceil(0.05 * 4) = 1
    np.testing.assert_array_equal(select_pies(rho, 0.5), [False, True, True, False])  # tie: first in order
    np.testing.assert_array_equal(select_pies(np.array([0.2, np.nan, 0.1]), 0.3), [False, True, False])
    with pytest.raises(ValueError, match="fraction"):
        select_pies(rho, 0.0)


def test_pie_characteristics_by_hand() -> None:
    pies = np.array([False, True, False, False])
    ratio = prevalence_ratio(LABELS, pies)  # PIE prevalence 1, 1, 1; non-PIE 2/3, 1/3, 0
    np.testing.assert_allclose(ratio[:2], [1.5, 3.0])
    assert np.isnan(ratio[2])
    pie, non, r = disease_count_distribution(LABELS, pies, max_count=2)  # counts 1, 3, 1, 1 -> bins 1, 2+, 1, 1
    np.testing.assert_allclose(pie, [0, 0, 1])
    np.testing.assert_allclose(non, [0, 1, 0])
    assert np.isnan(r[0]) and r[1] == 0 and np.isnan(r[2])


def test_auroc_and_ap_match_torchmetrics_and_brute_force() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random((60, 4)) < 0.3).astype(int)
    s = np.round(rng.random((60, 4)) + 0.3 * y, 1)  # rounded: many ties
    ref = multilabel_average_precision(torch.tensor(s), torch.tensor(y), num_labels=4, average=None).numpy()
    np.testing.assert_allclose(average_precision(y, s), ref, atol=1e-6)
    pos, neg = s[y[:, 0] == 1, 0], s[y[:, 0] == 0, 0]
    brute = np.mean([(p > n_) + 0.5 * (p == n_) for p in pos for n_ in neg])
    assert auroc(y[:, 0], s[:, 0]) == pytest.approx(brute)
    assert auroc(y[:, 1], s[:, 1]) == pytest.approx(float(binary_auroc(torch.tensor(s[:, 1]), torch.tensor(y[:, 1]))))
    assert math.isnan(auroc(np.zeros(5), np.arange(5)))
    assert pie_auroc({"u": np.array([0.1, 0.9, 0.2, 0.3])}, np.array([False, True, False, False]))["u"] == 1.0
    y[:, 2] = 0
    assert np.isnan(average_precision(y, s)[2])
