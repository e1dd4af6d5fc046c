"""Fast checks of the bundle library functions (layout, sample counts, inputs, errors)."""

from __future__ import annotations

import pytest
import torch

from monai_bayes.bundle import (
    RunLayout,
    inference_inputs,
    num_mc_samples,
    pipeline_steps,
    posterior_mean_state_dict,
    resolve_lidc_dataset,
    run_selection,
)


def test_run_layout_paths_per_method(tmp_path):
    sparse = RunLayout(tmp_path, "sparse_bayes", 0.05)
    assert sparse.run_name == "sparse_bayes_r0.05"
    assert sparse.train_deterministic_checkpoint == tmp_path / "deterministic" / "model.pt"
    assert sparse.model_checkpoint == tmp_path / "sparse_bayes_r0.05" / "model.pt"
    assert set(sparse.cost_files) == {"train_deterministic", "train"}
    mc = RunLayout(tmp_path, "mc_dropout")
    assert mc.train_deterministic_checkpoint == mc.model_checkpoint == tmp_path / "mc_dropout" / "model.pt"
    ens = RunLayout(tmp_path, "ensemble", ensemble_size=3, member_index=2)
    assert ens.member_checkpoints[0] == ens.deterministic_checkpoint  # member 0 is the shared deterministic model
    assert ens.train_deterministic_checkpoint == tmp_path / "ensemble_members" / "member_2.pt"
    assert list(ens.cost_files) == ["member_0", "member_1", "member_2"]
    assert [s.name for s in pipeline_steps(sparse)] == ["train_deterministic", "select", "train", "evaluate"]
    assert [s.name for s in pipeline_steps(ens)] == ["train member 0", "train member 1", "train member 2", "evaluate"]
    with pytest.raises(ValueError, match="method must be one of"):
        RunLayout(tmp_path, "laplace")
    with pytest.raises(ValueError, match="r_bayes"):
        RunLayout(tmp_path, "sparse_bayes", 0.0)


def test_num_mc_samples():
    assert num_mc_samples("deterministic", 8) == 1
    assert num_mc_samples("ensemble", 8, ensemble_size=5) == 5
    assert num_mc_samples("sparse_bayes", 8) == 8


def test_inference_inputs(tmp_path):
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "a.npy").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p["image"].rsplit("/", 1)[-1] for p in inference_inputs(tmp_path)] == ["a.npy", "b.nii.gz"]
    assert inference_inputs("", lambda: [{"image": "x"}]) == [{"image": "x"}]
    with pytest.raises(ValueError, match="holds no images"):
        inference_inputs(_empty(tmp_path))
    with pytest.raises(ValueError, match="not a folder"):
        inference_inputs(tmp_path / "nope")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_posterior_mean_state_dict_drops_bayesian_extras():
    state = {"a.weight": torch.ones(2), "a.weight_rho": torch.zeros(1), "a.weight_bayes_index": torch.zeros(1)}
    assert list(posterior_mean_state_dict(state)) == ["a.weight"]


def test_resolve_lidc_dataset_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_lidc_dataset(tmp_path / "missing", tmp_path / "cache")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="holds no recognisable LIDC data"):
        resolve_lidc_dataset(tmp_path / "x.csv", tmp_path / "cache")


def test_run_selection_needs_the_deterministic_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"deterministic checkpoint .* does not exist; run the step that writes it"):
        run_selection(
            torch.nn.Conv2d(1, 2, 3), "sparse_bayes", tmp_path / "det.pt", tmp_path / "s.pt", tmp_path / "r.json"
        )
    with pytest.raises(ValueError, match="applies to \\['sparse_bayes', 'full_bayes', 'full_bayes_scratch'\\]"):
        run_selection(
            torch.nn.Conv2d(1, 2, 3), "mc_dropout", tmp_path / "det.pt", tmp_path / "s.pt", tmp_path / "r.json"
        )
