"""The statistics of pruning impact (seed 003 §2.2–2.3), as pure NumPy / SciPy functions.

Conventions: ``R`` independently trained runs, ``K`` sparsities ``k_0 = 0 < k_1 < … < k_{K-1}``, ``C``
classes, ``N`` test images. Per-class average precision is held as ``ap`` ``(R, K, C)``.

* **Overall impact.** Mean AP over classes per run and sparsity; Welch's t-test (``scipy.stats.ttest_ind``,
  ``equal_var=False``) between the ``R`` unpruned and the ``R`` ``k``-sparse models (:func:`welch_mean_ap`).
* **Forgettability curve** (eq. 1): ``F_c(k) = med_i (AP_{i,k,c} − AP_{i,0,c}) / AP_{i,0,c}``
  (:func:`forgettability_curves`).
* **Class frequency vs forgetting** (Fig. 3): Pearson (on ``log10`` frequency) and Spearman between the
  training frequency and (i) the first ``k`` at which ``F_c(k) ≤ −drop`` (seed: a median 20 % relative drop,
  :func:`first_forgotten_k`) and (ii) ``F_c(k_{K-1})`` (:func:`frequency_correlation`).
* **FCD** of classes ``a, b`` (Fig. 4): ``mean_k (F_a(k) − F_b(k))²`` over all ``K`` points
  (:func:`fcd_matrix`); OLS ``FCD = β0 + β1 |Δ ln f| + β2 IoU^{1/4} + β3 |Δ ln f|·IoU^{1/4}`` (eq. 2) with
  classical standard errors and two-sided t-test p-values (:func:`ols`, :func:`fcd_regression`), where
  ``IoU = |a ∧ b| / |a ∨ b|`` over the images' label sets.
* **PIEs** (§2.3): per test image, Spearman's ρ between the run-averaged predictions ``(C,)`` of the unpruned
  and of the ``k``-sparse models; the lowest ``⌈q·N⌉`` (``q = 5 %``) are pruning-identified exemplars
  (:func:`per_image_spearman`, :func:`select_pies`); class prevalence ratio and disease-count distribution in
  PIEs vs non-PIEs (Fig. 5).
* **Uncertainty vs PIEs** (beyond the seed): AUROC of an uncertainty score for telling PIEs from non-PIEs
  (:func:`auroc`, :func:`pie_auroc`).

Average precision and AUROC come from :mod:`monai_bayes.metrics.classification`. The OLS is ~15 lines of
NumPy (``lstsq``, ``σ̂² (XᵀX)⁻¹``, Student t) rather than a statsmodels dependency; the
tests check it against ``scipy.stats.linregress`` and a hand-computed fixture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from monai_bayes.metrics.classification import auroc, average_precision

__all__ = [
    "CorrelationResult",
    "OLSResult",
    "WelchResult",
    "auroc",
    "average_precision",
    "co_occurrence_iou",
    "disease_count_distribution",
    "fcd_matrix",
    "fcd_pairs",
    "fcd_regression",
    "first_forgotten_k",
    "first_significant_k",
    "forgettability_curves",
    "frequency_correlation",
    "ols",
    "per_image_spearman",
    "pie_auroc",
    "prevalence_ratio",
    "select_pies",
    "welch_mean_ap",
]


def _check_ap(ap: np.ndarray) -> np.ndarray:
    ap = np.asarray(ap, dtype=float)
    if ap.ndim != 3 or ap.shape[1] < 2:
        raise ValueError(f"ap must be (runs, sparsities >= 2, classes) with sparsity 0 first, got {ap.shape}.")
    return ap


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or (labels.size and not np.isin(labels, (0, 1)).all()):
        raise ValueError(f"{name} must be an (N, C) 0/1 multi-label matrix, got shape {labels.shape}.")
    return labels.astype(bool)


# ------------------------------------------------------------------------------------------- overall
@dataclass(frozen=True)
class WelchResult:
    """Mean AP over classes and Welch's t-test per sparsity (seed 003 Fig. 1 left)."""

    sparsities: np.ndarray  #: (K,)
    mean_ap: np.ndarray  #: (R, K) mean over classes of each run's per-class AP
    t: np.ndarray  #: (K,) Welch t statistic, k-sparse vs unpruned (NaN at k = 0)
    p: np.ndarray  #: (K,) two-sided p-value (NaN at k = 0)


def welch_mean_ap(ap: np.ndarray, sparsities: Sequence[float] | np.ndarray) -> WelchResult:
    """Welch's t-test of the mean AP of the ``R`` ``k``-sparse vs the ``R`` unpruned models, for each ``k``.

    Parameters
    ----------
    ap : np.ndarray
        ``(R, K, C)`` per-class AP (sparsity 0 first).
    sparsities : sequence of float
        ``(K,)`` the sparsities.

    Returns
    -------
    WelchResult
        Mean AP per run and sparsity, t and p per sparsity.
    """
    ap = _check_ap(ap)
    mean_ap = np.nanmean(ap, axis=2)
    t, p = np.full(ap.shape[1], np.nan), np.full(ap.shape[1], np.nan)
    for k in range(1, ap.shape[1]):
        res = stats.ttest_ind(mean_ap[:, k], mean_ap[:, 0], equal_var=False)
        t[k], p[k] = float(res.statistic), float(res.pvalue)
    return WelchResult(np.asarray(sparsities, dtype=float), mean_ap, t, p)


def first_significant_k(result: WelchResult, alpha: float = 0.05) -> float:
    """The first sparsity whose mean AP is significantly *lower* than unpruned (``p < alpha``, ``t < 0``).

    Parameters
    ----------
    result : WelchResult
        From :func:`welch_mean_ap`.
    alpha : float
        Significance level.

    Returns
    -------
    float
        That sparsity, or NaN if no sparsity of the sweep drops significantly.
    """
    hits = np.flatnonzero((result.p < alpha) & (result.t < 0))
    return float(result.sparsities[hits[0]]) if hits.size else math.nan


# ------------------------------------------------------------------------------------------- classes
def forgettability_curves(ap: np.ndarray) -> np.ndarray:
    """Eq. 1: ``F[k, c] = median_i (AP[i, k, c] − AP[i, 0, c]) / AP[i, 0, c]``.

    Parameters
    ----------
    ap : np.ndarray
        ``(R, K, C)`` per-class AP with sparsity 0 first.

    Returns
    -------
    np.ndarray
        ``(K, C)`` median relative change in AP (``F[0] = 0``).
    """
    ap = _check_ap(ap)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (ap - ap[:, :1]) / ap[:, :1]
    return np.median(rel, axis=0)


def first_forgotten_k(
    curves: np.ndarray, sparsities: Sequence[float] | np.ndarray, drop: float = 0.2, never: float = 1.0
) -> np.ndarray:
    """First sparsity at which each class's forgettability curve falls to ``−drop`` or below (Fig. 3 left).

    The seed uses a median 20 % relative drop in AP (``drop = 0.2``).

    Parameters
    ----------
    curves : np.ndarray
        ``(K, C)`` from :func:`forgettability_curves`.
    sparsities : sequence of float
        ``(K,)`` the sparsities.
    drop : float
        Relative AP drop that counts as forgotten.
    never : float
        Value for a class never forgotten within the sweep (default 1.0: beyond every swept ``k``, so the rank
        order of Spearman's ρ keeps it as the most robust).

    Returns
    -------
    np.ndarray
        ``(C,)`` sparsities.
    """
    curves = np.asarray(curves, dtype=float)
    ks = np.asarray(sparsities, dtype=float)
    hit = curves <= -drop
    first = np.argmax(hit, axis=0)
    return np.where(hit.any(axis=0), ks[first], never)


@dataclass(frozen=True)
class CorrelationResult:
    """Pearson (on ``log10`` frequency) and Spearman correlation of class frequency with a per-class value."""

    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float
    n: int


def frequency_correlation(frequency: np.ndarray, values: np.ndarray) -> CorrelationResult:
    """Correlate training class frequency with a per-class value (Fig. 3; finite pairs only).

    Parameters
    ----------
    frequency : np.ndarray
        ``(C,)`` positive training frequencies (counts or fractions).
    values : np.ndarray
        ``(C,)`` e.g. :func:`first_forgotten_k` or the curves' last row.

    Returns
    -------
    CorrelationResult
        Pearson r between ``log10(frequency)`` and ``values`` and Spearman ρ, with p-values.

    Raises
    ------
    ValueError
        If a frequency is not positive or fewer than 3 finite pairs remain.
    """
    f, v = np.asarray(frequency, dtype=float), np.asarray(values, dtype=float)
    if f.shape != v.shape or (f <= 0).any():
        raise ValueError(f"frequency must be positive and shaped like values {v.shape}, got {f}.")
    ok = np.isfinite(v)
    if ok.sum() < 3:
        raise ValueError(f"need >= 3 classes with a finite value to correlate, got {int(ok.sum())}.")
    pr = stats.pearsonr(np.log10(f[ok]), v[ok])
    sr = stats.spearmanr(f[ok], v[ok])
    return CorrelationResult(
        float(pr.statistic), float(pr.pvalue), float(sr.statistic), float(sr.pvalue), int(ok.sum())
    )


# ------------------------------------------------------------------------------------------- pairs
def fcd_matrix(curves: np.ndarray) -> np.ndarray:
    """Forgettability curve dissimilarity: ``FCD[a, b] = mean_k (F[k, a] − F[k, b])²`` (MSE, all ``K`` points).

    Parameters
    ----------
    curves : np.ndarray
        ``(K, C)`` forgettability curves.

    Returns
    -------
    np.ndarray
        ``(C, C)`` symmetric, zero diagonal.
    """
    c = np.asarray(curves, dtype=float)
    return np.mean((c[:, :, None] - c[:, None, :]) ** 2, axis=0)


def co_occurrence_iou(labels: np.ndarray) -> np.ndarray:
    """``IoU[a, b] = #(a and b) / #(a or b)`` over the images' label sets.

    Parameters
    ----------
    labels : np.ndarray
        ``(N, C)`` 0/1 labels.

    Returns
    -------
    np.ndarray
        ``(C, C)``; 0 where neither class occurs.
    """
    y = _check_labels(labels).astype(float)
    inter = y.T @ y
    count = y.sum(axis=0)
    union = count[:, None] + count[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass(frozen=True)
class PairTable:
    """One row per unordered class pair ``a < b`` (Fig. 4)."""

    a: np.ndarray  #: (P,) class index
    b: np.ndarray  #: (P,) class index
    fcd: np.ndarray  #: (P,) forgettability curve dissimilarity
    abs_log_freq_diff: np.ndarray  #: (P,) |ln f_a − ln f_b|
    iou_quarter: np.ndarray  #: (P,) IoU^(1/4) of the pair's co-occurrence


def fcd_pairs(curves: np.ndarray, labels: np.ndarray, frequency: np.ndarray | None = None) -> PairTable:
    """FCD, ``|Δ ln frequency|`` and ``IoU^{1/4}`` for every class pair.

    Parameters
    ----------
    curves : np.ndarray
        ``(K, C)`` forgettability curves.
    labels : np.ndarray
        ``(N, C)`` labels the co-occurrence (and, by default, the frequency) is counted on.
    frequency : np.ndarray, optional
        ``(C,)`` positive class frequencies (default: the column sums of ``labels``).

    Returns
    -------
    PairTable
        ``C (C − 1) / 2`` rows.

    Raises
    ------
    ValueError
        If a frequency is not positive (a class absent from ``labels``).
    """
    y = _check_labels(labels)
    f = y.sum(axis=0).astype(float) if frequency is None else np.asarray(frequency, dtype=float)
    if (f <= 0).any():
        raise ValueError(f"every class needs a positive frequency for |Δ log frequency|, got {f}.")
    a, b = np.triu_indices(len(f), k=1)
    fcd, iou = fcd_matrix(curves), co_occurrence_iou(y)
    return PairTable(a, b, fcd[a, b], np.abs(np.log(f[a]) - np.log(f[b])), iou[a, b] ** 0.25)


@dataclass(frozen=True)
class OLSResult:
    """Ordinary least squares with classical (homoscedastic) standard errors."""

    names: tuple[str, ...]
    coef: np.ndarray  #: (P,)
    se: np.ndarray  #: (P,) sqrt of the diagonal of σ̂² (XᵀX)⁻¹
    t: np.ndarray  #: (P,) coef / se
    p: np.ndarray  #: (P,) two-sided, Student t with n − P degrees of freedom
    r2: float
    n: int


def ols(y: np.ndarray, X: np.ndarray, names: Sequence[str]) -> OLSResult:
    """Fit ``y = X β + ε`` by least squares (``X`` includes the intercept column if one is wanted).

    Parameters
    ----------
    y : np.ndarray
        ``(n,)`` response.
    X : np.ndarray
        ``(n, P)`` design matrix of full column rank.
    names : sequence of str
        ``P`` column names.

    Returns
    -------
    OLSResult
        Coefficients, standard errors ``√diag(σ̂² (XᵀX)⁻¹)`` with ``σ̂² = RSS / (n − P)``, t and p-values, R².

    Raises
    ------
    ValueError
        If shapes disagree, ``n <= P`` or ``X`` is rank deficient.
    """
    y, X = np.asarray(y, dtype=float), np.asarray(X, dtype=float)
    n, P = X.shape
    if y.shape != (n,) or len(names) != P:
        raise ValueError(f"y must be ({n},) and names {P} long, got {y.shape} and {len(names)}.")
    if n <= P or np.linalg.matrix_rank(X) < P:
        raise ValueError(f"OLS needs more rows than columns and a full-rank design: n = {n}, P = {P}.")
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    dof = n - P
    sigma2 = float(resid @ resid) / dof
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(X.T @ X)))
    t = coef / se
    p = 2 * stats.t.sf(np.abs(t), dof)
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / tss if tss > 0 else math.nan
    return OLSResult(tuple(names), coef, se, t, p, r2, n)


#: the terms of the seed's eq. 2
FCD_TERMS = ("intercept", "|LogFreqDiff|", "IoU^(1/4)", "|LogFreqDiff|*IoU^(1/4)")


def fcd_regression(pairs: PairTable) -> OLSResult:
    """Eq. 2: OLS of FCD on ``|Δ ln f|``, ``IoU^{1/4}`` and their product, with an intercept.

    Parameters
    ----------
    pairs : PairTable
        From :func:`fcd_pairs`.

    Returns
    -------
    OLSResult
        Terms named :data:`FCD_TERMS`.
    """
    d, q = pairs.abs_log_freq_diff, pairs.iou_quarter
    X = np.column_stack([np.ones_like(d), d, q, d * q])
    return ols(pairs.fcd, X, FCD_TERMS)


# ------------------------------------------------------------------------------------------- images
def per_image_spearman(unpruned: np.ndarray, pruned: np.ndarray) -> np.ndarray:
    """Spearman's ρ, per image, between two ``(N, C)`` prediction matrices (ranks over the ``C`` classes).

    Parameters
    ----------
    unpruned : np.ndarray
        ``(N, C)`` run-averaged predictions of the unpruned models.
    pruned : np.ndarray
        ``(N, C)`` run-averaged predictions of the ``k``-sparse models.

    Returns
    -------
    np.ndarray
        ``(N,)`` ρ in ``[−1, 1]``; NaN where one row is constant.
    """
    a, b = np.asarray(unpruned, dtype=float), np.asarray(pruned, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"unpruned and pruned must be the same (N, C) shape, got {a.shape} and {b.shape}.")
    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=1) / denom, np.nan)


def select_pies(rho: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Pruning-identified exemplars: the ``⌈fraction · N⌉`` images with the lowest ρ (NaN counts as lowest).

    Parameters
    ----------
    rho : np.ndarray
        ``(N,)`` from :func:`per_image_spearman`.
    fraction : float
        The bottom fraction (seed: 5 %).

    Returns
    -------
    np.ndarray
        ``(N,)`` bool, True for a PIE (ties broken by image order).

    Raises
    ------
    ValueError
        If ``fraction`` is outside ``(0, 1)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}.")
    r = np.asarray(rho, dtype=float)
    m = math.ceil(fraction * len(r))
    order = np.argsort(np.where(np.isnan(r), -np.inf, r), kind="stable")
    pies = np.zeros(len(r), dtype=bool)
    pies[order[:m]] = True
    return pies


def prevalence_ratio(labels: np.ndarray, pies: np.ndarray) -> np.ndarray:
    """Class prevalence among PIEs divided by prevalence among non-PIEs (Fig. 5 left).

    Parameters
    ----------
    labels : np.ndarray
        ``(N, C)`` 0/1 test labels.
    pies : np.ndarray
        ``(N,)`` bool from :func:`select_pies`.

    Returns
    -------
    np.ndarray
        ``(C,)``; NaN where the class is absent from non-PIEs.
    """
    y = _check_labels(labels).astype(float)
    p = np.asarray(pies, dtype=bool)
    pie, non = y[p].mean(axis=0), y[~p].mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(non > 0, pie / non, np.nan)


def disease_count_distribution(
    labels: np.ndarray, pies: np.ndarray, max_count: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of PIEs and of non-PIEs with ``d = 0, 1, …, max_count−1, max_count+`` findings (Fig. 5 right).

    Parameters
    ----------
    labels : np.ndarray
        ``(N, C)`` 0/1 test labels.
    pies : np.ndarray
        ``(N,)`` bool.
    max_count : int
        The last bin holds ``max_count`` or more findings.

    Returns
    -------
    tuple of np.ndarray
        ``(pie_fraction, non_pie_fraction, ratio)``, each ``(max_count + 1,)``; ratio NaN where non-PIEs have none.
    """
    d = np.minimum(_check_labels(labels).sum(axis=1), max_count)
    p = np.asarray(pies, dtype=bool)
    pie = np.bincount(d[p], minlength=max_count + 1) / max(int(p.sum()), 1)
    non = np.bincount(d[~p], minlength=max_count + 1) / max(int((~p).sum()), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pie, non, np.where(non > 0, pie / non, np.nan)


def pie_auroc(scores: Mapping[str, np.ndarray], pies: np.ndarray) -> dict[str, float]:
    """AUROC of each per-image uncertainty score for flagging PIEs (higher score = more likely a PIE).

    Parameters
    ----------
    scores : mapping of str to np.ndarray
        ``{name: (N,) score}``, e.g. predictive entropy, MI, ensemble disagreement (summed over classes).
    pies : np.ndarray
        ``(N,)`` bool.

    Returns
    -------
    dict of str to float
        ``{name: AUROC}``.
    """
    return {name: auroc(pies, s) for name, s in scores.items()}
