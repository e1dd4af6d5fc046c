"""Brute-force references for the BN3 tests, written from seed 001 independently of monai_bayes.layers.nested."""

from __future__ import annotations

import itertools
import math

import numpy as np

A1, A2, A3, A4 = 0.7294, -0.2041, 0.3492, 0.5387


def chain_probability(z: tuple[int, ...], pi: list[float]) -> float:
    """p(z) of the Bernoulli chain, eq. 1, as the product of the conditionals (π_1 for the first node)."""
    prob, previous = 1.0, 1
    for i, zi in enumerate(z):
        if previous == 1:
            prob *= pi[i] if zi == 1 else 1.0 - pi[i]
        elif zi == 1:  # p(z_i = 1 | z_{i-1} = 0) = 0
            return 0.0
        previous = zi
    return prob


def ordered_masks_with_prior(pi: list[float]) -> dict[tuple[int, ...], float]:
    """All z ∈ {0, 1}^K with non-zero chain probability (the ordered masks) and their probabilities."""
    out = {}
    for z in itertools.product((0, 1), repeat=len(pi)):
        p = chain_probability(z, pi)
        if p > 0:
            out[z] = p
    return out


def phi1_bruteforce(beta: list[float], pi: list[float]) -> float:
    """Φ1 = Σ_{z ∈ V} q(z) log(q(z) / p(z)), q(v_j) = β_j (v_j = j leading ones), eq. 9 first term."""
    prior = ordered_masks_with_prior(pi)
    total = 0.0
    for z, p in prior.items():
        j = sum(z)  # tail index: number of kept nodes
        if j == 0:
            continue  # π_1 = 1: the empty mask has prior 0 and posterior 0
        q = beta[j - 1]
        total += q * math.log(q / p)
    return total


def eq17_exp_a4(log_alpha: np.ndarray) -> np.ndarray:
    """Eq. 17 (C = 0) with the exponent e^{a4}·(a2 + a3 log α)²."""
    return A1 * np.exp(-math.exp(A4) * (A2 + A3 * log_alpha) ** 2) - 0.5 * np.log1p(np.exp(-log_alpha))


def eq17_double_exponential(log_alpha: np.ndarray) -> np.ndarray:
    """Eq. 17 (C = 0) read literally from the seed's text: e^{-e^{a4 (a2 + a3 log α)²}}."""
    return A1 * np.exp(-np.exp(A4 * (A2 + A3 * log_alpha) ** 2)) - 0.5 * np.log1p(np.exp(-log_alpha))


def eq16_monte_carlo(log_alpha: float, eps: np.ndarray) -> float:
    """½ log α − E_{ε~N(1, α)} log|ε| (eq. 16 without C), from standard-normal draws ``eps``."""
    return 0.5 * log_alpha - float(np.mean(np.log(np.abs(1.0 + math.exp(0.5 * log_alpha) * eps))))


def phi2_bruteforce(beta: list[float], node_kl: list[float]) -> float:
    """Φ2 = E_{q(z)} Σ_{kept nodes j} KL_j = Σ_j β_j Σ_{k ≤ j} KL_k (τ → 0, spike component folded into the mask)."""
    return sum(b * sum(node_kl[: j + 1]) for j, b in enumerate(beta))
