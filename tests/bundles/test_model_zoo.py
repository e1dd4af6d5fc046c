"""Model-zoo CI checks, offline, on every shipped bundle copied alone to a temporary folder.

Written from the behaviour of Project-MONAI/model-zoo ``ci/verify_bundle.py`` (not its code): required and
preferred files, ``large_files.yml``, metadata keys of the schema version the metadata names, the version in
the changelog, ``verify_net_in_out`` with ``configs/inference.json`` alone, the inference workflow's
``check_properties``, ``ckpt_export`` of ``models/model.pt`` into ``network_def`` and loading the exported
TorchScript file. The schema itself cannot be downloaded here, so its required keys are written below.
The weights are published the way the pipelines publish them (``publish_model`` / ``publish_nested_model``)
from untrained networks with the shipped architecture -- model-zoo's CI also runs on fake weights.
"""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser, ckpt_export, create_workflow, verify_net_in_out

from monai_bayes.bundle import (
    NestedRunLayout,
    RunLayout,
    load_published_network,
    nested_network,
    publish_model,
    publish_nested_model,
)
from monai_bayes.handlers.saliency_selection import select_bayesian_weights
from monai_bayes.layers import PartialBayesLayer, stochastic_layers

REPO = Path(__file__).resolve().parents[2]
ALL_BUNDLES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
#: the bundles that publish weights and ship inference.json (the model-zoo checks below); chestmnist_bayes is an
#: experiment bundle (train, evaluate, prune, report) without published weights yet, checked in its own test file
BUNDLES = [b for b in ALL_BUNDLES if (REPO / "bundles" / b / "configs" / "inference.json").is_file()]

#: model-zoo: files every bundle needs / should have
NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")

#: required keys of meta_schema_20220324.json (the schema the metadata names), and of each tensor format
SCHEMA_20220324_REQUIRED = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "optional_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
TENSOR_FORMAT_REQUIRED = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")
SCHEMA_20220324 = "meta_schema_20220324.json"


def test_every_bundle_is_covered():
    assert BUNDLES == ["isic_sparse_bayes", "lidc_nested_unet", "lidc_sparse_bayes"]
    assert ["chestmnist_bayes", *BUNDLES] == ALL_BUNDLES


def _copy_alone(name: str, tmp_path: Path) -> Path:
    """The bundle folder copied alone (symlinks kept as links, so a link out of the bundle breaks)."""
    target = tmp_path / name
    shutil.copytree(REPO / "bundles" / name, target, symlinks=True, ignore=shutil.ignore_patterns(*_IGNORED))
    return target


_IGNORED = ("models", "runs", "cache", "eval")


def _publish_fake_weights(bundle: Path) -> None:
    """Publish an untrained model of the bundle's own architecture as its pipeline would."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    torch.manual_seed(0)
    network_def = parser.get_parsed_content("network_def")
    if meta["monai_bayes"]["method"] == "nested":
        layout = NestedRunLayout(bundle / "runs", meta["monai_bayes"]["groups"])
        always_kept = meta["monai_bayes"]["always_kept"]
        bn3 = nested_network(network_def, layout.groups, always_kept=always_kept)
        layout.model_checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(bn3.state_dict(), layout.model_checkpoint)
        publish_nested_model(bundle, layout, always_kept, network_def=network_def)
        return
    base_keys = list(network_def.state_dict())
    layout = RunLayout(bundle / "runs", "sparse_bayes", 0.01)
    select_bayesian_weights(network_def, r_bayes=0.01, method="magnitude", progress=False)
    layout.model_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network_def.state_dict(), layout.model_checkpoint)
    publish_model(bundle, layout, base_keys=base_keys)


@pytest.fixture(params=BUNDLES)
def bundle(request, tmp_path) -> Path:
    """Each shipped bundle copied alone, with weights published as by its pipeline."""
    root = _copy_alone(request.param, tmp_path)
    _publish_fake_weights(root)
    return root


def test_bundle_folder_is_self_contained(bundle):
    links = [str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_symlink()]
    assert not links, f"symlinks break a zipped / downloaded bundle: {links}"
    for name in (*NECESSARY_FILES, *PREFERRED_FILES):
        assert (bundle / name).is_file(), name
    large = yaml.safe_load((bundle / "large_files.yml").read_text())
    paths = {entry["path"] for entry in large["large_files"]}
    assert "models/model.pt" in paths
    for entry in large["large_files"]:
        assert set(entry) >= {"path", "url", "hash_val", "hash_type"}, entry
        assert entry["path"].startswith("models/") and (bundle / entry["path"]).is_file(), entry["path"]


def test_metadata_keys_match_the_named_schema(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith(SCHEMA_20220324)
    missing = [k for k in SCHEMA_20220324_REQUIRED if k not in meta]
    assert not missing, missing
    assert "required_packages_version" not in meta  # not a key of this schema version
    assert meta["version"] in meta["changelog"]
    for section in ("inputs", "outputs"):
        for tensor, fmt in meta["network_data_format"][section].items():
            absent = [k for k in TENSOR_FORMAT_REQUIRED if k not in fmt]
            assert not absent, (section, tensor, absent)


def test_verify_net_in_out_with_inference_json_alone(bundle):
    config = str(bundle / "configs" / "inference.json")
    meta = str(bundle / "configs" / "metadata.json")
    # network_def: the logits, as declared in network_data_format
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, bundle_root=str(bundle), device="cpu")
    # the Monte-Carlo network: mean probabilities + total / aleatoric / epistemic uncertainty
    declared = json.loads(Path(meta).read_text())["monai_bayes"]["inference_network_outputs"]
    assert declared["num_channels"] == 5
    verify_net_in_out(
        net_id="inference_network",
        meta_file=meta,
        config_file=config,
        bundle_root=str(bundle),
        device="cpu",
        **{"_meta_#network_data_format#outputs#pred#num_channels": declared["num_channels"]},
    )


def test_inference_workflow_properties(bundle):
    workflow = create_workflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(bundle),
    )
    assert workflow.check_properties() == []


def test_ckpt_export_of_model_pt_into_network_def(bundle):
    config = str(bundle / "configs" / "inference.json")
    exported = bundle / "models" / "verify_model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=config,
        bundle_root=str(bundle),
    )
    scripted = torch.jit.load(str(exported))
    parser = ConfigParser()
    parser.read_config(config)
    parser["bundle_root"] = str(bundle)
    reference = parser.get_parsed_content("network_def")
    reference.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    channels = json.loads((bundle / "configs" / "metadata.json").read_text())["network_data_format"]["inputs"]
    x = torch.rand(1, channels["image"]["num_channels"], 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted.eval()(x), reference.eval()(x))


def test_published_model_keeps_the_stochastic_structure(bundle):
    """model.pt (means) + the extras rebuild the stochastic network the MC inference config uses."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    network = parser.get_parsed_content("network")
    assert stochastic_layers(network), "the inference network lost its stochastic layers"
    info = json.loads((bundle / "models" / "model.json").read_text())
    source = torch.load(info["source"], weights_only=True)  # the run's own checkpoint, before publishing
    if info["method"] == "sparse_bayes":
        rebuilt = load_published_network(parser.get_parsed_content("network_def"), bundle / "models")
        assert any(isinstance(m, PartialBayesLayer) for m in rebuilt.modules())
        state = rebuilt.state_dict()
    else:  # BN3: the published nested checkpoint is the run's checkpoint
        state = torch.load(bundle / "models" / info["nested_checkpoint"], weights_only=True)
    assert state.keys() == source.keys()
    for key, value in source.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def test_inference_json_runs_alone(bundle, tmp_path):
    """``monai.bundle run`` with configs/inference.json only writes the mask and the uncertainty maps."""
    from monai.bundle import run

    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    channels = meta["network_data_format"]["inputs"]["image"]["num_channels"]
    if channels == 1:  # CT in HU, 2D NIfTI
        nib.save(nib.Nifti1Image(rng.uniform(-1000, 400, (32, 32)).astype(np.float32), np.eye(4)), inputs / "a.nii.gz")
    else:  # ISIC cache format: (3, H, W) float32 in [0, 1]
        np.save(inputs / "a.npy", rng.uniform(0, 1, (channels, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    run(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle),
        dataset_dir=str(inputs),
        output_dir=str(out),
        device="$torch.device('cpu')",
        eval_samples=2,
    )
    suffixes = {p.name.rsplit("_", 1)[-1] for p in out.glob("*.nii.gz")}
    assert {"mask.nii.gz", "total.nii.gz", "aleatoric.nii.gz", "epistemic.nii.gz"} <= suffixes


def test_inference_without_inputs_is_a_clear_error(tmp_path):
    bundle = _copy_alone("lidc_sparse_bayes", tmp_path)
    _publish_fake_weights(bundle)
    from monai.bundle import run

    with pytest.raises(RuntimeError) as info:
        run(config_file=str(bundle / "configs" / "inference.json"), bundle_root=str(bundle), device="cpu")
    assert "--dataset_dir" in str(info.value.__cause__)


def test_shared_config_copies_equal_their_source():
    sync = runpy.run_path(str(REPO / "scripts" / "sync_bundle_configs.py"))
    assert sync["differing_copies"]() == [], "run: python scripts/sync_bundle_configs.py"
    assert set(sync["SHARED_CONFIGS"]) == {"isic_sparse_bayes", "lidc_nested_unet"}


def test_a_copy_keeps_only_its_own_defaults():
    """OWN_DEFAULTS replaces the named ids of a copy and nothing else (same ids, same order); a renamed id fails."""
    sync = runpy.run_path(str(REPO / "scripts" / "sync_bundle_configs.py"))
    source_dir = REPO / "bundles" / "lidc_sparse_bayes" / "configs"
    for bundle, configs in sync["OWN_DEFAULTS"].items():
        for name, own in configs.items():
            original = json.loads((source_dir / name).read_text())
            copy = json.loads(sync["expected_copy"](source_dir / name, bundle))
            assert list(copy) == list(original)
            unchanged = {k: v for k, v in original.items() if k not in own}
            assert {k: v for k, v in copy.items() if k not in own} == unchanged
            assert {k: copy[k] for k in own} == own
    sync["OWN_DEFAULTS"]["lidc_nested_unet"]["common.json"] = {"no_such_setting": 1}
    with pytest.raises(KeyError, match="no_such_setting"):
        sync["expected_copy"](source_dir / "common.json", "lidc_nested_unet")


@pytest.mark.parametrize("name", BUNDLES)
def test_inference_json_shares_common_json_values(name):
    """Settings inference.json repeats from common.json (network, device, seed, ...) keep the same value."""
    configs = REPO / "bundles" / name / "configs"
    common = json.loads((configs / "common.json").read_text())
    inference = json.loads((configs / "inference.json").read_text())
    shared = [k for k in inference if k in common and k not in ("bundle_root", "dataset_dir", "_desc_")]
    assert {"network_def", "device", "imports"} <= set(shared)
    for key in shared:
        assert inference[key] == common[key], key
