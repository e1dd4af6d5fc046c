"""The lidc_nested_unet (BN3) bundle end to end on tiny synthetic data (issue 7), and its library glue."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import verify_net_in_out

from monai_bayes.bundle import (
    NestedRunLayout,
    NestedWidthHandler,
    PipelineStep,
    ProgressPasses,
    RunLayout,
    nested_network,
    nested_pipeline_steps,
    nested_widths,
    run_nested_pipeline,
    sweep_sample_counts,
    width_sweep_markdown,
)
from monai_bayes.evaluation import WidthSweepResult
from monai_bayes.layers import nested_layers
from monai_bayes.networks import extract_width

REPO = Path(__file__).resolve().parents[2]
NESTED_BUNDLE = REPO / "bundles" / "lidc_nested_unet"
LIDC_BUNDLE = REPO / "bundles" / "lidc_sparse_bayes"
GROUPS = 4  # every converted layer of the tiny UNet (channels [4, 8, 16]) has >= 4 output channels
SAMPLES = [1, 4, 8, 16]  # the bundle default
METRICS = ("ged", "hm_iou", "sample_diversity")


@pytest.fixture
def nested_bundle(tmp_path) -> Path:
    """A copy of the bundle alone (links kept as links: the folder must not point outside itself)."""
    target = tmp_path / "lidc_nested_unet"
    shutil.copytree(
        NESTED_BUNDLE, target, symlinks=True, ignore=shutil.ignore_patterns("models", "runs", "cache", "eval")
    )
    return target


@pytest.fixture
def one_thread():
    """The tiny convolutions run ~10x faster on one thread when the cores are shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_network_def(bundle: Path, overrides: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "common.json"))
    parser.update({"bundle_root": str(bundle), **overrides})
    return parser.get_parsed_content("network_def")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _keys(rows: list[dict[str, str]], method: str) -> set[tuple[str, int]]:
    return {(r["width"], int(r["samples"])) for r in rows if r["method"] == method}


@pytest.mark.slow
def test_nested_pipeline_table_figures_resume_and_cli(nested_bundle, tiny, tmp_path, one_thread):
    runs = tmp_path / "runs"
    overrides = dict(tiny, runs_dir=str(runs), nested_groups=GROUPS)
    paths = run_nested_pipeline(nested_bundle, overrides)
    layout = NestedRunLayout(runs, GROUPS)

    # the three trained networks, BN3 cost, published model
    for ckpt in (layout.deterministic_checkpoint, layout.mc_dropout_checkpoint, layout.model_checkpoint):
        assert ckpt.is_file(), ckpt
    assert layout.mc_dropout_checkpoint == RunLayout(runs, "mc_dropout").model_checkpoint
    assert json.loads(layout.costs_file("train_nested").read_text())["flops_per_step"] > 0
    info = json.loads((nested_bundle / "models" / "model.json").read_text())
    assert info["run"] == "nested_g4" and info["groups"] == GROUPS and info["always_kept"] == 2
    models = nested_bundle / "models"
    assert (models / info["nested_checkpoint"]).read_bytes() == layout.model_checkpoint.read_bytes()
    # model.pt: the full-width posterior-mean UNet (loads strictly into network_def, for ckpt_export)
    bn3 = nested_network(_tiny_network_def(nested_bundle, overrides), GROUPS, checkpoint=layout.model_checkpoint)
    mean_net = extract_width(bn3, GROUPS)
    published = torch.load(models / "model.pt", weights_only=True)
    assert published.keys() == _tiny_network_def(nested_bundle, overrides).state_dict().keys()
    for key, value in mean_net.state_dict().items():
        torch.testing.assert_close(published[key], value, rtol=0, atol=0, msg=key)

    # table: every (width, S) of BN3 and every S of both baselines, finite values
    rows = _rows(paths["table"])
    assert _keys(rows, "BN3") == {(str(w), s) for w in range(1, GROUPS + 1) for s in SAMPLES}
    assert _keys(rows, "deterministic UNet") == _keys(rows, "MC-dropout UNet") == {("full", s) for s in SAMPLES}
    assert len(rows) == GROUPS * len(SAMPLES) + 2 * len(SAMPLES)
    for row in rows:
        assert int(row["cases"]) > 0
        for metric in METRICS:
            assert math.isfinite(float(row[f"{metric}_mean"])) and math.isfinite(float(row[f"{metric}_std"])), row
    by_key = {(r["method"], r["width"], int(r["samples"])): r for r in rows}
    for s in SAMPLES:  # one sample, or a deterministic network, has no diversity; BN3 and MC dropout do
        assert float(by_key[("deterministic UNet", "full", s)]["sample_diversity_mean"]) == 0.0
        if s > 1:
            assert float(by_key[("MC-dropout UNet", "full", s)]["sample_diversity_mean"]) > 0
            assert float(by_key[("BN3", str(GROUPS), s)]["sample_diversity_mean"]) > 0
    assert float(by_key[("BN3", "1", 1)]["sample_diversity_mean"]) == 0.0
    assert float(by_key[("BN3", "2", 4)]["width_fraction"]) == pytest.approx(0.5)
    markdown = paths["markdown"].read_text()
    assert "| BN3 | 2/4 | 50.0 | 4 |" in markdown and "| MC-dropout UNet | full |" in markdown
    for metric in METRICS:  # the Fig. 7 figures
        assert paths[metric].read_bytes()[:4] == b"\x89PNG", metric

    # the network of the evaluation config matches metadata.json (1 channel in, 2 out)
    configs = [str(nested_bundle / "configs" / f"{n}.json") for n in ("common", "nested", "evaluate_widths")]
    verify_net_in_out(
        net_id="network",
        meta_file=str(nested_bundle / "configs" / "metadata.json"),
        config_file=configs,
        device="cpu",
        bundle_root=str(nested_bundle),
        **{k: v for k, v in overrides.items() if k != "device"},
    )

    # `python -m monai.bundle run` of pipeline.json: training is skipped (resume), the evaluation reruns with
    # the given widths / samples. The CLI cannot override network_def#..., so the copy's common.json gets TINY's.
    common = json.loads((nested_bundle / "configs" / "common.json").read_text())
    common["patch_size"] = tiny["patch_size"]
    for key in ("channels", "strides", "num_res_units"):
        common["network_def"][key] = tiny[f"network_def#{key}"]
    (nested_bundle / "configs" / "common.json").write_text(json.dumps(common))
    mtimes = {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")}
    cli = {k: v for k, v in overrides.items() if "#" not in k and k != "patch_size"}
    cli |= {"widths": [2, 4], "sweep_samples": [1, 3]}
    args = [f"--{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cli.items()]
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(nested_bundle / "configs" / "pipeline.json"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [*command, "--bundle_root", str(nested_bundle), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train_nested: done already" in done.stdout + done.stderr
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")} == mtimes
    rows = _rows(paths["table"])
    assert _keys(rows, "BN3") == {(str(w), s) for w in (2, 4) for s in (1, 3)}
    assert _keys(rows, "deterministic UNet") == {("full", 1), ("full", 3)}


@pytest.mark.parametrize(
    "override, message",
    [
        ({"widths": [0, 2]}, r"widths must be .*\[1, nested_groups=4\].*\[0\]"),
        ({"widths": [2, 5]}, r"out of range or not an int: \[5\]"),
        ({"sweep_samples": [0, 4]}, r"sweep_samples must be a non-empty list of positive ints"),
        ({"nested_groups": 32}, r"layer '.*'"),  # the first conv has 4 < 32 output channels
    ],
)
def test_bad_nested_settings_fail_before_training(nested_bundle, tiny, tmp_path, override, message):
    overrides = dict(tiny, runs_dir=str(tmp_path / "runs"), nested_groups=GROUPS) | override
    with pytest.raises(ValueError, match=message):
        run_nested_pipeline(nested_bundle, overrides)
    assert not (tmp_path / "runs").exists()  # nothing was trained


def test_missing_bn3_checkpoint_names_the_step(tmp_path):
    from monai.networks.nets import UNet

    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, norm="batch")
    with pytest.raises(ValueError, match=r"missing\.pt.*does not exist; run train_nested first"):
        nested_network(net, GROUPS, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"pretrained checkpoint .*det\.pt.* does not exist"):
        nested_network(net, GROUPS, pretrained=tmp_path / "det.pt")


def test_nested_network_round_trip_leaves_network_def_alone(tmp_path):
    from monai.networks.nets import UNet

    net = UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, norm="batch")
    det = tmp_path / "det.pt"
    torch.save({"network": net.state_dict()}, det)  # as MONAI's CheckpointSaver writes it
    bn3 = nested_network(net, GROUPS, pretrained=det, prior_keep=0.8)
    assert nested_layers(bn3) and not nested_layers(net)  # a copy was converted
    with torch.no_grad():
        for _, layer in nested_layers(bn3):
            layer.order_logits.add_(torch.randn_like(layer.order_logits))
    ckpt = tmp_path / "bn3.pt"
    torch.save(bn3.state_dict(), ckpt)
    loaded = nested_network(net, GROUPS, checkpoint=ckpt)
    for key, value in bn3.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    with pytest.raises(ValueError, match=r"bn3\.pt"):  # another group count: other shapes
        nested_network(net, 2, checkpoint=ckpt)


def test_width_handler_fixes_the_width_for_one_run_only():
    from ignite.engine import Engine
    from monai.networks.nets import UNet

    net = nested_network(UNet(2, 1, 2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1), GROUPS)
    seen = []
    engine = Engine(lambda e, batch: seen.append({layer.width for _, layer in nested_layers(net)}))
    NestedWidthHandler(3, network=net).attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert seen == [{3}, {3}]
    assert {layer.width for _, layer in nested_layers(net)} == {None}  # training samples its widths again
    with pytest.raises(ValueError, match="width must be a positive int"):
        NestedWidthHandler(0)


def test_default_widths_are_the_seed_fractions_and_bad_values_are_named():
    assert nested_widths(32) == [6, 8, 12, 16, 24, 32]  # seed 001 Fig. 7
    assert nested_widths(16) == [3, 4, 6, 8, 12, 16]
    assert nested_widths(4) == [1, 2, 3, 4]
    assert nested_widths(8, [8, 2, 2]) == [2, 8]
    for bad in ([], [1.5], [True], [9]):
        with pytest.raises(ValueError, match="widths must be"):
            nested_widths(8, bad)
    with pytest.raises(ValueError, match="nested_groups must be a positive int"):
        nested_widths(0)
    assert sweep_sample_counts([16, 1, 4, 4]) == [1, 4, 16]
    for bad in ([], [0], "4", [2.0]):
        with pytest.raises(ValueError, match="sweep_samples"):
            sweep_sample_counts(bad)


def test_pipeline_steps_and_layout(tmp_path):
    layout = NestedRunLayout(tmp_path, 16)
    assert layout.run_name == "nested_g16" and layout.model_checkpoint == tmp_path / "nested_g16" / "model.pt"
    assert layout.eval_dir == tmp_path / "nested_g16" / "eval"
    assert layout.deterministic_checkpoint == RunLayout(tmp_path, "deterministic").model_checkpoint
    assert layout.cost_files["train_nested"] == tmp_path / "nested_g16" / "costs_train_nested.json"
    steps = nested_pipeline_steps(layout)
    assert [s.configs for s in steps] == [
        ["train_deterministic"],
        ["train_deterministic"],
        ["nested", "train_nested"],
        ["nested", "evaluate_widths"],
    ]
    assert [s.overrides.get("method") for s in steps] == ["deterministic", "mc_dropout", None, None]
    assert [s.output for s in steps] == [
        layout.deterministic_checkpoint,
        layout.mc_dropout_checkpoint,
        layout.model_checkpoint,
        None,
    ]
    assert PipelineStep("x", "train", {}, None).configs == ["train"]
    with pytest.raises(ValueError, match="nested_groups"):
        NestedRunLayout(tmp_path, 0)


def test_progress_passes_and_markdown():
    data = [1, 2, 3]
    passes = ProgressPasses(data, "BN3 width", labels=[2, 4])
    assert len(passes) == 3 and list(passes) == data and list(passes) == data and passes.passes == 2
    result = WidthSweepResult("BN3", 4, [2, 4], [1])
    result.values = {m: {(w, 1): torch.tensor([0.5, 0.7]) for w in (2, 4)} for m in METRICS}
    base = WidthSweepResult("deterministic UNet", None, [None], [1])
    base.values = {m: {(None, 1): torch.tensor([float("nan"), 0.2])} for m in METRICS}
    table = width_sweep_markdown([result, base])
    assert "| BN3 | 2/4 | 50.0 | 1 | 2 | 0.6000 ± 0.1000 |" in table
    assert "| deterministic UNet | full | 100.0 | 1 | 1 | 0.2000 ± 0.0000 |" in table


def test_shared_configs_are_the_lidc_ones():
    """Real copies of the LIDC configs; common.json differs only by the nested bundle's own lr_schedule."""
    for name in ("common.json", "train_deterministic.json", "logging.conf"):
        path = NESTED_BUNDLE / "configs" / name
        assert not path.is_symlink(), name
        if name != "common.json":
            assert path.read_bytes() == (LIDC_BUNDLE / "configs" / name).read_bytes(), name
    nested_common = json.loads((NESTED_BUNDLE / "configs" / "common.json").read_text())
    lidc_common = json.loads((LIDC_BUNDLE / "configs" / "common.json").read_text())
    assert {k for k in lidc_common if nested_common.get(k) != lidc_common[k]} <= {"lr_schedule"}
    assert list(nested_common) == list(lidc_common) and nested_common["lr_schedule"] == "constant"
    meta = json.loads((NESTED_BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "monai_version", "pytorch_version", "task", "description", "network_data_format"):
        assert meta[key], key
    nested = json.loads((NESTED_BUNDLE / "configs" / "nested.json").read_text())
    evaluate = json.loads((NESTED_BUNDLE / "configs" / "evaluate_widths.json").read_text())
    assert meta["monai_bayes"]["groups"] == nested["nested_groups"]
    assert meta["monai_bayes"]["widths"] == nested_widths(nested["nested_groups"], evaluate["widths"])
    assert meta["monai_bayes"]["sweep_samples"] == evaluate["sweep_samples"] == SAMPLES
    assert (NESTED_BUNDLE / "LICENSE").read_text() == (REPO / "LICENSE").read_text()


def test_nested_rescale_setting_reaches_both_networks():
    """``nested_rescale`` (issue 20) is validated and builds the train and evaluate networks alike."""
    from monai.bundle import ConfigParser

    from monai_bayes.bundle.overrides import validate_overrides

    configs = Path(__file__).resolve().parents[2] / "bundles" / "lidc_nested_unet" / "configs"
    names = ("common", "nested", "train_nested", "evaluate_widths")
    validate_overrides({"nested_rescale": False}, [configs / f"{n}.json" for n in names])
    with pytest.raises(ValueError, match="nested_rescale"):
        validate_overrides({"nested_rescale": "no"}, [configs / f"{n}.json" for n in names])
    for step in ("train_nested", "evaluate_widths"):
        assert "rescale=@nested_rescale" in (configs / f"{step}.json").read_text()
    parser = ConfigParser()
    parser.read_config([str(configs / f"{n}.json") for n in ("common", "nested")])
    parser.update({"network_def#channels": [16, 32], "network_def#strides": [2], "nested_rescale": False})
    rescale = parser.get_parsed_content("nested_rescale")
    network = nested_network(parser.get_parsed_content("network_def"), 16, rescale=rescale)
    assert [layer.rescale for _, layer in nested_layers(network)] == [False] * len(nested_layers(network))
