"""Training a student on a teacher's samples with MONAI's :class:`~monai.engines.SupervisedTrainer`.

The trainer's ``prepare_batch`` is :class:`~monai_bayes.distill.teacher.TeacherBatch` (cached teacher samples,
or the teacher run on each batch), its ``loss_function`` a :class:`~monai_bayes.distill.losses.BDKLoss` or
:class:`~monai_bayes.distill.losses.EnD2Loss`; for EnD² an epoch-start event sets the loss's temperature by
:func:`~monai_bayes.distill.losses.annealed_temperature`. Handlers (checkpointing, validation, stats) attach as
to any MONAI trainer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.transforms import Compose, RandFlipd, RandRotate90d
from torch import nn

from monai_bayes.distill.losses import BDKLoss, EnD2Loss, annealed_temperature
from monai_bayes.distill.student import DistilledStudent, DistillKind
from monai_bayes.distill.teacher import TEACHER_KEY, TeacherBatch, cache_teacher_samples, teacher_inferer

__all__ = ["distillation_loss", "distillation_trainer", "train_student"]


def distillation_loss(
    kind: DistillKind | str,
    initial_temperature: float = 2.5,
    foreground_weight: float = 0.0,
    entropy_weight: float = 0.0,
) -> nn.Module:
    """The loss of a student kind: ``BDKLoss`` or ``EnD2Loss(temperature=initial_temperature)``.

    Parameters
    ----------
    kind : DistillKind or str
        ``"bdk"`` or ``"end2"``.
    initial_temperature : float
        ``T_0`` for EnD² (ignored for BDK).
    foreground_weight : float
        ``γ`` of :func:`~monai_bayes.distill.losses.foreground_voxel_weights`.
    entropy_weight : float
        EnD² only: ``λ_H`` of :class:`~monai_bayes.distill.losses.EnD2Loss` (total-entropy matching term).

    Returns
    -------
    nn.Module
        The loss.

    Raises
    ------
    ValueError
        For an ``entropy_weight`` with a BDK student (its total-entropy head already regresses ``H[p̄]``).
    """
    if DistillKind(kind) == DistillKind.END2:
        return EnD2Loss(
            temperature=initial_temperature, foreground_weight=foreground_weight, entropy_weight=entropy_weight
        )
    if entropy_weight:
        raise ValueError("entropy_weight is an EnD² option; a BDK student regresses H[p̄] with its own head.")
    return BDKLoss(foreground_weight=foreground_weight)


def distillation_trainer(
    student: DistilledStudent,
    loader: Iterable[Mapping[str, Any]],
    *,
    prepare_batch: TeacherBatch,
    loss: nn.Module | None = None,
    max_epochs: int = 20,
    lr: float = 1e-3,
    device: torch.device | str = "cpu",
    initial_temperature: float = 2.5,
    anneal_fraction: float = 0.5,
    handlers: Sequence[Any] = (),
) -> SupervisedTrainer:
    """A MONAI trainer distilling the teacher behind ``prepare_batch`` into ``student`` (Adam).

    Adam gets the parameters that require gradients only: a frozen-trunk student
    (:class:`~monai_bayes.distill.student.PrecisionHeadNetwork`) trains its precision head, nothing else.

    Parameters
    ----------
    student : DistilledStudent
        The network to train.
    loader : Iterable of Mapping
        Batches with ``"image"`` and, when cached, ``"teacher"``.
    prepare_batch : TeacherBatch
        Gives ``(image, teacher_probs)``.
    loss : nn.Module, optional
        Default :func:`distillation_loss` of the student's kind.
    max_epochs : int
        Epochs.
    lr : float
        Adam learning rate.
    device : torch.device or str
        Training device.
    initial_temperature, anneal_fraction : float
        EnD²'s temperature schedule (:func:`annealed_temperature`); unused for BDK.
    handlers : Sequence
        MONAI / Ignite handlers with ``attach(engine)``.

    Returns
    -------
    SupervisedTrainer
        Ready to ``run()``.
    """
    device = torch.device(device)
    loss = loss if loss is not None else distillation_loss(student.kind, initial_temperature)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=student.to(device),
        optimizer=torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr),
        loss_function=loss,
        prepare_batch=prepare_batch,
        train_handlers=list(handlers) or None,
    )
    if isinstance(loss, EnD2Loss):

        def _anneal(engine: Engine) -> None:
            loss.temperature = annealed_temperature(
                engine.state.epoch, int(engine.state.max_epochs or 1), initial_temperature, anneal_fraction
            )

        trainer.add_event_handler(Events.EPOCH_STARTED, _anneal)
    return trainer


def _augmentation(spatial_dims: int) -> Compose:
    keys = ["image", TEACHER_KEY]
    flips = [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    return Compose([*flips, RandRotate90d(keys=keys, prob=0.5, spatial_axes=(0, 1))])


def _keep_eval(module: nn.Module, _inputs: Any) -> None:
    module.training = False


def freeze_batch_norm(network: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Make every batch-norm layer of ``network`` normalise with, and keep, its running statistics.

    A forward pre-hook sets the layer to eval mode before each call, whatever ``network.train()`` set (MONAI's
    trainer calls it every iteration): the layer uses its stored mean / variance and never updates them, while
    its affine weights still train.

    Parameters
    ----------
    network : nn.Module
        The network whose ``nn.modules.batchnorm._BatchNorm`` layers to freeze.

    Returns
    -------
    list of torch.utils.hooks.RemovableHandle
        One per layer; ``handle.remove()`` undoes the freeze.
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return [m.register_forward_pre_hook(_keep_eval) for m in norms]


def train_student(
    student: DistilledStudent,
    teacher: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    num_samples: int = 8,
    max_epochs: int = 20,
    batch_size: int = 10,
    lr: float = 1e-3,
    device: torch.device | str = "cpu",
    augment: bool = True,
    seed: int = 0,
    initial_temperature: float = 2.5,
    anneal_fraction: float = 0.5,
    foreground_weight: float = 0.0,
    handlers: Sequence[Any] = (),
    batch_norm_frozen: bool = False,
    entropy_weight: float = 0.0,
) -> DistilledStudent:
    """Cache ``S`` teacher samples per image, then train ``student`` on them (with flips / 90° rotations).

    Parameters
    ----------
    student : DistilledStudent
        The network to train (in place); a frozen-trunk student (``build_student(..., frozen_trunk=True)``)
        trains its precision head only (trunk weights and batch-norm statistics stay as they are).
    teacher : nn.Module
        Any network :class:`~monai_bayes.inferers.MonteCarloInferer` can sample.
    batches : Iterable of Mapping
        Unlabelled (or labelled; labels are ignored) batches with ``"image"`` ``(B, C_in, *sp)``.
    num_samples : int
        ``S`` teacher samples per image.
    max_epochs, batch_size, lr : int, int, float
        Training settings.
    device : torch.device or str
        Where teacher and student run.
    augment : bool
        Random flips along each spatial axis and 90° rotations, applied to image and samples alike.
    seed : int
        Seed of the teacher's noise and of the training shuffles / augmentation.
    initial_temperature, anneal_fraction : float
        EnD²'s temperature schedule.
    foreground_weight : float
        ``γ`` of :func:`~monai_bayes.distill.losses.foreground_voxel_weights`.
    handlers : Sequence
        Extra trainer handlers.
    batch_norm_frozen : bool
        Keep the student's batch-norm statistics as they are (:func:`freeze_batch_norm`), e.g. those copied from
        the teacher by :func:`~monai_bayes.distill.init_student_from_teacher`.
    entropy_weight : float
        EnD² only: ``λ_H``, weight of the total-entropy matching term of
        :class:`~monai_bayes.distill.losses.EnD2Loss` (0: the plain Dirichlet NLL).

    Returns
    -------
    DistilledStudent
        ``student``, trained, in eval mode.
    """
    items = cache_teacher_samples(teacher, teacher_inferer(num_samples, seed), batches, device)
    spatial_dims = items[0]["image"].dim() - 1 if items else 2
    dataset = Dataset(items, transform=_augmentation(spatial_dims) if augment else None)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, generator=generator)
    if isinstance(dataset.transform, Compose):
        dataset.transform.set_random_state(seed=seed)
    trainer = distillation_trainer(
        student,
        loader,
        prepare_batch=TeacherBatch(student.num_classes),
        loss=distillation_loss(student.kind, initial_temperature, foreground_weight, entropy_weight),
        max_epochs=max_epochs,
        lr=lr,
        device=device,
        initial_temperature=initial_temperature,
        anneal_fraction=anneal_fraction,
        handlers=handlers,
    )
    hooks = freeze_batch_norm(student) if batch_norm_frozen else []
    try:
        trainer.run()
    finally:
        for hook in hooks:
            hook.remove()
    return student.eval()
