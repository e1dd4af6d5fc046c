"""Distillation losses: ``loss(student_outputs, teacher_probs)`` with teacher samples ``(B, S, C, *sp)``.

* :class:`BDKLoss` -- ``KL(p̄_teacher ‖ softmax(z))`` (soft cross-entropy minus the teacher's entropy, so 0 at a
  perfect match) averaged over voxels, plus ``λ`` times the mean squared errors of the two regression heads
  against the teacher's total entropy ``H[p̄]`` and mutual information (GPED-style).
* :class:`EnD2Loss` -- the Dirichlet negative log-likelihood of the teacher's smoothed, heated sample
  probabilities, averaged over samples and voxels (Malinin et al. 2020); its ``temperature`` is set by
  :func:`annealed_temperature` at each epoch. Optionally plus ``λ_H`` times the squared error of the
  student's total entropy ``H[α / α_0]`` against the teacher's ``H[p̄]`` (``entropy_weight``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from monai_bayes.distill.dirichlet import concentrations, dirichlet_nll, heat_probabilities, smooth_probabilities
from monai_bayes.uncertainty import entropy, uncertainty_maps

__all__ = ["BDKLoss", "EnD2Loss", "annealed_temperature", "foreground_voxel_weights"]


def foreground_voxel_weights(teacher_mean: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """Per-voxel loss weights ``w = 1 + γ (1 − p̄_0)``: up to ``1 + γ`` where the teacher sees foreground.

    A weight that depends only on the teacher's mean leaves the per-voxel optimum of the loss (the student
    matching the teacher) unchanged; it only moves the student's capacity and gradient towards the few
    foreground voxels (lesions cover well under 1 % of a patch), as class weights do for the teacher's own
    cross-entropy.

    Parameters
    ----------
    teacher_mean : torch.Tensor
        ``(B, C, *sp)`` teacher predictive mean, class 0 = background.
    foreground_weight : float
        ``γ ≥ 0`` (0: all voxels weigh 1).

    Returns
    -------
    torch.Tensor
        ``(B, 1, *sp)`` weights, normalised to mean 1 over the batch.
    """
    weights = 1.0 + foreground_weight * (1.0 - teacher_mean[:, :1])
    return weights / weights.mean()


def _check(outputs: torch.Tensor, teacher_probs: torch.Tensor, channels: int) -> None:
    if teacher_probs.dim() != outputs.dim() + 1 or outputs.shape[0] != teacher_probs.shape[0]:
        raise ValueError(
            f"teacher_probs must be (B, S, C, *spatial) for student outputs (B, ·, *spatial) = "
            f"{tuple(outputs.shape)}, got {tuple(teacher_probs.shape)}."
        )
    if outputs.shape[1] != channels or outputs.shape[2:] != teacher_probs.shape[3:]:
        raise ValueError(
            f"student outputs {tuple(outputs.shape)} do not fit teacher samples {tuple(teacher_probs.shape)} "
            f"(expected {channels} channels and the same spatial size)."
        )


class BDKLoss(nn.Module):
    """Posterior-expectation distillation loss (module docstring).

    Parameters
    ----------
    uncertainty_weight : float
        ``λ``, weight of the two head regressions (0 trains the mean only; the heads are then meaningless).
    foreground_weight : float
        ``γ`` of :func:`foreground_voxel_weights` (0: plain voxel mean).
    """

    def __init__(self, uncertainty_weight: float = 1.0, foreground_weight: float = 0.0) -> None:
        super().__init__()
        if uncertainty_weight < 0 or foreground_weight < 0:
            raise ValueError(f"weights must be >= 0, got {uncertainty_weight}, {foreground_weight}.")
        self.uncertainty_weight = uncertainty_weight
        self.foreground_weight = foreground_weight

    def forward(self, outputs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """Scalar loss.

        Parameters
        ----------
        outputs : torch.Tensor
            ``(B, C + 2, *sp)`` student outputs (logits, total head, MI head).
        teacher_probs : torch.Tensor
            ``(B, S, C, *sp)`` teacher sample probabilities.

        Returns
        -------
        torch.Tensor
            ``mean KL + λ (MSE_total + MSE_MI)``.
        """
        c = teacher_probs.shape[2]
        _check(outputs, teacher_probs, c + 2)
        maps = uncertainty_maps(teacher_probs.float(), "softmax")
        mean = maps["mean"]
        w = foreground_voxel_weights(mean, self.foreground_weight)
        log_q = F.log_softmax(outputs[:, :c], dim=1)
        kl = (w * (torch.special.xlogy(mean, mean) - mean * log_q).sum(dim=1, keepdim=True)).mean()
        if self.uncertainty_weight == 0:
            return kl
        heads = F.softplus(outputs[:, c:])
        squared = (heads[:, :1] - maps["total"]) ** 2 + (heads[:, 1:] - maps["epistemic"]) ** 2
        return kl + self.uncertainty_weight * (w * squared).mean()


class EnD2Loss(nn.Module):
    """Ensemble Distribution Distillation loss (module docstring).

    Parameters
    ----------
    smoothing : float
        ``ε`` of the central smoothing of the teacher's probabilities (:func:`smooth_probabilities`).
    temperature : float
        Initial ``T`` (the trainer anneals it with :func:`annealed_temperature`).
    foreground_weight : float
        ``γ`` of :func:`foreground_voxel_weights` (0: plain voxel mean).
    entropy_weight : float
        ``λ_H ≥ 0``: adds ``λ_H · mean_v w_v (H[α / α_0] − H[p̄])²``, the squared error of the student's
        total-uncertainty map (entropy of its Dirichlet mean, at ``T = 1``) against the teacher's (0: off).
    """

    def __init__(
        self,
        smoothing: float = 1e-3,
        temperature: float = 1.0,
        foreground_weight: float = 0.0,
        entropy_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if temperature < 1.0:
            raise ValueError(f"temperature must be >= 1, got {temperature}.")
        if foreground_weight < 0 or entropy_weight < 0:
            raise ValueError(f"weights must be >= 0, got {foreground_weight}, {entropy_weight}.")
        self.entropy_weight = entropy_weight
        smooth_probabilities(torch.ones(1, 1, 2), smoothing)  # validates epsilon
        self.smoothing = smoothing
        self.temperature = temperature
        self.foreground_weight = foreground_weight

    def forward(self, outputs: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """Scalar loss ``mean_s,voxels −log Dir(heat(smooth(π_s), T) | exp(z / T))``.

        Parameters
        ----------
        outputs : torch.Tensor
            ``(B, C, *sp)`` student log-concentrations ``z``.
        teacher_probs : torch.Tensor
            ``(B, S, C, *sp)`` teacher sample probabilities.

        Returns
        -------
        torch.Tensor
            The mean negative log-likelihood (nats per voxel and sample), plus the entropy term if weighted.
        """
        _check(outputs, teacher_probs, teacher_probs.shape[2])
        teacher_probs = teacher_probs.float()
        probs = heat_probabilities(smooth_probabilities(teacher_probs, self.smoothing), self.temperature)
        nll = dirichlet_nll(concentrations(outputs, self.temperature), probs)  # (B, S, *sp)
        mean = teacher_probs.mean(dim=1)
        w = foreground_voxel_weights(mean, self.foreground_weight)
        loss = (w * nll).mean()
        if self.entropy_weight == 0:
            return loss
        student_total = entropy(torch.softmax(outputs, dim=1), "softmax", channel_dim=1)
        teacher_total = entropy(mean, "softmax", channel_dim=1)
        return loss + self.entropy_weight * (w * (student_total - teacher_total) ** 2).mean()


def annealed_temperature(epoch: int, max_epochs: int, initial: float, anneal_fraction: float = 0.5) -> float:
    """EnD²'s temperature schedule: linear from ``initial`` at epoch 1 to 1 after ``anneal_fraction`` of training.

    Parameters
    ----------
    epoch : int
        The current epoch, counting from 1.
    max_epochs : int
        The number of epochs.
    initial : float
        ``T_0 ≥ 1``.
    anneal_fraction : float
        Share of the epochs over which ``T`` falls to 1, in ``(0, 1]``.

    Returns
    -------
    float
        ``T`` for this epoch, ≥ 1.

    Raises
    ------
    ValueError
        For ``initial < 1`` or ``anneal_fraction`` outside ``(0, 1]``.
    """
    if initial < 1.0:
        raise ValueError(f"initial temperature must be >= 1, got {initial}.")
    if not 0.0 < anneal_fraction <= 1.0:
        raise ValueError(f"anneal_fraction must be in (0, 1], got {anneal_fraction}.")
    span = max(anneal_fraction * max_epochs, 1.0)
    progress = min(max(epoch - 1, 0) / span, 1.0)
    return initial + (1.0 - initial) * progress
