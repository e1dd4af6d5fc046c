"""The one registry of methods drives both orchestrators (issue 12 item 5)."""

from __future__ import annotations

import pytest

from monai_bayes.bundle import RunLayout, num_mc_samples, pipeline_steps
from monai_bayes.workflows import METHOD_REGISTRY, METHODS, MethodSpec, check_method, method_spec


def test_registry_entries_and_their_step_configs():
    assert METHODS[:5] == ("sparse_bayes", "deterministic", "mc_dropout", "full_bayes", "ensemble")
    expected = {
        "sparse_bayes": ("train_deterministic", "select", "train", "evaluate"),
        "full_bayes": ("train_deterministic", "select", "train", "evaluate"),
        "deterministic": ("train_deterministic", "evaluate"),
        "mc_dropout": ("train_deterministic", "evaluate"),
        "ensemble": ("train_deterministic", "evaluate"),
        "full_bayes_scratch": ("select", "train", "evaluate"),  # no step 1
        "prob_unet": ("train_prob_unet", "evaluate"),
        "ssn": ("train_ssn", "evaluate"),
        "bn3_prob_unet": ("train_prob_unet", "evaluate"),
        "bmr": ("train_deterministic", "train_bmr", "evaluate"),
        "tiered_ff": ("train_deterministic", "train_tiered_ff", "evaluate"),
        "sgmcmc": ("train_deterministic", "train_sgmcmc", "evaluate"),
    }
    assert {m: METHOD_REGISTRY[m].configs for m in METHODS} == expected


def test_unknown_method_names_the_nearest():
    with pytest.raises(ValueError, match=r"method must be one of .* got 'full_bayse'.*Did you mean 'full_bayes'"):
        check_method("full_bayse")
    assert method_spec("mc_dropout").mc_dropout


@pytest.mark.parametrize("method", METHODS)
def test_bundle_steps_follow_the_registry(tmp_path, method):
    layout = RunLayout(tmp_path, method, 0.05, ensemble_size=3)
    steps = pipeline_steps(layout)
    configs = [s.config for s in steps]
    spec = method_spec(method)
    members = 3 if spec.deterministic_output == "members" else 1
    pretrain = ["train_deterministic"] * members if spec.pretrain else []
    assert configs == pretrain + list(spec.configs[1 if spec.pretrain else 0 :])
    assert steps[-1].output is None  # evaluation always runs
    if spec.bayes_training:  # the method's own training step resumes from its final checkpoint
        assert steps[-2].output == layout.model_checkpoint
    assert num_mc_samples(method, 7, ensemble_size=3) == {"one": 1, "members": 3, "num_samples": 7}[spec.mc_samples]


def test_a_new_method_is_one_entry(tmp_path, monkeypatch):
    """E.g. a BMR-like method: a registry entry gives its run name, steps, checkpoints and sample count."""
    spec = MethodSpec("bmr", selection="saliency", bayes_training=True, uses_r_bayes=True)
    monkeypatch.setitem(METHOD_REGISTRY, spec.name, spec)
    layout = RunLayout(tmp_path, spec.name, 0.05)
    assert layout.run_name == "bmr_r0.05" and layout.reported_r_bayes == 0.05
    assert [s.config for s in pipeline_steps(layout)] == ["train_deterministic", "select", "train", "evaluate"]
    assert layout.train_deterministic_checkpoint == layout.deterministic_checkpoint  # shares step 1
    assert layout.model_checkpoint == tmp_path / "bmr_r0.05" / "model.pt"
    assert layout.cost_files.keys() == {"train_deterministic", "train"}
    assert num_mc_samples(spec.name, 4) == 4


@pytest.mark.parametrize("method", ["bmr", "tiered_ff"])
def test_own_training_config_resumes_from_the_model_checkpoint(tmp_path, method):
    """A method's own step-3 config (``train_config``) is skipped on resume once its model exists."""
    layout = RunLayout(tmp_path, method)
    step = pipeline_steps(layout)[1]
    assert step.config == method_spec(method).train_config and step.output == layout.model_checkpoint
