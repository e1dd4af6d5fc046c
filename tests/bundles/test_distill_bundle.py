"""``monai-bayes distill``: command line and the errors before any training."""

from __future__ import annotations

import pytest

from monai_bayes.bundle.distill import _parse_set, distill_bundle_run
from monai_bayes.cli import build_parser


def test_distill_command_parses() -> None:
    argv = ["distill", "b", "--kind", "end2", "--set", "patch_size=64", "--set", "method=mc_dropout", "--epochs", "3"]
    args = build_parser(argv).parse_args(argv)
    assert args.kind == "end2" and args.epochs == 3 and args.num_samples == 8
    assert _parse_set(args.set) == {"patch_size": 64, "method": "mc_dropout"}
    with pytest.raises(SystemExit):
        build_parser(["distill"]).parse_args(["distill", "b", "--kind", "kd"])


def test_distill_needs_a_trained_run_and_known_settings(lidc_bundle) -> None:
    with pytest.raises(ValueError, match=r"model\.pt: no trained model"):
        distill_bundle_run(lidc_bundle, "bdk", overrides={"patch_size": 64})
    with pytest.raises(ValueError, match="patch_sise"):
        distill_bundle_run(lidc_bundle, "bdk", overrides={"patch_sise": 64})
    with pytest.raises(ValueError, match="kind"):
        distill_bundle_run(lidc_bundle, "kd")


def test_distill_command_init_from_teacher_options() -> None:
    argv = ["distill", "b", "--kind", "end2", "--init-from-teacher", "--freeze-batch-norm", "--epochs", "0"]
    args = build_parser(argv).parse_args(argv)
    assert args.init_from_teacher and args.freeze_batch_norm and args.epochs == 0
    assert args.initial_temperature == 2.5
    plain = build_parser(argv[:3]).parse_args(argv[:4])
    assert not plain.init_from_teacher and not plain.freeze_batch_norm
