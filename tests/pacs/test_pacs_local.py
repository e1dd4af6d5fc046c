"""Pipeline semantics without a PACS: reuse, determinism, crash safety, bad inputs, CLI, bundle config."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pydicom
import pytest

from monai_bayes.cli import main
from monai_bayes.pacs import DicomInferenceSettings, load_inference_bundle, load_result, run_pipeline
from monai_bayes.pacs.errors import EXIT_CONFIG, EXIT_DATA, EXIT_NOT_FOUND


def _stages():
    seen: list[str] = []
    return seen, seen.append


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class CrashError(RuntimeError):
    """Stands in for a crash (kill, power loss) at a given stage."""


def test_rerun_reuses_result_and_force_recomputes_identically(tiny_bundle, ct_series, tmp_path):
    seen, hook = _stages()
    first = run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path, push=False, on_stage=hook)
    assert not first.reused and first.status == "local" and first.exit_code == 0
    assert seen == ["bundle-loaded", "input-read", "inference-done", "outputs-written"]

    seen2, hook2 = _stages()
    again = run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path, push=False, on_stage=hook2)
    assert again.reused and "inference-done" not in seen2 and "result-reused" in seen2
    assert again.result.directory == first.result.directory

    before = {i.sop_instance_uid: (first.result.directory / i.file).read_bytes() for i in first.result.instances}
    forced = run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path, push=False, force=True)
    assert not forced.reused
    after = {i.sop_instance_uid: (forced.result.directory / i.file) for i in forced.result.instances}
    assert set(after) == set(before), "same input + model + settings must give the same UIDs"
    for uid, path in after.items():
        new, old = pydicom.dcmread(path), pydicom.dcmread(pydicom.filebase.DicomBytesIO(before[uid]))
        pixel = "FloatPixelData" if "FloatPixelData" in new else "PixelData"
        assert new[pixel].value == old[pixel].value, f"{path.name}: pixel data differ between runs"


def test_other_settings_or_model_give_other_uids(tiny_bundle, ct_series, tmp_path):
    base = run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path, push=False).result
    other = run_pipeline(
        tiny_bundle,
        input_dir=ct_series.folder,
        output_dir=tmp_path,
        push=False,
        settings=DicomInferenceSettings(threshold=0.3, num_samples=3),
    ).result
    assert other.fingerprint != base.fingerprint
    assert not {i.sop_instance_uid for i in other.instances} & {i.sop_instance_uid for i in base.instances}
    assert other.manifest["model"]["num_samples"] == 3


def test_crash_before_publishing_leaves_nothing(tiny_bundle, ct_series, tmp_path, monkeypatch):
    def crash_at(stage):
        if stage == "inference-done":
            raise CrashError(stage)

    with pytest.raises(CrashError):
        run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path / "a", push=False, on_stage=crash_at)
    assert _files_under(tmp_path / "a") == []

    # a failure while the result is being written (after the SEG, during the NIfTI files)
    import monai_bayes.pacs.results as results

    calls = []

    def failing_nifti(path, array, volume):
        calls.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results, "write_nifti", failing_nifti)
    with pytest.raises(OSError, match="No space left"):
        run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path / "b", push=False)
    assert calls, "the writer was reached"
    assert _files_under(tmp_path / "b") == [], "no half-written result may remain"


def test_crash_after_publishing_keeps_the_result(tiny_bundle, ct_series, tmp_path):
    def crash_at(stage):
        if stage == "outputs-written":
            raise CrashError(stage)

    with pytest.raises(CrashError):
        run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path, push=False, on_stage=crash_at)
    [manifest] = list((tmp_path / "results").rglob("manifest.json"))
    assert load_result(manifest.parent) is not None
    seen, hook = _stages()
    again = run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=tmp_path, push=False, on_stage=hook)
    assert again.reused and "inference-done" not in seen


# ------------------------------------------------------------------------------------ bad input, CLI
def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def _write(datasets, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, ds in enumerate(datasets):
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    return folder


def test_cli_local_run_prints_summary(tiny_bundle, ct_series, tmp_path, capsys):
    rc, out, err = _run_cli(
        ["pacs", "run", "--bundle", str(tiny_bundle), "--input", str(ct_series.folder), "--output", str(tmp_path)],
        capsys,
    )
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["status"] == "local" and summary["outbox_entry"] is None
    assert [i["kind"] for i in summary["instances"]] == ["segmentation", "parametric_map", "parametric_map"]
    assert Path(summary["result_dir"]).is_dir()
    assert ct_series.patient_id not in out + err


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing-folder", EXIT_NOT_FOUND, "input folder not found"),
        ("mr-series", EXIT_DATA, "Modality 'MR'"),
        ("corrupt-instance", EXIT_DATA, "cannot decode pixel data"),
        ("two-series", EXIT_DATA, "expected exactly one CT series, found 2"),
        ("missing-bundle", EXIT_CONFIG, "bundle folder not found"),
    ],
)
def test_cli_bad_input_fails_clearly_and_writes_nothing(
    case, code, message, tiny_bundle, ct_series, clone, tmp_path, capsys
):
    bundle, folder = str(tiny_bundle), tmp_path / "input"
    if case == "missing-folder":
        folder = tmp_path / "does-not-exist"
    elif case == "mr-series":
        _write(clone(ct_series.datasets(), "mr", Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4"), folder)
    elif case == "corrupt-instance":
        datasets = clone(ct_series.datasets(), "corrupt")
        datasets[5].PixelData = datasets[5].PixelData[: len(datasets[5].PixelData) // 2]  # truncated
        _write(datasets, folder)
        message = f"{folder / '005.dcm'}: cannot decode pixel data"
    elif case == "two-series":
        _write(clone(ct_series.datasets(), "a"), folder / "a")
        _write(clone(ct_series.datasets(), "b"), folder / "b")
    elif case == "missing-bundle":
        shutil.copytree(ct_series.folder, folder)
        bundle = str(tmp_path / "no-bundle")
    out_dir = tmp_path / "out"
    rc, out, err = _run_cli(
        ["pacs", "run", "--bundle", bundle, "--input", str(folder), "--output", str(out_dir)], capsys
    )
    assert rc == code, err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert out == ""
    assert _files_under(out_dir) == []


def test_cli_usage_errors(tiny_bundle, tmp_path, capsys):
    rc, _, err = _run_cli(
        ["pacs", "run", "--bundle", str(tiny_bundle), "--study", "1.2.3", "--output", str(tmp_path)], capsys
    )
    assert rc == EXIT_CONFIG and "DICOMweb URL is needed" in err
    rc, _, err = _run_cli(
        [
            "pacs",
            "run",
            "--bundle",
            str(tiny_bundle),
            "--url",
            "http://u:pw-in-url@127.0.0.1:1/dicom-web",
            "--study",
            "1.2",
        ],
        capsys,
    )
    assert rc == EXIT_CONFIG and "embeds credentials" in err and "pw-in-url" not in err
    rc, _, err = _run_cli(["pacs", "run", "--bundle", str(tiny_bundle), "--input", ".", "--threshold", "2"], capsys)
    assert rc == EXIT_CONFIG and "threshold" in err


def test_cli_template_and_empty_outbox(tmp_path, capsys):
    rc, out, _ = _run_cli(["pacs", "template"], capsys)
    assert rc == 0 and json.loads(out)["pacs_settings"]["_target_"] == "monai_bayes.pacs.DicomInferenceSettings"
    rc, out, _ = _run_cli(["pacs", "outbox", "--output", str(tmp_path)], capsys)
    assert rc == 0 and json.loads(out)["pending"] == []


# ------------------------------------------------------------------------------------ bundle config
@pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")  # MONAI's trust warning for bundle configs
def test_bundle_inference_dicom_config_is_used_and_runs_as_monai_bundle(bundle_factory, ct_series, tmp_path):
    """The template as a bundle's configs/inference_dicom.json: the CLI loader reads its settings, and
    ``monai.bundle run`` with inference.json + inference_dicom.json runs the pipeline."""
    from monai.bundle import run as bundle_run

    from monai_bayes.pacs.settings import template_text

    template = json.loads(template_text())
    template["pacs_settings"]["threshold"] = 0.4
    template["pacs_settings"]["uncertainty_maps"] = ["mutual_information"]
    bundle = bundle_factory(tmp_path / "bundle", dicom_settings=template)
    loaded = load_inference_bundle(bundle)
    assert loaded.settings.threshold == 0.4 and loaded.settings.uncertainty_maps == ["mutual_information"]

    out = tmp_path / "bundle_out"
    bundle_run(
        config_file=[str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "inference_dicom.json")],
        meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle),
        pacs_input_dir=str(ct_series.folder),
        pacs_output_dir=str(out),
        pacs_push=False,
    )
    [manifest] = list(out.rglob("manifest.json"))
    data = json.loads(manifest.read_text())
    assert data["settings"]["threshold"] == 0.4
    assert [d["map"] for d in data["dicom"]] == [None, "mutual_information"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no-inferer", "missing required keys ['inferer']"),
        ("plain-inferer", "must be a monai_bayes.inferers.MonteCarloInferer"),
        ("other-architecture", "cannot instantiate 'network'"),
        ("no-checkpoint", "cannot instantiate 'network'"),
        ("bad-json", "not valid JSON"),
    ],
)
def test_invalid_bundle_is_a_config_error(damage, message, tiny_bundle, tmp_path):
    from monai_bayes.pacs import BundleError

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    path = bundle / "configs" / "inference.json"
    config = json.loads(path.read_text())
    if damage == "no-inferer":
        del config["inferer"]
    elif damage == "plain-inferer":
        config["inferer"] = {"_target_": "SimpleInferer"}
    elif damage == "other-architecture":
        config["network_def"]["out_channels"] = 3
    elif damage == "no-checkpoint":
        (bundle / "models" / "model.pt").rename(bundle / "models" / "other.pt")
    path.write_text("{not json" if damage == "bad-json" else json.dumps(config))
    with pytest.raises(BundleError, match=re.escape(message)) as info:
        load_inference_bundle(bundle)
    assert info.value.exit_code == EXIT_CONFIG
