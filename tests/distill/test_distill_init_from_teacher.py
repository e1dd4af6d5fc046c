"""A student initialised from its teacher's posterior mean reproduces the mean network's logits exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import UNet

from monai_bayes.distill import build_student, init_student_from_teacher, train_student
from monai_bayes.distill.trainer import freeze_batch_norm
from monai_bayes.layers.base import stochastic_layers
from monai_bayes.networks.convert import to_full_bayes

UNET = {"spatial_dims": 2, "in_channels": 1, "channels": (4, 8), "strides": (2,), "num_res_units": 1}


def _teacher() -> tuple[UNet, torch.nn.Module]:
    """A trained-looking plain UNet (the reference: its weights are the posterior means μ) and its full-Bayes
    version (every weight N(μ, σ²))."""
    torch.manual_seed(0)
    plain = UNet(out_channels=2, norm="batch", **UNET)
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for module in plain.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return plain.eval(), to_full_bayes(copy.deepcopy(plain)).eval()


@pytest.mark.parametrize("kind", ["end2", "bdk"])
def test_student_starts_as_the_posterior_mean_network(kind: str) -> None:
    reference, teacher = _teacher()
    student = build_student(kind, 2, **UNET)
    init_student_from_teacher(student, teacher)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        outputs = student.eval()(x)
        torch.testing.assert_close(outputs[:, :2], reference(x))
    assert stochastic_layers(teacher), "the teacher itself must stay Bayesian"
    if kind == "bdk":  # the two head channels keep a fresh initialisation: not a copy of the logits, not zero
        assert outputs.shape[1] == 4
        assert outputs[:, 2:].abs().mean() > 1e-3
        assert not torch.allclose(outputs[:, 2:], outputs[:, :2])
    else:  # EnD²: closed-form total uncertainty = entropy of the mean network's softmax
        p = torch.softmax(reference(x).detach(), dim=1)
        entropy = -(p * p.log()).sum(1, keepdim=True)
        torch.testing.assert_close(student.uncertainty(x)["total"].detach(), entropy)


def test_init_from_teacher_rejects_other_widths() -> None:
    _, teacher = _teacher()
    narrow = build_student("end2", 2, **(UNET | {"channels": (2, 4)}))
    with pytest.raises(ValueError, match="cannot hold teacher shape"):
        init_student_from_teacher(narrow, teacher)
    deeper = build_student("end2", 2, **(UNET | {"num_res_units": 2}))
    with pytest.raises(ValueError, match="differ in tensors"):
        init_student_from_teacher(deeper, teacher)


def _norm_statistics(module: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var"))]


def test_frozen_batch_norm_keeps_the_teacher_statistics() -> None:
    _, teacher = _teacher()
    student = build_student("end2", 2, **UNET)
    init_student_from_teacher(student, teacher)
    stats, weights = _norm_statistics(student), [p.clone() for p in student.parameters()]
    x = torch.randn(4, 1, 16, 16) * 3 + 1  # statistics far from the copied running ones
    hooks = freeze_batch_norm(student)
    student.train()
    with torch.no_grad():  # in train mode a frozen layer normalises with its running statistics, as in eval
        frozen_train = student(x)
        torch.testing.assert_close(frozen_train, student.eval()(x))
    for hook in hooks:
        hook.remove()
    train_student(
        student,
        torch.nn.Conv2d(1, 2, 1),
        [{"image": x}],
        num_samples=2,
        max_epochs=2,
        batch_size=2,
        batch_norm_frozen=True,
    )
    for before, after in zip(stats, _norm_statistics(student), strict=True):
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(weights, student.parameters()))
    student.train()(x)  # the hooks are gone after training: a train-mode pass updates the statistics again
    assert any(not torch.equal(a, b) for a, b in zip(stats, _norm_statistics(student)))
