"""Students learn a fixed teacher (BDK mean + heads, EnD² Dirichlet); losses, schedule, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_bayes.distill import (
    BDKLoss,
    DistilledStudent,
    EnD2Loss,
    TeacherBatch,
    annealed_temperature,
    build_student,
    dirichlet_nll,
    distillation_trainer,
    load_student,
    save_student,
    student_out_channels,
    train_student,
)
from monai_bayes.uncertainty import uncertainty_maps


def _teacher_probs() -> torch.Tensor:
    """(2, S=4, 2, 8, 8): where the image is 0 the samples agree (p_fg = 0.9), where it is 1 they disagree
    (0.1, 0.9, 0.3, 0.7: mean 0.5, high mutual information); image 2 is image 1 mirrored."""
    fg = torch.full((2, 4, 1, 8, 8), 0.9)
    disagree = torch.tensor([0.1, 0.9, 0.3, 0.7]).view(4, 1, 1, 1)
    fg[0, ..., 4:] = disagree
    fg[1, ..., :4] = disagree
    return torch.cat([1 - fg, fg], dim=2)


def _images() -> torch.Tensor:
    x = torch.zeros(2, 1, 8, 8)
    x[0, ..., 4:] = 1.0
    x[1, ..., :4] = 1.0
    return x


def _tiny(kind: str) -> DistilledStudent:
    torch.manual_seed(0)
    return build_student(kind, 2, channels=(4, 8), strides=(2,), num_res_units=0)


def _train(kind: str, epochs: int) -> tuple[DistilledStudent, torch.Tensor]:
    probs = _teacher_probs()
    batch = {"image": _images(), "teacher": probs.flatten(1, 2)}
    student = _tiny(kind)
    trainer = distillation_trainer(
        student, [batch], prepare_batch=TeacherBatch(2), max_epochs=epochs, lr=0.02, initial_temperature=2.0
    )
    trainer.run()
    return student.eval(), probs


def test_bdk_student_learns_teacher_mean_and_heads() -> None:
    student, probs = _train("bdk", 150)
    with torch.no_grad():
        maps = student.uncertainty(_images())
    teacher = uncertainty_maps(probs, "softmax")
    assert (maps["mean"] - teacher["mean"]).abs().max() < 0.08
    assert (maps["total"] - teacher["total"]).abs().mean() < 0.05
    assert (maps["epistemic"] - teacher["epistemic"]).abs().mean() < 0.05


def test_end2_student_fits_dirichlet_and_anneals() -> None:
    student, probs = _train("end2", 150)
    with torch.no_grad():
        out = student(_images())
        maps = student.maps(out)
    teacher = uncertainty_maps(probs, "softmax")
    assert (maps["mean"] - teacher["mean"]).abs().max() < 0.12
    # where the teacher's samples disagree the student's Dirichlet is wider: more epistemic uncertainty
    disagree = _images().bool()
    assert maps["epistemic"][disagree].mean() > 3 * maps["epistemic"][~disagree].mean()
    # trained NLL beats an untrained student
    with torch.no_grad():
        before = EnD2Loss()(_tiny("end2")(_images()), probs)
        after = EnD2Loss()(out, probs)
    assert after < before


def test_bdk_loss_is_kl_zero_at_match() -> None:
    probs = _teacher_probs()
    maps = uncertainty_maps(probs, "softmax")
    logits = torch.log(maps["mean"])
    heads = torch.log(torch.expm1(torch.cat([maps["total"], maps["epistemic"]], 1).clamp_min(1e-6)))
    for gamma in (0.0, 10.0):  # voxel weights that depend on the teacher only keep the optimum at the match
        assert float(BDKLoss(foreground_weight=gamma)(torch.cat([logits, heads], 1), probs)) < 1e-6
    with pytest.raises(ValueError, match="channels"):
        BDKLoss()(logits, probs)


def test_end2_loss_is_the_dirichlet_nll() -> None:
    probs = _teacher_probs()
    z = torch.randn(2, 2, 8, 8)
    nll = dirichlet_nll(torch.exp(z), (1 - 1e-3) * probs + 1e-3 / 2)
    torch.testing.assert_close(EnD2Loss()(z, probs), nll.mean())
    w = 1 + 3 * probs[:, :, 1].mean(1, keepdim=True)  # 1 + γ·(teacher's mean foreground probability)
    torch.testing.assert_close(EnD2Loss(foreground_weight=3)(z, probs), (w * nll).mean() / w.mean())


def test_temperature_schedule() -> None:
    assert annealed_temperature(1, 10, 3.0) == 3.0
    assert annealed_temperature(6, 10, 3.0) == 1.0
    assert annealed_temperature(3, 10, 3.0) == pytest.approx(3.0 - 2.0 * 2 / 5)
    with pytest.raises(ValueError):
        annealed_temperature(1, 10, 0.5)


def test_train_student_runs_teacher_through_inferer() -> None:
    torch.manual_seed(0)
    teacher = nn.Conv2d(1, 2, 1)  # a plain network: S identical samples (the inferer warns), still a teacher
    student = _tiny("bdk")
    before = [p.clone() for p in student.parameters()]
    train_student(student, teacher, [{"image": _images()}], num_samples=2, max_epochs=2, batch_size=2)
    assert not student.training
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_save_and_load_round_trip(tmp_path) -> None:
    student = _tiny("end2")
    path = save_student(student, tmp_path / "student.pt", teacher={"method": "sparse_bayes"})
    loaded = load_student(path)
    assert loaded.kind == "end2" and loaded.num_classes == 2
    assert student_out_channels("bdk", 2) == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(_images()), student.eval()(_images()))
    (tmp_path / "student.json").write_text("{}")
    with pytest.raises(ValueError, match=r"student\.json"):
        load_student(path)
