"""The LIDC sparse-Bayes bundle end to end on tiny synthetic data (issue 6, points 1, 2, 3 and 6)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export

from monai_bayes.bundle import RunLayout, build_network, export_hu_slices, run_config, run_pipeline, run_sweep
from monai_bayes.layers import PartialBayesLayer, sampling_mode, stochastic_layers
from monai_bayes.networks import candidate_parameters


def _configs(bundle: Path, *names: str) -> list[str]:
    return [str(bundle / "configs" / f"{n}.json") for n in ("common", *names)]


@pytest.mark.slow
def test_sparse_bayes_pipeline_inference_and_bundle_checks(lidc_bundle, tiny, tmp_path):
    overrides = dict(tiny, runs_dir=str(tmp_path / "runs"))
    summary = run_pipeline(lidc_bundle, overrides)
    layout = RunLayout(tmp_path / "runs", "sparse_bayes", 0.01)

    # the three steps left their outputs; evaluation wrote per-case CSV, summary and figures
    for path in (layout.deterministic_checkpoint, layout.selected_checkpoint, layout.model_checkpoint):
        assert path.is_file(), path
    for name in ("per_case.csv", "summary.csv", "summary.json", "cases.png", "reliability.png"):
        assert (layout.eval_dir / name).is_file(), name
    metrics = summary["metrics"]
    for key in (
        "Dice",
        "IoU",
        "GED",
        "GED_hm_iou",
        "GED_sample_diversity",
        "Brier",
        "NLL",
        "ECE",
        "ECE_pooled",
        "Uncertainty",
    ):
        assert key in metrics and np.isfinite(metrics[key]["mean"]), key
    assert "ThresholdedJaccard" not in metrics  # the ISIC score is the ISIC bundle's
    assert set(summary["metric_definitions"]) >= {"ECE", "ECE_pooled"}  # the report says which ECE is which
    assert summary["mc_samples"] == tiny["eval_samples"] and summary["num_cases"] > 0
    assert summary["costs"]["train"]["flops_per_step"] > summary["costs"]["train_deterministic"]["flops_per_step"]
    selection = json.loads(layout.selection_report.read_text())
    n_bayes = sum(r["num_bayes"] for r in selection)
    assert n_bayes == summary["costs"]["train"]["parameters"]["bayesian"] > 0
    assert n_bayes == int(0.01 * sum(r["num_params"] for r in selection) + 0.5)
    per_case = (layout.eval_dir / "per_case.csv").read_text().splitlines()
    assert len(per_case) == summary["num_cases"] + 1

    # published model: models/model.pt = posterior means (loads strictly into network_def), model_bayes.pt =
    # the Bayesian extras, model.json = which run; configs/inference.json runs alone on it
    models = lidc_bundle / "models"
    assert json.loads((models / "model.json").read_text())["run"] == layout.run_name
    trained = torch.load(layout.model_checkpoint, weights_only=True)
    means = torch.load(models / "model.pt", weights_only=True)
    extras = torch.load(models / "model_bayes.pt", weights_only=True)
    assert means.keys() == _network_def(lidc_bundle, overrides).state_dict().keys()
    assert {**means, **extras}.keys() == trained.keys() and extras
    assert all(k.endswith(("_rho", "_bayes_index", "bayes_prior")) for k in extras)
    inputs = export_hu_slices(_eval_items(lidc_bundle, overrides), tmp_path / "hu_inputs")
    alone = {k: v for k, v in overrides.items() if k.startswith("network_def") or k == "eval_samples"}
    alone.update(dataset_dir=str(tmp_path / "hu_inputs"), output_dir=str(layout.inference_dir), device="cpu")
    assert inputs
    ConfigWorkflow(
        config_file=str(lidc_bundle / "configs" / "inference.json"),
        meta_file=str(lidc_bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(lidc_bundle),
        **{**alone, "device": "$torch.device('cpu')"},
    ).run()
    written = sorted(p.name for p in layout.inference_dir.glob("*.nii.gz"))
    assert written and {n.rsplit("_", 1)[-1] for n in written} == {
        "mask.nii.gz",
        "nodule.nii.gz",
        "total.nii.gz",
        "aleatoric.nii.gz",
        "epistemic.nii.gz",
    }
    case = written[0].rsplit("_", 1)[0]
    total = nib.load(layout.inference_dir / f"{case}_total.nii.gz").get_fdata()
    alea = nib.load(layout.inference_dir / f"{case}_aleatoric.nii.gz").get_fdata()
    epi = nib.load(layout.inference_dir / f"{case}_epistemic.nii.gz").get_fdata()
    np.testing.assert_allclose(total, alea + epi, atol=1e-5)
    mask = nib.load(layout.inference_dir / f"{case}_mask.nii.gz").get_fdata()
    assert set(np.unique(mask)) <= {0.0, 1.0}

    # MONAI bundle checks with inference.json alone (tests/bundles/test_model_zoo.py runs them on the shipped
    # architecture): the exported posterior-mean network equals the trained network in mean mode
    ts_path = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_path),
        ckpt_file=str(models / "model.pt"),
        meta_file=str(lidc_bundle / "configs" / "metadata.json"),
        config_file=str(lidc_bundle / "configs" / "inference.json"),
        bundle_root=str(lidc_bundle),
        **{k: v for k, v in alone.items() if k.startswith("network_def")},
    )
    scripted = torch.jit.load(str(ts_path))
    network = build_network(_network_def(lidc_bundle, overrides), "sparse_bayes", layout.model_checkpoint)
    assert any(isinstance(m, PartialBayesLayer) for m in network.modules())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad(), sampling_mode(network.eval(), "mean"):
        torch.testing.assert_close(scripted(x), network(x), rtol=1e-4, atol=1e-5)


def _eval_items(bundle: Path, overrides: dict) -> list:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_configs(bundle))
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser.get_parsed_content("eval_items")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["deterministic", "mc_dropout", "full_bayes", "ensemble"])
def test_baselines_by_method_override(lidc_bundle, tiny, tmp_path, method):
    overrides = dict(tiny, runs_dir=str(tmp_path / "runs"), method=method)
    summary = run_pipeline(lidc_bundle, overrides)
    assert summary["method"] == method and np.isfinite(summary["metrics"]["GED"]["mean"])
    layout = RunLayout(tmp_path / "runs", method, 0.01, ensemble_size=2)
    network = build_network(
        _network_def(lidc_bundle, overrides),
        method,
        layout.model_checkpoint,
        member_checkpoints=layout.member_checkpoints,
    )
    layers = stochastic_layers(network)
    if method == "deterministic":
        assert not layers and summary["mc_samples"] == 1
        assert summary["metrics"]["GED_sample_diversity"]["mean"] == pytest.approx(0.0, abs=1e-7)
    elif method == "full_bayes":
        conv_params = candidate_parameters(_network_def(lidc_bundle, overrides))  # every conv weight and bias
        assert sum(layer.num_bayes() for _, layer in layers) == sum(p.numel() for p in conv_params.values())
    elif method == "ensemble":
        assert summary["mc_samples"] == 2 and set(summary["costs"]) == {"member_0", "member_1"}
    else:
        assert layers and summary["metrics"]["GED_sample_diversity"]["mean"] > 0


def _network_def(bundle: Path, overrides: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_configs(bundle))
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser.get_parsed_content("network_def")


@pytest.mark.slow
def test_sweep_writes_table_and_figure(lidc_bundle, tiny, tmp_path):
    out = run_sweep(
        lidc_bundle,
        dict(tiny, runs_dir=str(tmp_path / "runs")),
        r_bayes_values=(0.05, 1.0),
        baselines=("deterministic",),
    )
    table = (out / "table.md").read_text()
    for run in ("sparse_bayes_r0.05", "full_bayes", "deterministic"):
        assert run in table
    header = table.splitlines()[0]
    assert "ECE (per-image mean)" in header and "ECE (pooled pixels)" in header  # which ECE is which
    assert "thresholded Jaccard" not in header  # no column of dashes for a metric no run reported
    rows = (out / "table.csv").read_text().splitlines()
    assert len(rows) == 4 and "train_flops_total" in rows[0]
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    # the deterministic model was trained once and shared by every run
    assert len(list((tmp_path / "runs" / "deterministic").glob("model.pt"))) == 1


def test_dataset_dir_without_data_names_expected_layout(lidc_bundle, tiny, tmp_path):
    empty = tmp_path / "not_lidc"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    with pytest.raises(ValueError, match=r"holds no recognisable LIDC data(.|\n)*LidcReadMessage"):
        run_config(lidc_bundle, ["train_deterministic"], dict(tiny, dataset_dir=str(empty), runs_dir=str(tmp_path)))


def test_checkpoint_of_another_network_is_a_clear_error(lidc_bundle, tiny, tmp_path):
    from monai.networks.nets import UNet

    other = tmp_path / "other.pt"
    torch.save(UNet(2, 1, 2, channels=(8, 16), strides=(2,)).state_dict(), other)
    with pytest.raises(ValueError, match=r"other\.pt.*does not match the network UNet"):
        build_network(_network_def(lidc_bundle, tiny), "deterministic", other)
