"""Hardening of the PACS pipeline (issue 14): hostile UIDs, a planted or damaged outbox, TLS, odd
answers, resource limits, file modes, early output checks. Every case asserts its sysexits code."""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from monai_bayes.cli import main
from monai_bayes.pacs import Outbox, PacsClient, RetryPolicy, run_pipeline
from monai_bayes.pacs.client import SeriesInfo, is_loopback_host
from monai_bayes.pacs.credentials import Credentials, resolve_credentials
from monai_bayes.pacs.errors import (
    EXIT_CONFIG,
    EXIT_DATA,
    EXIT_PROTOCOL,
    InvalidInputError,
    OutboxEntryError,
    PacsConfigError,
    PacsProtocolError,
    PacsTLSError,
)
from monai_bayes.pacs.outbox import ENTRY_NAME, FlushReport
from monai_bayes.pacs.pipeline import flush_outbox, read_input_pacs
from monai_bayes.pacs.settings import DicomInferenceSettings
from monai_bayes.pacs.uids import check_uid, is_valid_uid


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def _write(datasets, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, ds in enumerate(datasets):
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=False)
    return folder


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "NETRC",
        "MONAI_BAYES_PACS_TOKEN",
        "MONAI_BAYES_PACS_URL",
        "MONAI_BAYES_PACS_OUTPUT",
        "MONAI_BAYES_PACS_USER",
        "MONAI_BAYES_PACS_PASSWORD",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


# ------------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008", "0.0", "1." + "2" * 62],
)
def test_valid_uids_pass(uid):
    assert is_valid_uid(uid) and check_uid(uid, "x") == uid


@pytest.mark.parametrize(
    "uid", ["../../../../ESCAPED", "/tmp/x", "1.2.3/..", "1.2.", ".1.2", "1..2", "1.2 ", "1." + "2" * 63, "", None, 12]
)
def test_invalid_uids_are_input_errors(uid):
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidInputError, match="expected a DICOM UID") as info:
        check_uid(uid, "SeriesInstanceUID of x.dcm")
    assert info.value.exit_code == EXIT_DATA


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_traversing_series_uid_is_refused_and_nothing_is_written(kind, tiny_bundle, ct_series, clone, tmp_path, capsys):
    """A SeriesInstanceUID of ../../../../ESCAPED or an absolute path used to put a whole result
    outside --output (rc 0); now rc 65 at input and no file anywhere."""
    escaped = tmp_path / "ESCAPED"
    uid = "../../../../ESCAPED" if kind == "relative" else str(escaped)
    folder = _write(clone(ct_series.datasets(), f"traversal-{kind}", SeriesInstanceUID=uid), tmp_path / "input")
    out_dir = tmp_path / "a" / "b" / "c" / "out"
    rc, _, err = _run_cli(
        ["pacs", "run", "--bundle", str(tiny_bundle), "--input", str(folder), "--output", str(out_dir), "--no-push"],
        capsys,
    )
    assert rc == EXIT_DATA, err
    assert "expected a DICOM UID" in err and "SeriesInstanceUID" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]  # no ESCAPED, no out/
    assert not escaped.exists()


def test_dicomweb_uids_are_checked_before_any_url_is_built():
    class Client:
        url = "http://127.0.0.1:1/dicom-web"

        def search_series(self, study):
            return [SeriesInfo("../../x", "CT", 3, 1)]

        def retrieve_series(self, study, series):  # pragma: no cover - must not be reached
            raise AssertionError("retrieved a series with an invalid UID")

    settings = DicomInferenceSettings()
    with pytest.raises(InvalidInputError, match="SeriesInstanceUID found by QIDO-RS"):
        read_input_pacs(Client(), "1.2.3", settings)
    with pytest.raises(InvalidInputError, match="--study"):
        read_input_pacs(Client(), "1.2/../3", settings)


def test_bad_study_argument_is_rc_65_before_the_bundle_loads(tiny_bundle, tmp_path, capsys, monkeypatch):
    import monai_bayes.pacs.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "load_inference_bundle", _must_not_load)
    rc, _, err = _run_cli(
        ["pacs", "run", "--bundle", str(tiny_bundle), "--url", "http://127.0.0.1:1/dw", "--study", "1/../2"], capsys
    )
    assert rc == EXIT_DATA and "--study" in err


def _must_not_load(*args, **kwargs):
    raise AssertionError("the bundle was loaded before the arguments were checked")


# ------------------------------------------------------------------------------------------- item 14
def test_output_that_is_a_file_is_a_config_error_before_any_work(tiny_bundle, ct_series, tmp_path, capsys, monkeypatch):
    import monai_bayes.pacs.bundle as bundle_module

    monkeypatch.setattr(bundle_module, "load_inference_bundle", _must_not_load)
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    for output in (target, target / "sub"):
        rc, out, err = _run_cli(
            ["pacs", "run", "--bundle", str(tiny_bundle), "--input", str(ct_series.folder), "--output", str(output)],
            capsys,
        )
        assert rc == EXIT_CONFIG, err
        assert "exists and is not a folder" in err and out == ""
    assert target.read_text() == "not a folder"


# ------------------------------------------------------------------------------------------- items 9, 10
def test_non_finite_rescale_is_rejected_at_input(tiny_bundle, ct_series, clone, tmp_path, capsys):
    datasets = clone(ct_series.datasets(), "nan-slope")
    for ds in datasets:
        ds["RescaleSlope"].value = "NaN"
    folder = _write(datasets, tmp_path / "input")
    out_dir = tmp_path / "out"
    rc, _, err = _run_cli(
        ["pacs", "run", "--bundle", str(tiny_bundle), "--input", str(folder), "--output", str(out_dir), "--no-push"],
        capsys,
    )
    assert rc == EXIT_DATA, err
    assert "non-finite values after the modality LUT" in err
    assert _files_under(out_dir) == []


def test_huge_dimensions_are_refused_before_allocating(tiny_bundle, ct_series, clone, tmp_path, capsys):
    folder = _write(clone(ct_series.datasets(), "huge", Rows=65535, Columns=65535), tmp_path / "input")
    out_dir = tmp_path / "out"
    rc, _, err = _run_cli(
        ["pacs", "run", "--bundle", str(tiny_bundle), "--input", str(folder), "--output", str(out_dir), "--no-push"],
        capsys,
    )
    assert rc == EXIT_DATA, err
    assert "exceeds the maximum" in err and "max_volume_voxels" in err
    assert _files_under(out_dir) == []
    # the limit is a setting: a normal series above a small limit is refused the same way
    rc, _, err = _run_cli(
        [
            "pacs",
            "run",
            "--bundle",
            str(tiny_bundle),
            "--input",
            str(ct_series.folder),
            "--output",
            str(out_dir),
            "--no-push",
            "--max-volume-voxels",
            "1000",
        ],
        capsys,
    )
    assert rc == EXIT_DATA and "exceeds the maximum of 1000" in err


# ------------------------------------------------------------------------------------------- outbox
@pytest.fixture(scope="module")
def stored_result(tiny_bundle, ct_series, tmp_path_factory):
    out = tmp_path_factory.mktemp("security_result")
    return run_pipeline(tiny_bundle, input_dir=ct_series.folder, output_dir=out, push=False).result


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request (path and Authorization header) and answers 200 with ``body``."""

    requests: ClassVar[list[tuple[str, str, str | None]]] = []
    content_type = "application/dicom+json"
    body = b"[]"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        type(self).requests.append((self.command, self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def log_message(self, *args):
        pass


def _serve(handler: type, context: ssl.SSLContext | None = None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def recorder():
    _Recorder.requests = []
    _Recorder.content_type, _Recorder.body = "application/dicom+json", b"[]"
    server = _serve(_Recorder)
    yield server
    server.shutdown()
    server.server_close()


def _plant(outbox: Path, stored, url: str, files: list[str]) -> str:
    """An entry.json as an attacker (or a broken tool) would write it into pending/."""
    eid = Outbox.entry_id(url, stored.fingerprint)
    folder = outbox / "pending" / eid
    folder.mkdir(parents=True)
    instances = [
        {"file": f, "sop_instance_uid": i.sop_instance_uid, "series_instance_uid": i.series_instance_uid,
         "sop_class_uid": i.sop_class_uid}
        for f, i in zip(files, stored.instances)
    ]  # fmt: skip
    entry = {
        "format": "monai_bayes.pacs.outbox-entry",
        "entry_id": eid,
        "url": url,
        "study_instance_uid": stored.study_instance_uid,
        "fingerprint": stored.fingerprint,
        "instances": instances,
        "created": "2020-01-01T00:00:00+00:00",
        "attempts": 0,
        "last_attempt": None,
        "last_error": None,
    }
    (folder / ENTRY_NAME).write_text(json.dumps(entry))
    return eid


def test_planted_entry_for_another_host_gets_no_credentials(
    stored_result, recorder, clean_env, tmp_path, capsys, monkeypatch
):
    """An entry.json naming another URL used to receive the configured Basic credentials and any
    local DICOM file; now entries go only to the configured PACS, so the planted one is left alone."""
    evil = f"http://127.0.0.1:{recorder.server_address[1]}/evil"
    secret_dcm = tmp_path / "elsewhere" / "private.dcm"
    secret_dcm.parent.mkdir()
    shutil.copy2(stored_result.dicom_files()[0], secret_dcm)
    outbox = tmp_path / "out" / "outbox"
    rel = os.path.relpath(secret_dcm, outbox / "pending" / "x")
    eid = _plant(outbox, stored_result, evil, [rel])
    monkeypatch.setenv("MONAI_BAYES_PACS_USER", "bob")
    monkeypatch.setenv("MONAI_BAYES_PACS_PASSWORD", "pw-for-the-real-pacs")
    # no configured PACS: refused (the entry's own URL is not a destination)
    rc, _, err = _run_cli(["pacs", "flush-outbox", "--outbox", str(outbox)], capsys)
    assert rc == EXIT_CONFIG and "needs the PACS URL" in err
    # configured PACS: only its entries are tried; the planted one is reported corrupt (its file path)
    monkeypatch.setenv("MONAI_BAYES_PACS_URL", "http://127.0.0.1:1/dicom-web")
    rc, out, err = _run_cli(["pacs", "flush-outbox", "--outbox", str(outbox)], capsys)
    assert rc == EXIT_DATA, err
    assert json.loads(out)["pending"] == [eid] and "not a plain .dcm file name" in err
    assert _Recorder.requests == []


def test_entry_for_another_url_is_never_sent_there(stored_result, recorder, clean_env, tmp_path, monkeypatch):
    evil = f"http://127.0.0.1:{recorder.server_address[1]}/evil"
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.add(stored_result, evil)  # a well-formed entry, but for another PACS
    monkeypatch.setenv("MONAI_BAYES_PACS_USER", "bob")
    monkeypatch.setenv("MONAI_BAYES_PACS_PASSWORD", "pw-for-the-real-pacs")
    report = flush_outbox(outbox.root, url="http://127.0.0.1:1/dicom-web", settings=DicomInferenceSettings())
    assert report.other_destinations == [entry.entry_id] and report.sent == [] and report.exit_code == 0
    assert _Recorder.requests == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "unreadable entry.json"),
        ("traversal", "not a plain .dcm file name"),
        ("absolute", "not a plain .dcm file name"),
        ("wrong-id", "does not match its folder"),
        ("bad-study-uid", "is not a UID"),
        ("extra-key", "differ from the expected"),
        ("symlinked-file", "not a regular file"),
    ],
)
def test_damaged_entry_is_reported_failed_and_replaced_on_requeue(
    damage, message, stored_result, clean_env, tmp_path, capsys
):
    url = "http://127.0.0.1:1/dicom-web"
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.add(stored_result, url)
    path = entry.directory / ENTRY_NAME
    doc = json.loads(path.read_text())
    if damage == "truncated":
        path.write_text(path.read_text()[:40])
    elif damage == "symlinked-file":
        target = entry.directory / doc["instances"][0]["file"]
        target.unlink()
        target.symlink_to(stored_result.dicom_files()[0])
    else:
        if damage == "traversal":
            doc["instances"][0]["file"] = "../../" + doc["instances"][0]["file"]
        elif damage == "absolute":
            doc["instances"][0]["file"] = str(stored_result.dicom_files()[0])
        elif damage == "wrong-id":
            doc["entry_id"] = "0" * 24
        elif damage == "bad-study-uid":
            doc["study_instance_uid"] = "../1.2"
        elif damage == "extra-key":
            doc["password"] = "x"
        path.write_text(json.dumps(doc))
    report = outbox.flush(lambda u: pytest.fail("a damaged entry must not be sent"), url=url)
    assert report.pending == [entry.entry_id] and report.sent == []
    err = report.errors[entry.entry_id]
    assert isinstance(err, OutboxEntryError) and message in str(err) and "queue the result again" in str(err)
    assert report.exit_code == EXIT_DATA
    rc, out, cli_err = _run_cli(["pacs", "flush-outbox", "--outbox", str(outbox.root), "--url", url], capsys)
    assert rc == EXIT_DATA and json.loads(out)["pending"] == [entry.entry_id] and message in cli_err
    rc, out, _ = _run_cli(["pacs", "outbox", "--outbox", str(outbox.root)], capsys)
    assert rc == EXIT_DATA and list(json.loads(out)["corrupt"]) == [entry.entry_id]
    # re-queuing the same result (what a re-run does) replaces the damaged entry
    again = outbox.add(stored_result, url)
    assert again.entry_id == entry.entry_id and outbox.scan() == ([again], {})
    assert [p.name for p in (outbox.root / "pending").iterdir()] == [entry.entry_id]


def test_symlinked_entry_is_refused_and_its_target_kept(stored_result, clean_env, tmp_path):
    url = "http://127.0.0.1:1/dicom-web"
    elsewhere = Outbox(tmp_path / "elsewhere")
    real = elsewhere.add(stored_result, url)
    outbox = Outbox(tmp_path / "outbox")
    (outbox.root / "pending").mkdir(parents=True)
    (outbox.root / "pending" / real.entry_id).symlink_to(real.directory, target_is_directory=True)
    report = outbox.flush(lambda u: pytest.fail("a symlinked entry must not be sent"), url=url)
    assert report.pending == [real.entry_id] and "symbolic link" in str(report.errors[real.entry_id])
    assert report.exit_code == EXIT_DATA
    assert (real.directory / ENTRY_NAME).is_file()  # the target is not ours to delete


def test_results_and_outbox_are_owner_only(stored_result, tmp_path):
    root = stored_result.directory.parents[2]
    outbox = Outbox(tmp_path / "outbox")
    outbox.add(stored_result, "http://127.0.0.1:1/dicom-web")
    for base in (root / "results", outbox.root):
        for p in [base, *base.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {oct(mode)}"


# ------------------------------------------------------------------------------------------- item 5: TLS
@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "ca.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(self_signed):
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    _Recorder.requests = []
    _Recorder.content_type, _Recorder.body = "application/dicom+json", b"[]"
    server = _serve(_Recorder, context)
    yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()


def test_unknown_ca_fails_at_once_with_the_reason(https_server, clean_env):
    sleeps: list[float] = []
    client = PacsClient(https_server, credentials=None, retry=RetryPolicy(3, 1.0, sleep=sleeps.append))
    with pytest.raises(PacsTLSError, match="certificate verify failed") as info:
        client.ping()
    assert sleeps == [] and "--ca-bundle" in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG


def test_ca_bundle_setting_and_standard_variable_are_honoured(https_server, self_signed, clean_env, monkeypatch):
    cert, _ = self_signed
    settings = DicomInferenceSettings(ca_bundle=str(cert))
    with PacsClient.from_settings(https_server, settings) as client:
        client.ping()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with PacsClient(https_server, credentials=None) as client:
        client.ping()
    assert len(_Recorder.requests) == 2
    with pytest.raises(PacsConfigError, match=r"CA bundle .* not found"):
        PacsClient(https_server, credentials=None, ca_bundle=str(cert) + ".missing")


def test_credentials_over_plain_http_off_loopback_are_refused(clean_env, caplog):
    cred = Credentials("basic", "bob", "pw", source="environment")
    with pytest.raises(PacsConfigError, match="plain http") as info:
        PacsClient("http://pacs.example.org/dicom-web", credentials=cred)
    assert info.value.exit_code == EXIT_CONFIG and "pw" not in str(info.value).replace("plain", "")
    with caplog.at_level(logging.WARNING, logger="monai_bayes.pacs.client"):
        PacsClient("http://pacs.example.org/dicom-web", credentials=cred, allow_insecure_http=True).close()
    assert "over plain http" in caplog.text
    PacsClient("http://127.0.0.1:8042/dicom-web", credentials=cred).close()  # loopback: fine
    PacsClient("http://pacs.example.org/dicom-web", credentials=None).close()  # anonymous: fine
    assert is_loopback_host("localhost") and is_loopback_host("::1") and not is_loopback_host("10.0.0.1")


# ------------------------------------------------------------------------------------------- item 11
def test_html_login_page_is_a_protocol_error_naming_the_content_type(recorder, clean_env):
    _Recorder.content_type, _Recorder.body = "text/html; charset=utf-8", b"<html><body>Please log in</body></html>"
    url = f"http://127.0.0.1:{recorder.server_address[1]}/dicom-web"
    with PacsClient(url, credentials=None) as client, pytest.raises(PacsProtocolError) as info:
        client.search_series("1.2.3")
    assert "text/html" in str(info.value) and info.value.exit_code == EXIT_PROTOCOL == 76
    assert FlushReport(pending=["a"], errors={"a": info.value}).exit_code == EXIT_PROTOCOL


# ------------------------------------------------------------------------------------------- item 13
@pytest.mark.parametrize(("mode", "warns"), [(0o644, True), (0o640, True), (0o600, False)])
def test_shared_netrc_is_used_with_a_warning(mode, warns, tmp_path, caplog):
    path = tmp_path / "netrc"
    path.write_text("machine pacs.example.org login bob password hunter2\n")
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="monai_bayes.pacs.credentials"):
        cred = resolve_credentials("https://pacs.example.org/dw", env={}, netrc_file=str(path))
    assert cred is not None and cred.username == "bob"
    assert ("chmod 600" in caplog.text) == warns and "hunter2" not in caplog.text


# ------------------------------------------------------------------------------------------- item 7
def test_monai_bundle_run_shows_the_project_message_before_the_tracebacks(bundle_factory, ct_series, clone, tmp_path):
    from monai_bayes.pacs.settings import template_text

    bundle = bundle_factory(tmp_path / "bundle", dicom_settings=json.loads(template_text()))
    folder = _write(clone(ct_series.datasets(), "bundle-bad-uid", SeriesInstanceUID="1.2/../x"), tmp_path / "input")
    configs = [str(bundle / "configs" / "inference.json"), str(bundle / "configs" / "inference_dicom.json")]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", json.dumps(configs),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--bundle_root", str(bundle),
        "--pacs_input_dir", str(folder),
        "--pacs_output_dir", str(tmp_path / "out"),
        "--pacs_push", "False",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    summary = [i for i, line in enumerate(lines) if line.startswith("monai_bayes: error:")]
    tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    assert len(summary) == 1, proc.stderr[-3000:]
    assert "InvalidInputError" in lines[summary[0]] and "expected a DICOM UID" in lines[summary[0]]
    assert tracebacks and summary[0] < tracebacks[0]
    assert not (tmp_path / "out").exists()
