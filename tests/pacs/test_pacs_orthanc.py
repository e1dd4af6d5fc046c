"""DICOMweb round trip with a real Orthanc (acceptance criteria 1-4 of issue 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from monai_bayes.cli import main
from monai_bayes.pacs import DicomInferenceSettings, Outbox, PacsClient, RetryPolicy, run_pipeline
from monai_bayes.pacs.credentials import Credentials
from monai_bayes.pacs.errors import EXIT_AUTH, EXIT_DATA, EXIT_NOT_FOUND, EXIT_PENDING, EXIT_UNAVAILABLE

pytestmark = pytest.mark.pacs

FAST_RETRY = ["--max-attempts", "2", "--backoff", "0.05"]


def _client(orthanc) -> PacsClient:
    cred = Credentials("basic", orthanc.user, orthanc.password, source="test")
    return PacsClient(orthanc.dicomweb_url, credentials=cred, retry=RetryPolicy(2, 0.05))


def _upload(orthanc, datasets) -> str:
    with _client(orthanc) as client:
        client.store(datasets, str(datasets[0].StudyInstanceUID))
    return str(datasets[0].StudyInstanceUID)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------- acceptance 1 + 2
def test_end_to_end_round_trip(running_orthanc, pacs_env, ct_series, tiny_bundle, tmp_path, read_nifti, dciodvfy):
    """STOW a synthetic CT, run the console command, find / retrieve / read back SEG and Parametric Maps."""
    orthanc = running_orthanc
    datasets = ct_series.datasets()
    study = _upload(orthanc, datasets)
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "monai_bayes", "pacs", "run", "--url", orthanc.dicomweb_url, "--study", study]
    cmd += ["--bundle", str(tiny_bundle), "--output", str(out_dir)]
    env = {**os.environ, **pacs_env}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "delivered" and summary["study_instance_uid"] == study
    # privacy: UIDs in the logs, never the patient's name / ID or the password
    for secret in (ct_series.patient_id, ct_series.patient_name, orthanc.password):
        assert secret not in proc.stdout + proc.stderr
    assert study in proc.stderr  # the log names the study by UID

    with _client(orthanc) as client:
        series = {s.series_instance_uid: s for s in client.search_series(study)}
        seg_series = next(i["series_instance_uid"] for i in summary["instances"] if i["kind"] == "segmentation")
        pm_series = next(i["series_instance_uid"] for i in summary["instances"] if i["kind"] == "parametric_map")
        assert series[seg_series].modality == "SEG" and series[seg_series].num_instances == 1
        assert series[pm_series].num_instances == 2
        assert series[ct_series.series_instance_uid].modality == "CT"

        volume_uids = [
            str(ds.SOPInstanceUID) for ds in sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
        ]
        nifti = {k: read_nifti(Path(v)) for k, v in summary["nifti"].items()}
        for inst in summary["instances"]:
            ds = client.retrieve_instance(study, inst["series_instance_uid"], inst["sop_instance_uid"])
            path = tmp_path / f"retrieved_{inst['kind']}_{inst['map']}.dcm"
            ds.save_as(path, enforce_file_format=True)
            dciodvfy(path)  # acceptance 2: no errors in what the PACS hands out
            assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
            assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series.series_instance_uid
            if inst["kind"] == "segmentation":
                seg = hd.seg.Segmentation.from_dataset(ds)
                mask = seg.get_pixels_by_source_instance(volume_uids, assert_missing_frames_are_empty=True)[..., 0]
                np.testing.assert_array_equal(mask.astype(bool), nifti["segmentation"].astype(bool))
                assert mask.any()
            else:
                pm = hd.pm.ParametricMap.from_dataset(ds)
                values = pm.get_pixels_by_source_instance(volume_uids, dtype=np.float32)
                np.testing.assert_array_equal(values, nifti[inst["map"]])

    # re-running delivers the same UIDs again: Orthanc keeps one copy of each (idempotent push)
    count = orthanc.count_instances()
    rc = main(
        [
            "pacs",
            "run",
            "--url",
            orthanc.dicomweb_url,
            "--study",
            study,
            "--bundle",
            str(tiny_bundle),
            "--output",
            str(tmp_path / "out2"),
        ]
    )  # fresh output folder: computed again, sent again
    assert rc == 0
    assert orthanc.count_instances() == count
    for inst in summary["instances"]:
        assert len(orthanc.instances_of_sop(inst["sop_instance_uid"])) == 1


# ------------------------------------------------------------------------------- acceptance 3
def test_pacs_down_mid_run_then_flush_delivers_exactly_once(
    running_orthanc, pacs_env, ct_series, clone, tiny_bundle, tmp_path, capsys
):
    orthanc = running_orthanc
    study = _upload(orthanc, clone(ct_series.datasets(), "outage"))
    out_dir = tmp_path / "out"

    def stop_orthanc(stage):
        if stage == "outputs-written":
            orthanc.stop()

    settings = DicomInferenceSettings(max_attempts=2, backoff_s=0.05)
    outcome = run_pipeline(
        tiny_bundle,
        url=orthanc.dicomweb_url,
        study_instance_uid=study,
        output_dir=out_dir,
        settings=settings,
        on_stage=stop_orthanc,
    )
    assert not orthanc.is_running()
    assert outcome.status == "pending" and outcome.exit_code == EXIT_PENDING
    box = Outbox(out_dir / "outbox")
    [entry] = box.entries()
    assert entry.attempts == 1 and "unreachable" in entry.last_error
    assert sorted(p.name for p in entry.files()) == ["pm_mutual_information.dcm", "pm_total_entropy.dcm", "seg.dcm"]

    # still down: flush keeps it, exit 75
    rc, out, err = _run_cli(
        ["pacs", "flush-outbox", "--output", str(out_dir), "--url", orthanc.dicomweb_url, *FAST_RETRY], capsys
    )
    assert rc == EXIT_PENDING and json.loads(out)["pending"] == [entry.entry_id]
    assert box.entries()[0].attempts == 2

    orthanc.start()
    before = orthanc.count_instances()
    rc, out, err = _run_cli(["pacs", "flush-outbox", "--output", str(out_dir), "--url", orthanc.dicomweb_url], capsys)
    assert rc == 0, err
    assert json.loads(out)["sent"] == [entry.entry_id]
    assert box.entries() == []
    assert orthanc.count_instances() == before + 3
    for inst in entry.instances:
        assert len(orthanc.instances_of_sop(inst["sop_instance_uid"])) == 1
    # nothing left to send: a second flush sends nothing
    rc, out, _ = _run_cli(["pacs", "flush-outbox", "--output", str(out_dir), "--url", orthanc.dicomweb_url], capsys)
    assert rc == 0 and json.loads(out)["sent"] == []
    assert orthanc.count_instances() == before + 3
    [record] = box.sent_entries()
    assert record["entry_id"] == entry.entry_id and record["attempts"] == 3


def test_pending_result_is_sent_by_the_next_run(
    running_orthanc, pacs_env, ct_series, clone, tiny_bundle, tmp_path, capsys
):
    orthanc = running_orthanc
    folder = tmp_path / "input"
    folder.mkdir()
    for i, ds in enumerate(clone(ct_series.datasets(), "next-run")):
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    args = ["pacs", "run", "--url", orthanc.dicomweb_url, "--input", str(folder), "--bundle", str(tiny_bundle)]
    args += ["--output", str(tmp_path / "out"), *FAST_RETRY]
    orthanc.stop()
    rc, out, err = _run_cli(args, capsys)
    assert rc == EXIT_PENDING, err
    assert "kept in the outbox" in err and json.loads(out)["status"] == "pending"
    orthanc.start()
    before = orthanc.count_instances()
    rc, out, err = _run_cli(args, capsys)
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["status"] == "delivered" and summary["reused"] is True
    assert orthanc.count_instances() == before + 3


# ------------------------------------------------------------------------------- acceptance 4
def _bad_input(case, orthanc, ct_series, clone, monkeypatch):
    """(study, series or None) for a bad-input case; uploads what the case needs."""
    if case == "unknown-study":
        return "1.2.826.0.1.3680043.8.498.999999999", None
    if case == "mr-series":
        mr = clone(ct_series.datasets(), "mr-pacs", Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
        return _upload(orthanc, mr), str(mr[0].SeriesInstanceUID)
    if case == "corrupt-instance":
        datasets = clone(ct_series.datasets(), "corrupt-pacs")
        datasets[4].PixelData = datasets[4].PixelData[: len(datasets[4].PixelData) // 2]
        return _upload(orthanc, datasets), None
    if case == "wrong-credentials":
        monkeypatch.setenv("MONAI_BAYES_PACS_PASSWORD", "wrong-Pa55word-XYZ")
        return ct_series.study_instance_uid, None
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("unknown-study", EXIT_NOT_FOUND, "study 1.2.826.0.1.3680043.8.498.999999999 not found"),
        ("mr-series", EXIT_DATA, "has Modality 'MR'; expected CT"),
        ("corrupt-instance", EXIT_DATA, "cannot decode pixel data"),
        ("wrong-credentials", EXIT_AUTH, "credentials refused"),
    ],
)
def test_bad_input_from_pacs(
    case, code, message, running_orthanc, pacs_env, ct_series, clone, tiny_bundle, tmp_path, capsys, monkeypatch
):
    orthanc = running_orthanc
    study, series = _bad_input(case, orthanc, ct_series, clone, monkeypatch)
    before = orthanc.count_instances()
    args = ["pacs", "run", "--url", orthanc.dicomweb_url, "--study", study, "--bundle", str(tiny_bundle)]
    args += ["--output", str(tmp_path / "out"), *FAST_RETRY] + (["--series", series] if series else [])
    rc, out, err = _run_cli(args, capsys)
    assert rc == code, err
    assert message in err and "Traceback" not in err and out == ""
    assert "wrong-Pa55word-XYZ" not in err and orthanc.password not in err
    assert _files_under(tmp_path / "out") == [], "nothing may be half-written"
    assert orthanc.count_instances() == before, "nothing may be sent"


def test_unreachable_pacs_before_input_is_read(pacs_env, tiny_bundle, tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        "pacs",
        "run",
        "--url",
        f"http://127.0.0.1:{port}/dicom-web",
        "--study",
        "1.2.3",
        "--bundle",
        str(tiny_bundle),
    ]
    rc, _, err = _run_cli([*args, "--output", str(tmp_path / "out"), *FAST_RETRY], capsys)
    assert rc == EXIT_UNAVAILABLE and "after 2 attempt(s)" in err
    assert _files_under(tmp_path / "out") == []


def test_ping(running_orthanc, pacs_env, capsys, monkeypatch):
    rc, out, _ = _run_cli(["pacs", "ping", "--url", running_orthanc.dicomweb_url], capsys)
    assert rc == 0 and json.loads(out)["credentials"] == "environment"
    monkeypatch.delenv("MONAI_BAYES_PACS_USER")
    monkeypatch.delenv("MONAI_BAYES_PACS_PASSWORD")
    netrc = Path(os.environ["HOME"]) / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login {running_orthanc.user} password {running_orthanc.password}\n")
    netrc.chmod(0o600)
    rc, out, _ = _run_cli(["pacs", "ping", "--url", running_orthanc.dicomweb_url], capsys)
    assert rc == 0 and json.loads(out)["credentials"].startswith("netrc:")
    netrc.unlink()
    rc, _, err = _run_cli(["pacs", "ping", "--url", running_orthanc.dicomweb_url], capsys)
    assert rc == EXIT_AUTH and "no credentials configured" in err


def test_retrieved_series_is_read_like_the_folder(running_orthanc, pacs_env, ct_series, tiny_bundle):
    """WADO-RS datasets go through the same reader: same geometry and slice order as from disk."""
    from monai_bayes.data import read_dicom_series
    from monai_bayes.pacs import read_input_pacs

    _upload(running_orthanc, ct_series.datasets())
    with _client(running_orthanc) as client:
        remote = read_input_pacs(
            client, ct_series.study_instance_uid, DicomInferenceSettings(), ct_series.series_instance_uid
        )
    local = read_dicom_series(ct_series.folder)
    assert remote.sop_instance_uids == local.sop_instance_uids
    np.testing.assert_array_equal(remote.array, local.array)
    np.testing.assert_allclose(remote.affine, local.affine)
    assert pydicom.uid.UID(remote.frame_of_reference_uid).is_valid
