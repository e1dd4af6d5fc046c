"""The PACS pipeline on the *shipped* bundles (issue 13): trained LIDC bundle against Orthanc, the README
walkthrough as written, and the nested (BN3) bundle -- not a bundle the fixtures write themselves."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from monai_bayes.bundle import NestedRunLayout, nested_network, publish_nested_model, run_pipeline

pytestmark = [pytest.mark.pacs, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

#: tiny data and epochs; the architecture stays the shipped one, since inference.json (read alone by the
#: PACS pipeline) defines network_def itself
TINY_DATA = {
    "num_cases": 4,
    "synth_kwargs": {"shape": [16, 96, 96]},
    "patch_size": 32,
    "deterministic_epochs": 1,
    "bayes_epochs": 1,
    "batch_size": 4,
    "num_samples": 2,
    "eval_samples": 2,
    "val_samples": 2,
    "val_interval": 1,
    "device": "cpu",
}


def _copy(name: str, target: Path) -> Path:
    shutil.copytree(
        REPO / "bundles" / name, target, symlinks=True, ignore=shutil.ignore_patterns("models", "runs", "cache", "eval")
    )
    return target


@pytest.fixture(scope="module")
def trained_lidc_bundle(tmp_path_factory) -> Path:
    """The shipped LIDC bundle, copied, after its pipeline (the README main job) with tiny settings."""
    bundle = _copy("lidc_sparse_bayes", tmp_path_factory.mktemp("shipped") / "lidc_sparse_bayes")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_pipeline(bundle, TINY_DATA)
    finally:
        torch.set_num_threads(threads)
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "model_bayes.pt").is_file()
    return bundle


def _env(pacs_env: dict[str, str]) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **pacs_env,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1",
    }


def _manifest(summary: dict) -> dict:
    return json.loads((Path(summary["result_dir"]) / "manifest.json").read_text())


def _validate_outputs(summary: dict, out_dir: Path, dciodvfy) -> None:
    kinds = sorted(i["kind"] for i in summary["instances"])
    assert kinds == ["parametric_map", "parametric_map", "segmentation"]
    files = sorted(out_dir.rglob("*.dcm"))
    assert len(files) >= 3
    for path in files:
        dciodvfy(path)


def test_shipped_lidc_bundle_against_orthanc(
    trained_lidc_bundle, running_orthanc, pacs_env, ct_series, tmp_path, dciodvfy
):
    """``monai-bayes pacs run --bundle bundles/lidc_sparse_bayes`` after the main job, with a real PACS."""
    from monai_bayes.pacs import PacsClient, RetryPolicy
    from monai_bayes.pacs.credentials import Credentials

    orthanc = running_orthanc
    datasets = ct_series.datasets()
    cred = Credentials("basic", orthanc.user, orthanc.password, source="test")
    with PacsClient(orthanc.dicomweb_url, credentials=cred, retry=RetryPolicy(2, 0.05)) as client:
        client.store(datasets, str(datasets[0].StudyInstanceUID))
    study = str(datasets[0].StudyInstanceUID)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai_bayes", "pacs", "run", "--url", orthanc.dicomweb_url, "--study", study]
    cmd += ["--bundle", str(trained_lidc_bundle), "--output", str(out_dir), "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(pacs_env), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "delivered"
    _validate_outputs(summary, out_dir, dciodvfy)
    # the model named in the results is the published sparse-Bayes run (means + Bayesian extras)
    assert _manifest(summary)["model"]["method"] == "sparse_bayes"


def _walkthrough() -> str:
    """The README's PACS walkthrough: the bash block of the ``## PACS`` section."""
    section = README.read_text(encoding="utf-8").split("\n## PACS\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the PACS section should hold one bash block"
    return blocks[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_pacs_walkthrough_runs_as_written(trained_lidc_bundle, orthanc, tmp_path, dciodvfy):
    """The README commands, verbatim except the port, the temporary folders and the Orthanc install paths."""
    script = _walkthrough()
    port = _free_port()
    demo = tmp_path / "orthanc-demo"
    replacements = {
        "/tmp/orthanc-demo": str(demo),
        "/tmp/demo-ct": str(tmp_path / "demo-ct"),
        "8042": str(port),
        "/usr/sbin/Orthanc": orthanc.binary,
        "/usr/share/orthanc/plugins/libOrthancDicomWeb.so": orthanc.plugin,
        "bundles/lidc_sparse_bayes": str(trained_lidc_bundle),
        "./pacs_results": str(tmp_path / "pacs_results"),
    }
    for old, new in replacements.items():
        assert old in script, f"the walkthrough no longer mentions {old!r}; update this test"
        script = script.replace(old, new)
    # harness only: stop the walkthrough's Orthanc when the script ends
    harness = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    env = {k: v for k, v in _env({}).items() if not k.startswith("MONAI_BAYES_PACS_")}
    env["HOME"] = str(tmp_path / "home")
    done = subprocess.run(["bash", "-c", harness + script], capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    assert '"status": "delivered"' in done.stdout, done.stdout[-2000:]
    results = tmp_path / "pacs_results"
    manifests = list(results.rglob("manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["model"]["method"] == "sparse_bayes"
    assert sorted(i["kind"] for i in manifest["dicom"]) == ["parametric_map", "parametric_map", "segmentation"]
    for path in sorted(manifests[0].parent.rglob("*.dcm")):
        dciodvfy(path)


def test_shipped_nested_bundle_in_the_pacs_pipeline(ct_series, tmp_path, dciodvfy):
    """``--bundle bundles/lidc_nested_unet`` (folder input, no push): BN3 at full width, MC over its noise."""
    bundle = _copy("lidc_nested_unet", tmp_path / "lidc_nested_unet")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    network_def = parser.get_parsed_content("network_def")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    layout = NestedRunLayout(bundle / "runs", meta["monai_bayes"]["groups"])
    torch.manual_seed(0)
    bn3 = nested_network(network_def, layout.groups, always_kept=meta["monai_bayes"]["always_kept"])
    layout.model_checkpoint.parent.mkdir(parents=True)
    torch.save(bn3.state_dict(), layout.model_checkpoint)  # as train_nested writes it (untrained weights)
    publish_nested_model(bundle, layout, meta["monai_bayes"]["always_kept"], network_def=network_def)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai_bayes", "pacs", "run", "--input", str(ct_series.folder), "--no-push"]
    cmd += ["--bundle", str(bundle), "--output", str(out_dir), "--device", "cpu", "--num-samples", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env({}), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert _manifest(summary)["model"]["method"] == "nested"
    _validate_outputs(summary, out_dir, dciodvfy)
