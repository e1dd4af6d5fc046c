"""DIMSE with a real Orthanc (issue 21): C-ECHO, C-FIND, C-GET / C-MOVE, C-STORE of results, the listener node.

Orthanc (``orthanc_dimse``) runs its DICOM server on a loopback port and knows this node's AE titles
as modalities on 127.0.0.1; every association in these tests is on loopback and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from monai_bayes.cli import main
from monai_bayes.pacs import DicomInferenceSettings, PacsClient, RetryPolicy, load_inference_bundle, load_result
from monai_bayes.pacs.credentials import Credentials
from monai_bayes.pacs.dimse import DimseClient
from monai_bayes.pacs.errors import (
    InputNotFoundError,
    PacsAuthError,
    PacsConfigError,
    PacsRequestError,
    PacsTLSError,
    PacsUnavailableError,
)
from monai_bayes.pacs.listener import Listener
from monai_bayes.pacs.outbox import Outbox
from monai_bayes.pacs.transport import check_destination, parse_dimse_url

pytestmark = pytest.mark.pacs

CLIENT_AET = "MONAI_BAYES"
NODE_AET = "MONAI_NODE"
SENDER_AET = "TEST_SENDER"
FAST = RetryPolicy(2, 0.05)


# ----------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _web(orthanc) -> PacsClient:
    return PacsClient(
        orthanc.dicomweb_url,
        credentials=Credentials("basic", orthanc.user, orthanc.password, source="test"),
        retry=FAST,
    )


def _upload(orthanc, datasets) -> str:
    with _web(orthanc) as client:
        client.store(datasets, str(datasets[0].StudyInstanceUID))
    return str(datasets[0].StudyInstanceUID)


def _study_series(orthanc, study_uid: str) -> list[dict]:
    """Orthanc's series of a study: ``[{"modality", "uid", "instances": [orthanc ids]}]``."""
    found = requests.post(
        f"{orthanc.base_url}/tools/lookup", data=study_uid, auth=(orthanc.user, orthanc.password), timeout=30
    ).json()
    ids = [f["ID"] for f in found if f["Type"] == "Study"]
    if not ids:
        return []
    out = []
    for series in orthanc.get(f"/studies/{ids[0]}/series"):
        tags = series["MainDicomTags"]
        out.append(
            {"modality": tags.get("Modality"), "uid": tags["SeriesInstanceUID"], "instances": series["Instances"]}
        )
    return out


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}", pytrace=False)


@pytest.fixture
def dimse_orthanc(orthanc_dimse, monkeypatch):
    """The DIMSE Orthanc with this node's client AE registered (C-MOVE destination on a free port)."""
    move_port = _free_port()
    orthanc_dimse.start()
    orthanc_dimse.add_modality("monai-client", CLIENT_AET, move_port)
    orthanc_dimse.move_port = move_port
    for k, v in {
        "MONAI_BAYES_PACS_USER": orthanc_dimse.user,
        "MONAI_BAYES_PACS_PASSWORD": orthanc_dimse.password,
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MONAI_BAYES_PACS_TOKEN", raising=False)
    return orthanc_dimse


# ----------------------------------------------------------------------------------- units
def test_dimse_url_and_settings_validation():
    a = parse_dimse_url("dicom://ORTHANC@127.0.0.1:4242")
    assert (a.ae_title, a.host, a.port, a.tls) == ("ORTHANC", "127.0.0.1", 4242, False)
    assert parse_dimse_url("dicoms://PACS@pacs.example.org:2762/").url == "dicoms://PACS@pacs.example.org:2762"
    assert check_destination("dicom://ORTHANC@localhost:104") == "dicom://ORTHANC@localhost:104"
    for bad in (
        "dicom://127.0.0.1:4242",  # no AE title
        "dicom://ORTHANC@127.0.0.1",  # no port
        "dicom://A:secret@host:104",  # a password
        "dicom://ORTHANC@host:104/path",
        "dicom://THIS_AE_TITLE_IS_TOO_LONG@host:104",
        "ftp://host",
    ):
        with pytest.raises(PacsConfigError):
            check_destination(bad)
    with pytest.raises(PacsConfigError, match="move_port"):
        DicomInferenceSettings(dimse_retrieve="move")
    with pytest.raises(PacsConfigError, match="ae_title"):
        DicomInferenceSettings(ae_title="back\\slash")
    with pytest.raises(PacsConfigError, match="move_port"):
        DicomInferenceSettings(dimse_retrieve="move", move_port=70000)
    # transport settings do not change the result (fingerprint / UIDs)
    assert DicomInferenceSettings(ae_title="X", dimse_retrieve="move", move_port=1).content_dict() == (
        DicomInferenceSettings().content_dict()
    )


def test_unreachable_peer_is_retried_then_unavailable():
    sleeps: list[float] = []
    client = DimseClient(
        f"dicom://NOBODY@127.0.0.1:{_free_port()}", connect_timeout_s=1, retry=RetryPolicy(3, 0.01, sleep=sleeps.append)
    )
    with pytest.raises(PacsUnavailableError, match="after 3 attempt"):
        client.ping()
    assert sleeps == [0.01, 0.02]


# ----------------------------------------------------------------------------------- client
def test_echo_find_get_move(dimse_orthanc, ct_series, clone):
    orthanc = dimse_orthanc
    source = clone(ct_series.datasets()[:3], "dimse-find", PatientID="DIMSE-P1", StudyDate="20240131")
    study = _upload(orthanc, source)
    series = str(source[0].SeriesInstanceUID)

    client = DimseClient(orthanc.dimse_url, ae_title=CLIENT_AET, retry=FAST)
    client.ping()
    with pytest.raises(PacsAuthError, match="INTRUDER"):
        DimseClient(orthanc.dimse_url, ae_title="INTRUDER", retry=FAST).ping()

    by_uid = client.find_studies(study_instance_uid=study)
    by_patient = client.find_studies(patient_id="DIMSE-P1", study_date="20240101-20240228")
    assert [s.study_instance_uid for s in by_uid] == [study] == [s.study_instance_uid for s in by_patient]
    assert by_uid[0].study_date == "20240131" and by_uid[0].num_series == 1
    assert client.find_studies(patient_id="DIMSE-P1", study_date="20230101") == []
    [info] = client.search_series(study)
    assert (info.series_instance_uid, info.modality, info.num_instances) == (series, "CT", 3)
    with pytest.raises(InputNotFoundError):
        client.search_series("1.2.3.4.5.6.7.8.9")

    want = {str(ds.SOPInstanceUID): ds.pixel_array for ds in source}
    mover = DimseClient(
        orthanc.dimse_url, ae_title=CLIENT_AET, retry=FAST, retrieve="move", move_port=orthanc.move_port
    )
    for c in (client, mover):
        got = c.retrieve_series(study, series)
        assert sorted(str(ds.SOPInstanceUID) for ds in got) == sorted(want)
        for ds in got:
            np.testing.assert_array_equal(ds.pixel_array, want[str(ds.SOPInstanceUID)])


def test_cli_ping_and_find(dimse_orthanc, ct_series, clone, capsys):
    """``pacs ping`` (C-ECHO) and ``pacs find`` (C-FIND) on the command line; an unknown AE title exits 77."""
    orthanc = dimse_orthanc
    source = clone(ct_series.datasets()[:2], "dimse-cli-find", PatientID="DIMSE-CLI", StudyDate="20230704")
    study = _upload(orthanc, source)
    common = ["--url", orthanc.dimse_url, "--ae-title", CLIENT_AET, "--max-attempts", "1"]
    assert main(["pacs", "ping", *common]) == 0
    assert json.loads(capsys.readouterr().out)["c-echo"] == "ok"
    assert main(["pacs", "find", *common, "--patient-id", "DIMSE-CLI", "--study-date", "20230704", "--series"]) == 0
    [found] = json.loads(capsys.readouterr().out)["studies"]
    assert found["study_instance_uid"] == study and found["modalities"] == ["CT"]
    assert [(s["series_instance_uid"], s["num_instances"]) for s in found["series"]] == [
        (str(source[0].SeriesInstanceUID), 2)
    ]
    assert main(["pacs", "find", *common, "--patient-id", "NOBODY"]) == 66
    assert main(["pacs", "ping", "--url", orthanc.dimse_url, "--ae-title", "INTRUDER", "--max-attempts", "1"]) == 77
    assert "INTRUDER" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- pipeline
def test_cli_run_over_dimse_stores_results_once(
    dimse_orthanc, ct_series, clone, tiny_bundle, tmp_path, dciodvfy, capsys
):
    """``pacs run --url dicom://...``: C-FIND + C-MOVE in, C-STORE out; a second run stores nothing new."""
    orthanc = dimse_orthanc
    source = clone(ct_series.datasets()[:4], "dimse-run")
    study = _upload(orthanc, source)
    out = tmp_path / "out"
    args = ["pacs", "run", "--url", orthanc.dimse_url, "--study", study, "--bundle", str(tiny_bundle)]
    args += [
        "--output",
        str(out),
        "--ae-title",
        CLIENT_AET,
        "--retrieve",
        "move",
        "--move-port",
        str(orthanc.move_port),
    ]
    args += ["--max-attempts", "2", "--backoff", "0.05"]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "delivered" and summary["study_instance_uid"] == study

    series = _study_series(orthanc, study)
    by_modality = {s["modality"]: s for s in series if s["modality"] != "CT"}
    written = {i["sop_instance_uid"] for i in summary["instances"]}
    assert {"SEG"} <= set(by_modality) and len(series) == 1 + len(
        {i["series_instance_uid"] for i in summary["instances"]}
    )
    count = sum(len(s["instances"]) for s in series)
    assert count == 4 + len(written)
    for s in series:  # what Orthanc holds is valid DICOM (dciodvfy on the stored files)
        if s["modality"] != "CT":
            raw = requests.get(
                f"{orthanc.base_url}/instances/{s['instances'][0]}/file",
                auth=(orthanc.user, orthanc.password),
                timeout=30,
            ).content
            path = tmp_path / f"{s['modality']}.dcm"
            path.write_bytes(raw)
            assert str(pydicom.dcmread(path).SOPInstanceUID) in written
            dciodvfy(path)

    # re-send: a second run reuses the result and the PACS keeps one copy
    assert main([*args, "--force"]) == 0
    assert sum(len(s["instances"]) for s in _study_series(orthanc, study)) == count
    assert len(Outbox(out / "outbox").sent_entries()) == 2 and not Outbox(out / "outbox").entries()


# ----------------------------------------------------------------------------------- listener
def test_listener_routed_study_answers_in_same_study(dimse_orthanc, ct_series, clone, tiny_bundle, tmp_path):
    """Orthanc routes a new CT study to the node (Lua rule); results come back (DICOMweb) into that study.

    The node refuses an AE title not on its allow-list.
    """
    orthanc = dimse_orthanc
    bundle = load_inference_bundle(tiny_bundle)
    node = Listener(
        bundle,
        ae_title=NODE_AET,
        port=0,
        bind="127.0.0.1",
        spool=tmp_path / "spool",
        destination=orthanc.dicomweb_url,
        allowed_ae_titles=[orthanc.dicom_aet, SENDER_AET],
        quiet_s=1.0,
        settings=bundle.settings.replace(max_attempts=2, backoff_s=0.05),
    )
    node.start()
    try:
        orthanc.add_modality("monai-node", NODE_AET, node.port)
        node_url = f"dicom://{NODE_AET}@127.0.0.1:{node.port}"
        DimseClient(node_url, ae_title=SENDER_AET, retry=FAST).ping()
        with pytest.raises(PacsAuthError):
            DimseClient(node_url, ae_title="INTRUDER", retry=FAST).ping()

        source = clone(ct_series.datasets()[:3], "dimse-route", StudyDescription=orthanc.route_description)
        study = _upload(orthanc, source)
        status = _wait(
            lambda: node.read_status(study).state in ("delivered", "failed", "pending") and node.read_status(study),
            120,
            "the routed study to be processed",
        )
        assert status.state == "delivered", status.error
        assert status.instances == 3 and status.attempts == 1
        result = load_result(status.result_dir)
        assert result is not None and result.study_instance_uid == study
        series = _study_series(orthanc, study)
        assert [s["modality"] for s in series].count("CT") == 1
        assert [s["modality"] for s in series].count("SEG") == 1
        # every written instance is in the routed study, exactly once
        held = sorted(len(s["instances"]) for s in series if s["modality"] != "CT")
        per_series: dict[str, int] = {}
        for inst in result.instances:
            per_series[inst.series_instance_uid] = per_series.get(inst.series_instance_uid, 0) + 1
        assert held == sorted(per_series.values())
        assert node.wait_idle(10)
        assert not any((tmp_path / "spool" / "ready").iterdir())
    finally:
        node.stop()


def _listen_cmd(tiny_bundle, spool: Path, port: int, destination: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai_bayes",
        "pacs",
        "listen",
        "--ae-title",
        NODE_AET,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--allow",
        SENDER_AET,
        "--bundle",
        str(tiny_bundle),
        "--destination",
        destination,
        "--spool",
        str(spool),
        "--output",
        str(spool.parent / "results"),
        "--quiet",
        "3",
        "--expected-instances",
        "2",
        "--max-queue",
        "32",
        "--max-attempts",
        "3",
        "--backoff",
        "0.1",
    ]


def _start_node(cmd: list[str], log: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    client = DimseClient(f"dicom://{NODE_AET}@127.0.0.1:{port}", ae_title=SENDER_AET, connect_timeout_s=1, retry=FAST)

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"listener exited with {proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        try:
            client.ping()
            return True
        except PacsUnavailableError:
            return False

    _wait(up, 120, "the listener to answer C-ECHO", poll_s=0.3)
    return proc


@pytest.mark.slow
def test_listener_20_studies_with_kill9(dimse_orthanc, ct_series, clone, tiny_bundle, tmp_path):
    """Acceptance: 20 studies (2 slices each) sent back to back, ``kill -9`` while one is processed,
    restart: every study gets exactly one SEG + Parametric Map set in Orthanc, the interrupted one too."""
    orthanc = dimse_orthanc
    port = _free_port()
    orthanc.add_modality("monai-node", NODE_AET, port)
    spool = tmp_path / "spool"
    status_dir = spool / "status"
    log = tmp_path / "listener.log"
    cmd = _listen_cmd(tiny_bundle, spool, port, orthanc.dimse_url)
    base = ct_series.datasets()[:2]
    studies = [clone(base, f"dimse-burst-{k}") for k in range(20)]
    uids = [str(s[0].StudyInstanceUID) for s in studies]
    sender = DimseClient(f"dicom://{NODE_AET}@127.0.0.1:{port}", ae_title=SENDER_AET, retry=FAST)

    def states() -> dict[str, dict]:
        out = {}
        for p in status_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                out[p.stem] = json.loads(p.read_text())
        return out

    proc = _start_node(cmd, log, port)
    interrupted: list[str] = []
    try:
        for datasets in studies:
            sender.store(datasets, str(datasets[0].StudyInstanceUID))

        def processing_after_some_delivered() -> str | None:
            st = states()
            done = sum(s["state"] == "delivered" for s in st.values())
            busy = [u for u, s in st.items() if s["state"] == "processing"]
            return busy[0] if done >= 3 and busy else None

        # A tiny study can finish between the poll and the signal: kill again (up to 5 times) until one
        # study is caught in processing, so the test never depends on that race.
        for _ in range(5):
            _wait(processing_after_some_delivered, 180, "a study in processing", poll_s=0.005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            caught = [u for u, s in states().items() if s["state"] == "processing"]
            interrupted.extend(caught)
            proc = _start_node(cmd, log, port)
            if caught:
                break
        assert interrupted, "no study was caught in processing by 5 kills"
        _wait(lambda: sum(s["state"] == "delivered" for s in states().values()) == 20, 300, "20 delivered studies", 0.5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    st = states()
    assert sorted(st) == sorted(uids)
    assert all(s["state"] == "delivered" and s["instances"] == 2 for s in st.values())
    assert all(st[uid]["attempts"] == 2 for uid in interrupted)
    assert sum(s["attempts"] for s in st.values()) == 20 + len(interrupted)
    per_study = []
    for uid in uids:
        series = _study_series(orthanc, uid)
        assert all(s["modality"] != "CT" for s in series)  # only results were stored
        assert [s["modality"] for s in series].count("SEG") == 1
        per_study.append(sorted((s["modality"], len(s["instances"])) for s in series))
    assert all(p == per_study[0] for p in per_study), per_study  # no study lost or duplicated a result
    assert not any((spool / "ready").iterdir()) and not any((spool / "incoming").iterdir())
    assert "queued again after a restart" in log.read_text()


# ----------------------------------------------------------------------------------- TLS
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=monai-bayes test CA", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return {k: d / k for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_dimse_tls_to_listener(tls_files, tiny_bundle, tmp_path):
    """dicoms://: the server certificate is verified against --ca-bundle; mutual TLS needs a client certificate."""
    from monai_bayes.pacs.dimse import server_ssl_context

    f = tls_files
    node = Listener(
        load_inference_bundle(tiny_bundle),
        ae_title=NODE_AET,
        port=0,
        bind="127.0.0.1",
        spool=tmp_path / "spool",
        destination="dicom://NOWHERE@127.0.0.1:1",
        allowed_ae_titles=[SENDER_AET],
        ssl_context=server_ssl_context(f["server.pem"], f["server.key"], client_ca=f["ca.pem"]),
    )
    node.start()
    try:
        url = f"dicoms://{NODE_AET}@127.0.0.1:{node.port}"
        ok = DimseClient(url, ae_title=SENDER_AET, ca_bundle=f["ca.pem"], tls_cert=f["client.pem"],
                         tls_key=f["client.key"], retry=FAST)  # fmt: skip
        ok.ping()
        untrusted = DimseClient(url, ae_title=SENDER_AET, tls_cert=f["client.pem"], tls_key=f["client.key"], retry=FAST)
        with pytest.raises(PacsTLSError, match=r"certificate verify failed|--ca-bundle"):
            untrusted.ping()  # the node's CA is not in the system trust store
        for bad in (
            DimseClient(url, ae_title=SENDER_AET, ca_bundle=f["ca.pem"], retry=FAST),  # no client certificate
            DimseClient(url.replace("dicoms", "dicom"), ae_title=SENDER_AET, connect_timeout_s=2, retry=FAST),
        ):
            with pytest.raises((PacsTLSError, PacsUnavailableError)):
                bad.ping()
    finally:
        node.stop()


# ----------------------------------------------------------------------------------- listener logic
class _FakePipeline:
    """Stands in for ``run_pipeline`` in the listener: records calls, can block, returns "delivered"."""

    def __init__(self, block: bool = False) -> None:
        import threading

        self.calls: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not block:
            self.release.set()

    def __call__(self, bundle, *, input_dir, **kwargs):
        from types import SimpleNamespace

        self.calls.append(str(input_dir))
        self.started.set()
        assert self.release.wait(60)
        result = SimpleNamespace(directory=Path(input_dir), instances=[])
        return SimpleNamespace(status="delivered", result=result, entry_id="e", flush=None, reused=False)


def _node(tmp_path, monkeypatch, fake, **kwargs) -> Listener:
    from types import SimpleNamespace

    import monai_bayes.pacs.listener as listener_module

    monkeypatch.setattr(listener_module, "run_pipeline", fake)
    settings = DicomInferenceSettings(max_attempts=1)
    return Listener(
        SimpleNamespace(settings=settings),
        ae_title=NODE_AET,
        port=0,
        bind="127.0.0.1",
        spool=tmp_path / "spool",
        destination="dicom://PACS@127.0.0.1:1",
        allowed_ae_titles=[SENDER_AET],
        expected_instances=1,
        poll_s=0.05,
        **kwargs,
    )


def test_listener_bounded_queue_refuses_new_studies(tmp_path, monkeypatch, ct_series, clone):
    """With ``max_queue=1`` and a study in processing, an instance of a new study gets 0xA700; later it is accepted."""
    fake = _FakePipeline(block=True)
    node = _node(tmp_path, monkeypatch, fake, max_queue=1)
    node.start()
    try:
        sender = DimseClient(f"dicom://{NODE_AET}@127.0.0.1:{node.port}", ae_title=SENDER_AET, retry=FAST)
        a, b = (clone(ct_series.datasets()[:1], f"queue-{k}") for k in "ab")
        sender.store(a, str(a[0].StudyInstanceUID))
        assert fake.started.wait(30)
        with pytest.raises(PacsRequestError, match="0xa700"):
            sender.store(b, str(b[0].StudyInstanceUID))
        fake.release.set()
        assert node.wait_idle(30)
        sender.store(b, str(b[0].StudyInstanceUID))
        assert node.wait_idle(30)
        assert [Path(c).name for c in fake.calls] == [str(a[0].StudyInstanceUID), str(b[0].StudyInstanceUID)]
        assert node.read_status(str(b[0].StudyInstanceUID)).state == "delivered"
    finally:
        node.stop()


def test_listener_restart_requeues_ready_but_skips_delivered(tmp_path, monkeypatch, ct_series, clone):
    """The spool is the truth: a study left in ready/ is processed after a restart, unless its status says
    it was delivered for exactly these instances (killed between delivery and clean-up)."""
    from monai_bayes.pacs.listener import StudyStatus, _digest

    spool = tmp_path / "spool"
    pending, delivered = (clone(ct_series.datasets()[:2], f"restart-{k}") for k in "pd")
    for datasets in (pending, delivered):
        folder = spool / "ready" / str(datasets[0].StudyInstanceUID)
        folder.mkdir(parents=True)
        for ds in datasets:
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    done_uid = str(delivered[0].StudyInstanceUID)
    digest = _digest([str(ds.SOPInstanceUID) for ds in delivered])
    status = StudyStatus(done_uid, state="delivered", instances=2, instances_digest=digest, attempts=1)
    (spool / "status").mkdir()
    (spool / "status" / f"{done_uid}.json").write_text(json.dumps(status.to_dict()))

    # partial writes of a killed process: a temporary file next to complete ones, and one alone
    (spool / "ready" / str(pending[0].StudyInstanceUID) / ".1.2.3.tmp.dcm").write_bytes(b"partial")
    (spool / "incoming" / "1.2.3.4").mkdir(parents=True)
    (spool / "incoming" / "1.2.3.4" / ".1.2.3.4.5.abcd.tmp.dcm").write_bytes(b"partial")

    fake = _FakePipeline()
    node = _node(tmp_path, monkeypatch, fake)
    node.start()
    try:
        assert node.wait_idle(30)
    finally:
        node.stop()
    assert [Path(c).name for c in fake.calls] == [str(pending[0].StudyInstanceUID)]
    assert node.read_status(done_uid).attempts == 1
    assert not any((spool / "ready").iterdir()) and not any((spool / "incoming").iterdir())
