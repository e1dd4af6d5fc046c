"""Fixtures of the PACS tests: a real Orthanc (DICOMweb plugin), dciodvfy, a synthetic CT, a tiny bundle.

* ``orthanc`` (session) -- ``Orthanc`` started as a subprocess with a generated configuration: HTTP
  on a free loopback port, remote access disabled, the DICOM server disabled (``orthanc_dimse``: a second
  Orthanc with it enabled, see there), storage and index in a
  temporary folder, HTTP basic authentication with a test user, the DICOMweb plugin loaded. Tests
  may :meth:`OrthancServer.stop` and :meth:`OrthancServer.start` it (same port, same storage);
  ``running_orthanc`` makes sure it is up again for the next test.
* ``dciodvfy`` -- validates a DICOM file with dicom3tools' ``dciodvfy``: errors fail the test,
  warnings are printed (``pytest -s`` or the captured output shows them).
* ``ct_series`` (session) -- a 12 × 64 × 64 synthetic CT series written by the data package's
  writer; ``clone_series`` makes copies with new Study/Series/SOP UIDs for tests that need their
  own study.
* ``tiny_bundle`` (session) -- a bundle folder following the inference contract whose network is a
  single partial-Bayes 3×3 convolution with hand-set weights (a soft HU threshold), so masks and
  uncertainty are meaningful without training.

Orthanc and dciodvfy are installed by ``scripts/install_system_deps.sh`` (called by ``.ci/run``);
when missing, these fixtures FAIL with that hint rather than skip.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.dataset import Dataset

INSTALL_HINT = (
    "install it with: bash scripts/install_system_deps.sh (apt packages orthanc, orthanc-dicomweb, dicom3tools)"
)
TEST_USER = "monai-bayes-test"
TEST_PASSWORD = "s3cret-Pa55word-for-tests"


# --------------------------------------------------------------------------------------- Orthanc
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find_orthanc() -> str:
    found = os.environ.get("ORTHANC_BINARY") or shutil.which("Orthanc")
    if not found:
        for cand in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc", "/usr/local/bin/Orthanc"):
            if os.access(cand, os.X_OK):
                found = cand
                break
    if not found:
        pytest.fail(f"Orthanc executable not found; {INSTALL_HINT}", pytrace=False)
    return found


def _find_dicomweb_plugin() -> str:
    env = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    patterns = [env] if env else []
    patterns += [
        "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
        "/usr/lib/orthanc/libOrthancDicomWeb.so*",
        "/usr/lib/*/orthanc/libOrthancDicomWeb.so*",
        "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
    ]
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    pytest.fail(f"Orthanc DICOMweb plugin (libOrthancDicomWeb.so) not found; {INSTALL_HINT}", pytrace=False)


@dataclass
class OrthancServer:
    """A private Orthanc for the tests (see the module docstring)."""

    binary: str
    plugin: str
    workdir: Path
    port: int = field(default_factory=_free_port)
    user: str = TEST_USER
    password: str = TEST_PASSWORD
    proc: subprocess.Popen | None = None
    dicom_enabled: bool = False
    dicom_port: int = field(default_factory=_free_port)
    dicom_aet: str = "ORTHANC"
    lua_script: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.base_url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def write_config(self) -> Path:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "monai_bayes-tests",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpServerEnabled": True,
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomServerEnabled": self.dicom_enabled,
            "DicomPort": self.dicom_port,
            "DicomAet": self.dicom_aet,
            # only modalities registered by the test (all on 127.0.0.1) may talk DIMSE to this Orthanc
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomScuTimeout": 10,
            "HttpThreadsCount": 4,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "OverwriteInstances": False,
            "StorageCompression": False,
            "HttpDescribeErrors": True,
            "ExecuteLuaEnabled": False,
            "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
        }
        if self.lua_script is not None:
            lua = self.workdir / "route.lua"
            lua.write_text(self.lua_script)
            config["LuaScripts"] = [str(lua)]
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 60.0) -> None:
        if self.is_running():
            return
        config = self.write_config()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen([self.binary, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Orthanc exited with code {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                r = requests.get(f"{self.base_url}/system", auth=(self.user, self.password), timeout=2)
                if r.status_code == 200 and "dicom-web" in self.get("/plugins"):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"Orthanc did not answer within {timeout_s:g} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # REST helpers (Orthanc's own API, for assertions)
    def get(self, path: str):
        r = requests.get(f"{self.base_url}{path}", auth=(self.user, self.password), timeout=30)
        r.raise_for_status()
        return r.json()

    @property
    def dimse_url(self) -> str:
        return f"dicom://{self.dicom_aet}@127.0.0.1:{self.dicom_port}"

    def add_modality(self, name: str, aet: str, port: int) -> None:
        """Register a DIMSE peer on 127.0.0.1 (allowed to echo, find, get, move, store)."""
        body = {"AET": aet, "Host": "127.0.0.1", "Port": port}
        body |= {k: True for k in ("AllowEcho", "AllowFind", "AllowGet", "AllowMove", "AllowStore")}
        r = requests.put(f"{self.base_url}/modalities/{name}", json=body, auth=(self.user, self.password), timeout=30)
        r.raise_for_status()

    def count_instances(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def instances_of_sop(self, sop_instance_uid: str) -> list[str]:
        r = requests.post(
            f"{self.base_url}/tools/lookup", data=sop_instance_uid, auth=(self.user, self.password), timeout=30
        )
        r.raise_for_status()
        return [item["ID"] for item in r.json() if item["Type"] == "Instance"]


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    server = OrthancServer(_find_orthanc(), _find_dicomweb_plugin(), tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: Orthanc routes a CT instance of a study described like this to the modality "monai-node".
ROUTE_DESCRIPTION = "route-to-monai-node"
_ROUTE_LUA = f"""
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Modality'] == 'CT' and tags['StudyDescription'] == '{ROUTE_DESCRIPTION}' then
    SendToModality(instanceId, 'monai-node')
  end
end
"""


@pytest.fixture(scope="session")
def orthanc_dimse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A second Orthanc with its DICOM server on (``dimse_url``) and a routing rule (``ROUTE_DESCRIPTION``)."""
    server = OrthancServer(
        _find_orthanc(),
        _find_dicomweb_plugin(),
        tmp_path_factory.mktemp("orthanc_dimse"),
        dicom_enabled=True,
        lua_script=_ROUTE_LUA,
    )
    server.route_description = ROUTE_DESCRIPTION  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def running_orthanc(orthanc: OrthancServer) -> Iterator[OrthancServer]:
    """The session Orthanc, started if a previous test left it stopped (and restarted after)."""
    orthanc.start()
    yield orthanc
    orthanc.start()


@pytest.fixture
def pacs_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, orthanc: OrthancServer) -> dict[str, str]:
    """Credentials of the test Orthanc in the environment; HOME moved away from any real ~/.netrc."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("MONAI_BAYES_PACS_TOKEN", raising=False)
    monkeypatch.delenv("MONAI_BAYES_PACS_URL", raising=False)
    monkeypatch.delenv("MONAI_BAYES_PACS_OUTPUT", raising=False)
    monkeypatch.setenv("MONAI_BAYES_PACS_USER", orthanc.user)
    monkeypatch.setenv("MONAI_BAYES_PACS_PASSWORD", orthanc.password)
    return {"MONAI_BAYES_PACS_USER": orthanc.user, "MONAI_BAYES_PACS_PASSWORD": orthanc.password}


# --------------------------------------------------------------------------------------- dciodvfy
@dataclass
class DciodvfyReport:
    path: Path
    errors: list[str]
    warnings: list[str]
    output: str


def _find_dciodvfy() -> str:
    found = shutil.which("dciodvfy")
    if not found:
        pytest.fail(f"dciodvfy (dicom3tools) not found; {INSTALL_HINT}", pytrace=False)
    return found


@pytest.fixture(scope="session")
def dciodvfy():
    """``dciodvfy(path) -> DciodvfyReport``; fails the test on any error, prints the warnings."""
    exe = _find_dciodvfy()

    def run(path: str | os.PathLike[str]) -> DciodvfyReport:
        proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Error")]
        warnings = [ln for ln in lines if ln.startswith("Warning")]
        print(f"\ndciodvfy {Path(path).name}: {len(errors)} error(s), {len(warnings)} warning(s)")
        for w in warnings:
            print(f"  {w}")
        assert not errors, f"dciodvfy reports errors for {path}:\n" + "\n".join(errors)
        return DciodvfyReport(Path(path), errors, warnings, out)

    return run


# --------------------------------------------------------------------------------------- data
@dataclass
class CTSeries:
    folder: Path
    files: list[Path]
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    patient_name: str

    def datasets(self) -> list[Dataset]:
        return [pydicom.dcmread(p) for p in self.files]


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> CTSeries:
    from monai_bayes.data.synthetic import write_lidc_cases

    root = tmp_path_factory.mktemp("synthetic_ct")
    case = write_lidc_cases(root / "lidc", num_cases=1, seed=3, shape=(12, 64, 64))[0]
    # a folder with the CT only (the case folder also holds the LIDC XML, which the reader ignores)
    folder = root / "ct"
    folder.mkdir()
    files = []
    for p in case.dicom_files:
        dst = folder / Path(p).name
        shutil.copy2(p, dst)
        files.append(dst)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return CTSeries(
        folder, files, case.study_instance_uid, case.series_instance_uid, str(ds.PatientID), str(ds.PatientName)
    )


def clone_series(datasets: list[Dataset], tag: str, **changes: object) -> list[Dataset]:
    """Copies of ``datasets`` in a new study/series (UIDs derived from ``tag``), attributes changed."""
    from pydicom.uid import generate_uid

    def uid(*parts: object) -> str:
        return str(generate_uid(entropy_srcs=["monai_bayes.tests.pacs", tag, *map(str, parts)]))

    out = []
    for k, ds in enumerate(datasets):
        c = copy.deepcopy(ds)
        c.StudyInstanceUID = uid("study")
        c.SeriesInstanceUID = uid("series")
        c.FrameOfReferenceUID = uid("frame")
        c.SOPInstanceUID = uid("sop", k)
        c.file_meta.MediaStorageSOPInstanceUID = c.SOPInstanceUID
        for key, value in changes.items():
            setattr(c, key, value)
        if "SOPClassUID" in changes:
            c.file_meta.MediaStorageSOPClassUID = changes["SOPClassUID"]
        out.append(c)
    return out


# --------------------------------------------------------------------------------------- bundle
#: HU → [0, 1] like a CT bundle; the conv puts the soft threshold at 0.5 (= -300 HU).
_PREPROCESSING = {
    "_target_": "Compose",
    "transforms": [
        {"_target_": "ScaleIntensityRange", "a_min": -1000, "a_max": 400, "b_min": 0.0, "b_max": 1.0, "clip": True}
    ],
}
R_BAYES = 0.25


def make_bundle(
    root: Path,
    spatial_dims: int = 2,
    num_samples: int = 4,
    activation: str = "softmax",
    dicom_settings: dict | None = None,
) -> Path:
    """Write a bundle folder whose network is one partial-Bayes 3×3 conv on x = HU scaled to [0, 1].

    softmax: logit₁ − logit₀ = 40·(x − 0.5) (class 1 = tissue above -300 HU); sigmoid: two
    independent channels, 0 = tissue (x > 0.5), 1 = air (x < 0.5), each with logit ±20·(x − 0.5).
    """
    import torch
    from monai.networks.blocks import Convolution

    from monai_bayes import to_partial_bayes
    from monai_bayes.networks import save_checkpoint
    from monai_bayes.selection import select_topk

    network_def = {
        "_target_": "monai.networks.blocks.Convolution",
        "spatial_dims": spatial_dims,
        "in_channels": 1,
        "out_channels": 2,
        "kernel_size": 3,
        "conv_only": True,
    }
    net = Convolution(spatial_dims, 1, 2, kernel_size=3, conv_only=True)
    centre = [1] * spatial_dims
    sign = (-1.0, 1.0) if activation == "softmax" else (1.0, -1.0)  # sign of channel 0 and 1
    with torch.no_grad():
        conv = net.conv
        conv.weight.zero_()
        for ch, sg in enumerate(sign):
            conv.weight[(ch, 0, *centre)] = 20.0 * sg
            conv.bias[ch] = -10.0 * sg
    scores = {name: p.detach().abs() for name, p in net.named_parameters()}
    net = to_partial_bayes(net, select_topk(scores, R_BAYES), sigma_init=2.0)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    save_checkpoint(net, root / "models" / "model.pt")
    inner = (
        {"_target_": "SimpleInferer"}
        if spatial_dims == 2
        else {"_target_": "SlidingWindowInferer", "roi_size": [8, 32, 32], "sw_batch_size": 2, "overlap": 0.25}
    )
    inference = {
        "imports": ["$import monai_bayes"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$monai_bayes.networks.load_checkpoint(@network_def, @bundle_root + '/models/model.pt').to(@device)",
        "inferer": {
            "_target_": "monai_bayes.inferers.MonteCarloInferer",
            "num_samples": num_samples,
            "inferer": inner,
            "activation": activation,
            "output": "samples",
            "seed": 0,
        },
        "image_preprocessing": _PREPROCESSING,
    }
    metadata = {
        "name": f"tiny_conv_{spatial_dims}d_{activation}",
        "version": "0.1.0",
        "monai_bayes": {"method": "sparse_bayes", "r_bayes": R_BAYES, "num_samples": num_samples},
        "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [128] * spatial_dims}},
            "outputs": {"pred": {"type": "probabilities", "num_channels": 2}},
        },
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    if dicom_settings is not None:
        (root / "configs" / "inference_dicom.json").write_text(json.dumps(dicom_settings, indent=2))
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny_conv_2d")


def nifti_zyx(path: Path) -> np.ndarray:
    """A NIfTI written by the pipeline, back in DICOM array order ``(Z, Y, X)`` (or ``(C, Z, Y, X)``)."""
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj)
    return data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)


@pytest.fixture(scope="session")
def clone():
    """The :func:`clone_series` helper."""
    return clone_series


@pytest.fixture(scope="session")
def bundle_factory():
    """The :func:`make_bundle` helper."""
    return make_bundle


@pytest.fixture(scope="session")
def read_nifti():
    """The :func:`nifti_zyx` helper."""
    return nifti_zyx
