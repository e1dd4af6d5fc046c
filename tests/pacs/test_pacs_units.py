"""PACS pipeline building blocks without a server: settings, UIDs, credentials, retries, exit codes."""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from monai_bayes.pacs import (
    Credentials,
    DicomInferenceSettings,
    PacsAuthError,
    PacsClient,
    PacsConfigError,
    PacsRequestError,
    PacsUnavailableError,
    RetryPolicy,
    derive_uid,
    redact_url,
    resolve_credentials,
    result_fingerprint,
)
from monai_bayes.pacs.errors import EXIT_AUTH, EXIT_DATA, EXIT_OK, EXIT_PENDING
from monai_bayes.pacs.outbox import FlushReport
from monai_bayes.pacs.settings import template_settings, template_text

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


# ------------------------------------------------------------------------------------ settings
def test_template_matches_settings_defaults():
    """The shipped inference_dicom.json template lists every field with the dataclass default."""
    template = template_settings()
    defaults = DicomInferenceSettings().to_dict()
    assert set(template) == set(defaults)
    assert DicomInferenceSettings.from_dict(template).to_dict() == defaults
    doc = json.loads(template_text())
    assert doc["pacs_settings"]["_target_"] == "monai_bayes.pacs.DicomInferenceSettings"
    assert "run_pipeline" in doc["pacs_result"]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"threshold": 1.0}, "threshold"),
        ({"mode": "4d"}, "mode"),
        ({"segmentation_type": "labelmap"}, "segmentation_type"),
        ({"uncertainty_maps": ["variance"]}, "variance"),
        ({"segments": [{"label": "a", "class_index": 1}, {"label": "b", "class_index": 1}]}, "distinct"),
        ({"segments": [{"label": "a", "colour": "red"}]}, "unknown keys"),
        ({"num_samples": 0}, "num_samples"),
        ({"series_number_seg": 0}, "series_number_seg"),
        ({"frame_laterality": "X"}, "frame_laterality"),
        ({"bogus": 1}, "unknown DICOM inference settings"),
    ],
)
def test_settings_validation_names_the_field(changes, match):
    data = DicomInferenceSettings().to_dict() | changes
    with pytest.raises(PacsConfigError, match=match):
        DicomInferenceSettings.from_dict(data)


def test_content_dict_excludes_transport_settings():
    a = DicomInferenceSettings()
    b = a.replace(max_attempts=9, read_timeout_s=3.0, slice_batch_size=16, write_nifti=False)
    assert a.content_dict() == b.content_dict()
    assert a.content_dict() != a.replace(threshold=0.3).content_dict()


# ------------------------------------------------------------------------------------ UIDs
def test_fingerprint_and_uids_are_deterministic_and_sensitive():
    model = {"checkpoint_sha256": "ab" * 32, "num_samples": 8, "seed": 0}
    settings = DicomInferenceSettings().content_dict()
    sops = ["1.2.3.1", "1.2.3.2"]
    fp = result_fingerprint("1.2.3", sops, model, settings)
    assert fp == result_fingerprint("1.2.3", list(sops), dict(model), dict(settings))
    others = {
        result_fingerprint("1.2.4", sops, model, settings),
        result_fingerprint("1.2.3", sops[::-1], model, settings),
        result_fingerprint("1.2.3", sops, model | {"checkpoint_sha256": "cd" * 32}, settings),
        result_fingerprint("1.2.3", sops, model | {"num_samples": 4}, settings),
        result_fingerprint("1.2.3", sops, model, DicomInferenceSettings(threshold=0.4).content_dict()),
    }
    assert fp not in others and len(others) == 5
    uid = derive_uid(fp, "seg-instance")
    assert uid == derive_uid(fp, "seg-instance")
    assert uid != derive_uid(fp, "seg-series")
    assert uid.startswith("2.25.") and len(uid) <= 64 and UID_RE.match(uid)


# ------------------------------------------------------------------------------------ credentials
def test_credentials_from_environment_are_hidden_in_repr():
    env = {"MONAI_BAYES_PACS_USER": "alice", "MONAI_BAYES_PACS_PASSWORD": "pw-XYZ-123"}
    cred = resolve_credentials("http://pacs.local/dicom-web", env=env)
    assert (cred.kind, cred.username, cred.secret, cred.source) == ("basic", "alice", "pw-XYZ-123", "environment")
    assert "pw-XYZ-123" not in repr(cred) and "pw-XYZ-123" not in str(cred)
    token = resolve_credentials("http://pacs.local/", env={"MONAI_BAYES_PACS_TOKEN": "tok-987"})
    assert token.kind == "bearer" and "tok-987" not in repr(token)


def test_credentials_half_set_environment_is_an_error_without_the_value():
    with pytest.raises(PacsConfigError, match="MONAI_BAYES_PACS_PASSWORD is not set") as info:
        resolve_credentials("http://pacs.local/", env={"MONAI_BAYES_PACS_USER": "alice"})
    assert "alice" not in str(info.value)


def test_credentials_from_netrc(tmp_path: Path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs.local login bob password netrc-pw-456\nmachine other login x password y\n")
    netrc.chmod(0o600)
    cred = resolve_credentials("https://pacs.local:8443/dicom-web", env={}, netrc_file=netrc)
    assert (cred.username, cred.secret, cred.source) == ("bob", "netrc-pw-456", f"netrc:{netrc}")
    assert resolve_credentials("http://unknown.host/", env={}, netrc_file=netrc) is None
    assert resolve_credentials("http://pacs.local/", env={"NETRC": str(netrc)}).username == "bob"
    assert resolve_credentials("http://pacs.local/", env={"HOME": str(tmp_path)}) is None  # no ~/.netrc there


def test_credentials_bad_netrc_does_not_quote_the_file(tmp_path: Path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs.local login bob password pw1\n secret-token-xyz\n")  # Python quotes the token
    netrc.chmod(0o600)
    with pytest.raises(PacsConfigError, match="cannot parse netrc file") as info:
        resolve_credentials("http://pacs.local/", env={}, netrc_file=netrc)
    assert "secret-token-xyz" not in str(info.value) and "pw1" not in str(info.value)


def test_url_with_credentials_is_refused_and_redacted():
    with pytest.raises(PacsConfigError, match="embeds credentials") as info:
        PacsClient("http://bob:hunter2@127.0.0.1:8042/dicom-web", credentials=None)
    assert "hunter2" not in str(info.value)
    assert redact_url("http://bob:hunter2@host:80/x") == "http://host:80/x"
    with pytest.raises(PacsConfigError, match="http"):
        PacsClient("ftp://127.0.0.1/dicom-web", credentials=None)


# ------------------------------------------------------------------------------------ retries
class _Handler(http.server.BaseHTTPRequestHandler):
    status = 503
    calls: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).calls.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_stub():
    """A loopback HTTP server answering every GET with ``_Handler.status``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "error", "tries"), [(503, PacsUnavailableError, 3), (500, PacsUnavailableError, 3)])
def test_server_errors_are_retried_with_exponential_backoff(http_stub, status, error, tries):
    _Handler.status = status
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{http_stub.server_address[1]}/dicom-web"
    client = PacsClient(url, credentials=None, retry=RetryPolicy(3, 0.5, 0.8, sleep=sleeps.append))
    with pytest.raises(error, match=rf"HTTP {status}.*after 3 attempt"):
        client.search_series("1.2.3")
    assert len(_Handler.calls) == tries
    assert sleeps == [0.5, 0.8]  # 0.5 · 2^k, capped at 0.8


@pytest.mark.parametrize(("status", "error"), [(401, PacsAuthError), (403, PacsAuthError), (400, PacsRequestError)])
def test_client_errors_are_not_retried(http_stub, status, error):
    _Handler.status = status
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{http_stub.server_address[1]}/dicom-web"
    cred = Credentials("basic", "bob", "pw-never-shown", source="environment")
    client = PacsClient(url, credentials=cred, retry=RetryPolicy(3, 0.5, sleep=sleeps.append))
    with pytest.raises(error) as info:
        client.ping()
    assert len(_Handler.calls) == 1 and sleeps == []
    assert "pw-never-shown" not in str(info.value)


def test_unreachable_server_gives_up_after_bounded_attempts():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    client = PacsClient(
        f"http://127.0.0.1:{port}/dicom-web", credentials=None, retry=RetryPolicy(2, 0.1, sleep=sleeps.append)
    )
    with pytest.raises(PacsUnavailableError, match=r"ConnectionError.*after 2 attempt"):
        client.ping()
    assert sleeps == [0.1]


# ------------------------------------------------------------------------------------ exit codes
def test_flush_report_exit_codes():
    assert FlushReport(sent=["a"]).exit_code == EXIT_OK
    unavailable = FlushReport(pending=["a"], errors={"a": PacsUnavailableError("down")})
    assert unavailable.exit_code == EXIT_PENDING
    auth = FlushReport(pending=["a", "b"], errors={"a": PacsUnavailableError("x"), "b": PacsAuthError("no")})
    assert auth.exit_code == EXIT_AUTH
    refused = FlushReport(pending=["a"], errors={"a": PacsRequestError("refused")})
    assert refused.exit_code == EXIT_DATA
