"""Deterministic students of a stochastic teacher: what they output, how their maps are read, on-disk format.

Two kinds (:class:`DistillKind`):

* ``"bdk"`` -- Bayesian Dark Knowledge / posterior-expectation distillation (Korattikara et al. 2015;
  Generalized Posterior Expectation Distillation, GPED, Vadera et al. 2020):
  ``C`` logits of the teacher's predictive mean plus two regression heads, the teacher's total-entropy
  and mutual-information maps (``softplus`` keeps them ≥ 0). Channels ``[z_0 … z_{C-1}, h_total, h_MI]``.
* ``"end2"`` -- Ensemble Distribution Distillation (Malinin et al. 2020): ``C`` channels ``z``, the log
  concentrations of a per-voxel Dirichlet ``α = exp(z)`` (:mod:`monai_bayes.distill.dirichlet`).

An EnD² student can also be built with a **frozen trunk** (``build_student(..., frozen_trunk=True)``): its
network is a :class:`PrecisionHeadNetwork`, a UNet trunk whose weights and batch-norm statistics never change
(meant to be the teacher's posterior-mean network, :func:`init_student_from_teacher`) plus a small trained
precision head. Its concentrations are ``α = α_0 · softmax(trunk logits)``: the Dirichlet mean, hence the total
uncertainty, is the trunk's softmax and its entropy; the head learns only the precision ``α_0``, i.e. how the
total splits into aleatoric and epistemic parts.

Either way :meth:`DistilledStudent.uncertainty` gives the mean and the total / aleatoric / epistemic maps of
one forward pass, in the layout of :func:`monai_bayes.uncertainty.uncertainty_maps`.

On disk a student is two files (:func:`save_student`): ``<name>.pt``, the state dict of its plain MONAI
network written by :func:`monai_bayes.networks.save_checkpoint` (loadable with
:func:`~monai_bayes.networks.load_checkpoint` into ``UNet(**network)``), and ``<name>.json``,
``{"kind", "num_classes", "network": {UNet keyword arguments}, ...}``; :func:`load_student` reads both. A
frozen-trunk student's ``.pt`` holds the :class:`PrecisionHeadNetwork` (``trunk.*`` = the UNet, ``head.*``) and
its sidecar adds ``"precision_head": {"hidden_channels": h}``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.layers import Conv
from monai.networks.nets import UNet
from monai.utils import StrEnum
from torch import nn
from torch.nn import functional as F

from monai_bayes.distill.dirichlet import concentrations, dirichlet_uncertainty, sample_dirichlet_probabilities
from monai_bayes.networks.checkpoint import load_checkpoint, save_checkpoint
from monai_bayes.networks.convert import to_deterministic
from monai_bayes.utils.atomic import atomic_write_json
from monai_bayes.utils.files import read_json_if_exists
from monai_bayes.utils.options import look_up

__all__ = [
    "DistillKind",
    "DistilledStudent",
    "PrecisionHeadNetwork",
    "build_student",
    "init_student_from_teacher",
    "load_student",
    "save_student",
    "student_out_channels",
]

#: extra output channels of a BDK student: the total-entropy and mutual-information heads
BDK_HEADS = 2

#: initial Dirichlet precision ``α_0`` of a fresh precision head (its last bias is ``ln`` of it)
INITIAL_PRECISION = 100.0


class DistillKind(StrEnum):
    """Which distillation a student was trained by (module docstring)."""

    BDK = "bdk"
    END2 = "end2"


def student_out_channels(kind: DistillKind | str, num_classes: int) -> int:
    """Output channels of a student network: ``C + 2`` for BDK, ``C`` for EnD².

    Parameters
    ----------
    kind : DistillKind or str
        ``"bdk"`` or ``"end2"``.
    num_classes : int
        ``C``, the teacher's classes.

    Returns
    -------
    int
        The student network's ``out_channels``.
    """
    kind = look_up("kind", kind, DistillKind)
    return num_classes + BDK_HEADS if kind == DistillKind.BDK else num_classes


class PrecisionHeadNetwork(nn.Module):
    """A frozen trunk's logits as a Dirichlet mean, with a small trained head for the precision ``α_0``.

    ``forward`` returns log-concentrations ``z = ln α_0 + log_softmax(trunk(x))``, so that EnD²'s
    ``α = exp(z) = α_0 · softmax(trunk(x))`` (:func:`~monai_bayes.distill.dirichlet.concentrations`): the
    Dirichlet mean ``α / α_0`` is the trunk's softmax. The head maps the trunk's logits and the image,
    ``(B, C + C_in, *sp)``, through a 3×3 convolution, a 3×3 convolution of dilation 2 (ReLUs between) and a
    1×1 convolution to ``ln α_0`` ``(B, 1, *sp)`` (a log, not a softplus, because the precision spans orders of
    magnitude). The trunk's parameters do not require gradients and it stays in eval mode whatever
    ``train()`` sets, so its batch-norm statistics are never updated: training moves the head only.

    Parameters
    ----------
    trunk : nn.Module
        Maps ``(B, C_in, *sp)`` to ``(B, C, *sp)`` logits (e.g. a MONAI UNet).
    num_classes : int
        ``C``.
    spatial_dims : int
        2 or 3.
    in_channels : int
        ``C_in``, the image channels.
    hidden_channels : int
        Width of the head's two hidden layers.
    """

    def __init__(
        self, trunk: nn.Module, num_classes: int, spatial_dims: int, in_channels: int, hidden_channels: int = 16
    ) -> None:
        super().__init__()
        if hidden_channels < 1:
            raise ValueError(f"hidden_channels must be >= 1, got {hidden_channels}.")
        conv = Conv[Conv.CONV, spatial_dims]
        self.trunk = trunk.requires_grad_(False)
        last = conv(hidden_channels, 1, 1)
        nn.init.constant_(last.bias, math.log(INITIAL_PRECISION))
        self.head = nn.Sequential(
            conv(num_classes + in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            conv(hidden_channels, hidden_channels, 3, padding=2, dilation=2),
            nn.ReLU(),
            last,
        )
        self.settings = {"hidden_channels": hidden_channels}
        self.trunk.eval()

    def train(self, mode: bool = True) -> PrecisionHeadNetwork:
        """Set the head's mode; the trunk stays in eval mode (fixed batch-norm statistics).

        Parameters
        ----------
        mode : bool
            Training mode of the head.

        Returns
        -------
        PrecisionHeadNetwork
            ``self``.
        """
        super().train(mode)
        self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-concentrations ``ln α_0 + log_softmax(trunk(x))``, ``(B, C, *sp)``."""
        logits: torch.Tensor = self.trunk(x)
        log_precision = self.head(torch.cat([logits.detach(), x], dim=1))
        return log_precision + F.log_softmax(logits, dim=1)


class DistilledStudent(nn.Module):
    """A deterministic network read as a BDK or EnD² student (module docstring).

    Parameters
    ----------
    network : nn.Module
        Maps ``(B, C_in, *sp)`` to ``(B, student_out_channels(kind, C), *sp)``.
    kind : DistillKind or str
        ``"bdk"`` or ``"end2"``.
    num_classes : int
        ``C``.
    settings : Mapping, optional
        The network's constructor keywords, kept for :func:`save_student`.
    """

    def __init__(
        self,
        network: nn.Module,
        kind: DistillKind | str,
        num_classes: int,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (softmax classes), got {num_classes}.")
        self.network = network
        self.kind = look_up("kind", kind, DistillKind)
        self.num_classes = num_classes
        self.settings = dict(settings or {})

    @property
    def trunk(self) -> nn.Module:
        """The UNet: :attr:`network` itself, or a :class:`PrecisionHeadNetwork`'s frozen trunk."""
        return self.network.trunk if isinstance(self.network, PrecisionHeadNetwork) else self.network

    @property
    def frozen_trunk(self) -> bool:
        """Whether the network is a :class:`PrecisionHeadNetwork` (only its head trains)."""
        return isinstance(self.network, PrecisionHeadNetwork)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(B, student_out_channels, *sp)``."""
        out: torch.Tensor = self.network(x)
        return out

    def maps(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean probabilities and uncertainty maps from raw outputs (no network call).

        Parameters
        ----------
        outputs : torch.Tensor
            ``(B, student_out_channels, *sp)`` from :meth:`forward`.

        Returns
        -------
        dict of str to torch.Tensor
            ``{"mean": (B, C, *sp), "total", "aleatoric", "epistemic": (B, 1, *sp)}`` in nats.
        """
        c = self.num_classes
        if self.kind == DistillKind.END2:
            return dirichlet_uncertainty(concentrations(outputs))
        total = F.softplus(outputs[:, c : c + 1])
        epistemic = F.softplus(outputs[:, c + 1 : c + 2])
        return {
            "mean": torch.softmax(outputs[:, :c], dim=1),
            "total": total,
            "aleatoric": (total - epistemic).clamp_min(0.0),
            "epistemic": epistemic,
        }

    def uncertainty(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass → :meth:`maps`."""
        return self.maps(self(x))

    def samples(self, x: torch.Tensor, num_samples: int, seed: int | None = None) -> torch.Tensor:
        """Probability samples ``(B, S, C, *sp)`` for sample-based metrics (GED, HM-IoU).

        EnD²: ``π_s ∼ Dir(α)`` per voxel (one forward pass, ``S`` cheap draws). BDK has no distribution over
        predictions: its predictive mean, once (``S = 1`` whatever ``num_samples``).

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C_in, *sp)`` images.
        num_samples : int
            ``S`` for EnD².
        seed : int, optional
            Seed of the Dirichlet draws.

        Returns
        -------
        torch.Tensor
            ``(B, S, C, *sp)`` probabilities.
        """
        return self.samples_from_outputs(self(x), num_samples, seed)

    def samples_from_outputs(self, outputs: torch.Tensor, num_samples: int, seed: int | None = None) -> torch.Tensor:
        """:meth:`samples` from raw outputs already computed (e.g. stitched by a sliding-window inferer).

        Parameters
        ----------
        outputs : torch.Tensor
            ``(B, student_out_channels, *sp)`` from :meth:`forward`.
        num_samples : int
            ``S`` for EnD².
        seed : int, optional
            Seed of the Dirichlet draws.

        Returns
        -------
        torch.Tensor
            ``(B, S, C, *sp)`` probabilities (BDK: ``S = 1``).
        """
        if self.kind == DistillKind.END2:
            return sample_dirichlet_probabilities(concentrations(outputs), num_samples, seed)
        return self.maps(outputs)["mean"].unsqueeze(1)


def build_student(
    kind: DistillKind | str,
    num_classes: int,
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    channels: Sequence[int] = (8, 16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    norm: str = "batch",
    frozen_trunk: bool = False,
    head_channels: int = 16,
) -> DistilledStudent:
    """A MONAI :class:`~monai.networks.nets.UNet` student with the output channels of ``kind``.

    Parameters
    ----------
    kind : DistillKind or str
        ``"bdk"`` or ``"end2"``.
    num_classes : int
        ``C``, the teacher's classes.
    spatial_dims, in_channels, channels, strides, num_res_units, norm
        MONAI UNet settings (default: half the LIDC bundle's widths).
    frozen_trunk : bool
        EnD² only: wrap the UNet (then ``C`` logits) in a :class:`PrecisionHeadNetwork` -- the UNet is frozen
        (initialise it with :func:`init_student_from_teacher`), only the precision head trains.
    head_channels : int
        Hidden width of the precision head (with ``frozen_trunk``).

    Returns
    -------
    DistilledStudent
        The untrained student.

    Raises
    ------
    ValueError
        For ``frozen_trunk`` with a BDK student.
    """
    settings: dict[str, Any] = {
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "out_channels": student_out_channels(kind, num_classes),
        "channels": [int(c) for c in channels],
        "strides": [int(s) for s in strides],
        "num_res_units": num_res_units,
        "norm": norm,
    }
    network: nn.Module = UNet(**settings)
    if frozen_trunk:
        if look_up("kind", kind, DistillKind) != DistillKind.END2:
            raise ValueError(f"frozen_trunk needs an EnD² student (kind='end2'), got kind={kind!r}.")
        network = PrecisionHeadNetwork(network, num_classes, spatial_dims, in_channels, head_channels)
    return DistilledStudent(network, kind, num_classes, settings)


def _copy_overlap(target: torch.Tensor, source: torch.Tensor, module: nn.Module, name: str) -> None:
    """Copy ``source`` into the leading block of ``target``; zero what would feed new inputs into old outputs."""
    if target.dim() != source.dim() or any(t < s for t, s in zip(target.shape, source.shape, strict=True)):
        raise ValueError(
            f"{name}: student shape {tuple(target.shape)} cannot hold teacher shape {tuple(source.shape)}."
        )
    block = tuple(slice(0, n) for n in source.shape)
    target[block] = source
    if isinstance(module, nn.modules.conv._ConvNd) and name.endswith("weight") and target.shape != source.shape:
        in_dim = 0 if module.transposed else 1
        out_dim = 1 - in_dim
        extra_inputs = [slice(None)] * target.dim()
        extra_inputs[out_dim] = slice(0, source.shape[out_dim])
        extra_inputs[in_dim] = slice(source.shape[in_dim], None)
        target[tuple(extra_inputs)] = 0.0


def init_student_from_teacher(student: DistilledStudent, teacher: nn.Module) -> DistilledStudent:
    """Initialise a same-architecture student from its teacher's posterior-mean network.

    The teacher's deterministic network (:func:`~monai_bayes.networks.convert.to_deterministic`: every Bayesian
    weight at its mean ``μ``, MC dropout removed) is copied into the student, tensor by tensor. Tensors of the
    output path that are larger in the student (a BDK student's two extra head channels) receive the teacher's
    tensor in their leading block, keep their fresh initialisation elsewhere, and the convolution weights that
    would feed the new channels into the teacher's ``C`` logit channels are set to 0. So at initialisation the
    student's first ``C`` outputs equal the posterior-mean network's logits exactly: an EnD² student's
    ``softmax(z)`` (its Dirichlet mean) is the mean network's prediction, and its closed-form total uncertainty
    is the mean network's entropy; a BDK student's heads start untrained. A frozen-trunk student
    (``build_student(..., frozen_trunk=True)``) receives the mean network in its trunk; its head is untouched.

    Parameters
    ----------
    student : DistilledStudent
        From :func:`build_student` with the teacher's spatial dims, channels, strides, residual units and norm.
    teacher : nn.Module
        A MONAI network whose posterior-mean network has the student's tensor names (e.g. the bundle's
        partial-Bayes UNet). Not modified (a copy is converted).

    Returns
    -------
    DistilledStudent
        ``student``, initialised in place.

    Raises
    ------
    ValueError
        If the tensor names differ, or a teacher tensor does not fit the student's.
    """
    mean_network = to_deterministic(teacher)
    source = mean_network.state_dict()
    target_modules = dict(student.trunk.named_modules())
    target = student.trunk.state_dict()
    if source.keys() != target.keys():
        missing = sorted(source.keys() ^ target.keys())[:5]
        raise ValueError(
            f"init from teacher: the student's and the teacher's mean network differ in tensors, e.g. {missing}; "
            "build the student with the teacher's channels, strides, residual units and norm."
        )
    with torch.no_grad():
        for key, value in target.items():
            module_name, _, tensor_name = key.rpartition(".")
            _copy_overlap(value, source[key].to(value.device, value.dtype), target_modules[module_name], tensor_name)
    return student


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_student(student: DistilledStudent, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``path`` (the network's state dict, atomically) and its ``.json`` sidecar.

    Parameters
    ----------
    student : DistilledStudent
        A student from :func:`build_student` (its ``settings`` are the UNet's keywords).
    path : str or os.PathLike
        ``<name>.pt``; the sidecar is ``<name>.json``.
    **extra
        More JSON-serialisable entries for the sidecar (e.g. the teacher's method and sample count).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If the student has no recorded network settings.
    """
    if not student.settings:
        raise ValueError("save_student needs a student with network settings (use build_student).")
    path = Path(path)
    save_checkpoint(student.network, path)
    info = {"kind": student.kind.value, "num_classes": student.num_classes, "network": student.settings}
    if isinstance(student.network, PrecisionHeadNetwork):
        info["precision_head"] = student.network.settings
    info |= extra
    atomic_write_json(_sidecar(path), info)
    return path


def load_student(path: str | os.PathLike, device: torch.device | str | None = None) -> DistilledStudent:
    """Load a student written by :func:`save_student` (``weights_only=True``).

    Parameters
    ----------
    path : str or os.PathLike
        ``<name>.pt``; ``<name>.json`` must sit next to it.
    device : torch.device or str, optional
        Where to put it.

    Returns
    -------
    DistilledStudent
        The student, in eval mode.

    Raises
    ------
    ValueError
        Naming the file, if the sidecar is missing or lacks ``kind`` / ``num_classes`` / ``network``.
    """
    path = Path(path)
    info = read_json_if_exists(_sidecar(path))
    if not isinstance(info, dict) or not {"kind", "num_classes", "network"} <= info.keys():
        raise ValueError(f"{_sidecar(path)}: expected a JSON object with kind, num_classes and network.")
    settings = info["network"]
    network: nn.Module = UNet(**settings)
    if isinstance(info.get("precision_head"), dict):
        network = PrecisionHeadNetwork(
            network,
            int(info["num_classes"]),
            int(settings["spatial_dims"]),
            int(settings["in_channels"]),
            int(info["precision_head"]["hidden_channels"]),
        )
    network = load_checkpoint(network, path)
    student = DistilledStudent(network, info["kind"], int(info["num_classes"]), settings).eval()
    return student.to(torch.device(device)) if device is not None else student
