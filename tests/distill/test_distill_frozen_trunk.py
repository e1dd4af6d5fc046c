"""EnD² student with a frozen trunk (the teacher's posterior-mean network) and a trained precision head."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.networks.nets import UNet
from scipy.stats import spearmanr

from monai_bayes.bundle import distill as bundle_distill
from monai_bayes.cli import build_parser
from monai_bayes.distill import (
    EnD2Loss,
    PrecisionHeadNetwork,
    build_student,
    distillation_loss,
    init_student_from_teacher,
    load_student,
    save_student,
    train_student,
)
from monai_bayes.networks.convert import to_full_bayes

UNET = {"spatial_dims": 2, "in_channels": 1, "channels": (4, 8), "strides": (2,), "num_res_units": 1}


def _teacher() -> tuple[UNet, torch.nn.Module]:
    """A plain UNet with non-trivial batch-norm statistics (the posterior means) and its full-Bayes version."""
    torch.manual_seed(0)
    plain = UNet(out_channels=2, norm="batch", **UNET)
    with torch.no_grad():
        for module in plain.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    teacher = to_full_bayes(copy.deepcopy(plain)).eval()
    with torch.no_grad():  # noticeable weight noise: the samples disagree, MI > 0
        for name, param in teacher.named_parameters():
            if "rho" in name:
                param.fill_(-3.0)
    return plain.eval(), teacher


def _student(teacher: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    return init_student_from_teacher(build_student("end2", 2, frozen_trunk=True, head_channels=4, **UNET), teacher)


def test_head_only_training_leaves_trunk_weights_and_statistics_bit_identical() -> None:
    reference, teacher = _teacher()
    student = _student(teacher)
    trunk = {k: v.clone() for k, v in student.trunk.state_dict().items()}  # weights and BN buffers
    head = {k: v.clone() for k, v in student.network.head.state_dict().items()}
    x = torch.randn(4, 1, 16, 16) * 3 + 1  # batch statistics far from the running ones
    train_student(student, teacher, [{"image": x}], num_samples=4, max_epochs=3, batch_size=2, lr=1e-2)
    after = student.trunk.state_dict()
    assert after.keys() == trunk.keys() and any("running_var" in k for k in trunk)
    for key, value in trunk.items():
        assert torch.equal(after[key], value), key
    assert any(not torch.equal(v, student.network.head.state_dict()[k]) for k, v in head.items())
    student.train()  # the trainer's train(): the trunk stays in eval mode
    assert student.network.head.training and not student.trunk.training
    with torch.no_grad():  # the trunk is still the posterior-mean network
        torch.testing.assert_close(student.trunk(x), reference(x))


def test_concentrations_are_precision_times_softmax() -> None:
    _, teacher = _teacher()
    student = _student(teacher).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        logits = student.trunk(x)
        conv1, _, conv2, _, conv3 = student.network.head
        h = torch.relu(torch.nn.functional.conv2d(torch.cat([logits, x], 1), conv1.weight, conv1.bias, padding=1))
        h = torch.relu(torch.nn.functional.conv2d(h, conv2.weight, conv2.bias, padding=2, dilation=2))
        alpha0 = torch.exp(torch.nn.functional.conv2d(h, conv3.weight, conv3.bias))
        e = torch.exp(logits - logits.max(1, keepdim=True).values)
        expected = alpha0 * e / e.sum(1, keepdim=True)  # α = α_0 · softmax(logits), by hand
        maps = student.uncertainty(x)
        torch.testing.assert_close(torch.exp(student(x)), expected)
        torch.testing.assert_close(maps["mean"], e / e.sum(1, keepdim=True))
        assert maps["epistemic"].std() > 0  # the precision varies over voxels


def test_total_uncertainty_ranks_exactly_as_the_trunk_entropy() -> None:
    reference, teacher = _teacher()
    student = _student(teacher)
    x = torch.randn(3, 1, 16, 16)
    train_student(student, teacher, [{"image": x}], num_samples=4, max_epochs=2, batch_size=3, lr=1e-2)
    with torch.no_grad():
        p = torch.softmax(reference(x).double(), dim=1)  # the plain posterior-mean UNet, not the student
        own_entropy = -(p * p.log()).sum(1)
        total = student.eval().uncertainty(x)["total"][:, 0].double()
    foreground = p.argmax(1) > 0
    assert foreground.sum() > 20
    rho = spearmanr(own_entropy[foreground].numpy(), total[foreground].numpy()).statistic
    assert rho == pytest.approx(1.0, abs=1e-12)


def test_frozen_trunk_save_load_round_trip(tmp_path) -> None:
    _, teacher = _teacher()
    student = _student(teacher).eval()
    path = save_student(student, tmp_path / "student.pt")
    loaded = load_student(path)
    assert isinstance(loaded.network, PrecisionHeadNetwork) and loaded.frozen_trunk
    assert loaded.network.settings == {"hidden_channels": 4}
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), student(x), rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.trunk.parameters())
    with pytest.raises(ValueError, match="EnD²"):
        build_student("bdk", 2, frozen_trunk=True, **UNET)


def test_cli_frozen_trunk_reaches_the_trainer(monkeypatch) -> None:
    seen = {}

    def fake_run(bundle_root, kind, **kwargs):
        seen.update(kwargs, kind=kind)
        return {"kind": kind, "spearman_total": 1.0, "timing": {}}

    monkeypatch.setattr(bundle_distill, "distill_bundle_run", fake_run)
    argv = ["distill", "b", "--kind", "end2", "--frozen-trunk", "--head-channels", "8"]
    args = build_parser(argv).parse_args(argv)
    assert args.func(args) == 0
    assert seen["frozen_trunk"] is True and seen["head_channels"] == 8 and seen["kind"] == "end2"
    argv = ["distill", "b", "--kind", "end2"]
    args = build_parser(argv).parse_args(argv)
    args.func(args)
    assert seen["frozen_trunk"] is False


def test_end2_entropy_term_is_the_weighted_squared_entropy_error() -> None:
    torch.manual_seed(0)
    outputs = torch.randn(2, 3, 4, 4)
    probs = torch.distributions.Dirichlet(torch.full((3,), 2.0)).sample((2, 5, 4, 4)).permute(0, 1, 4, 2, 3)
    plain = EnD2Loss(foreground_weight=3.0)(outputs, probs)
    with_term = EnD2Loss(foreground_weight=3.0, entropy_weight=2.0)(outputs, probs)
    q = outputs.double().softmax(1)
    mean = probs.double().mean(1)
    h_student = -(q * q.log()).sum(1)
    h_teacher = -(mean * mean.log()).sum(1)
    w = 1 + 3.0 * (1 - mean[:, 0])
    w = w / w.mean()
    expected = 2.0 * (w * (h_student - h_teacher) ** 2).mean()
    torch.testing.assert_close((with_term - plain).double(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="EnD²"):
        distillation_loss("bdk", entropy_weight=1.0)
