"""Load the inference side of a monai_bayes bundle for the PACS pipeline.

Bundle contract (see ``docs/pacs.md``; an exported ``.onnx`` artefact with its sidecar works as well,
:func:`load_exported_bundle`)::

    <bundle>/configs/metadata.json        MONAI metadata; "monai_bayes": {"method", "r_bayes", ...}
    <bundle>/configs/inference.json       self-contained: bundle_root, device, network_def, network (weights
                                          loaded), inferer (a MonteCarloInferer), image_preprocessing (optional)
    <bundle>/configs/inference_dicom.json optional: "pacs_settings" (DicomInferenceSettings)
    <bundle>/models/model.pt              the checkpoint (+ model_bayes.pt / model_nested.pt: the stochastic
                                          extras; all hashed into the result fingerprint)

:func:`load_inference_bundle` parses the configs with :class:`monai.bundle.ConfigParser`
(overriding ``bundle_root`` and optionally ``device``), instantiates ``network`` (in eval mode),
``inferer`` and ``image_preprocessing`` (an array transform on a channel-first image; the MONAI
``preprocessing`` property of an inference config is the *dataset* transform, which loads files),
and applies ``num_samples`` / ``seed`` overrides to the inferer.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_bayes.inferers import MonteCarloInferer
from monai_bayes.pacs.errors import BundleError, PacsConfigError
from monai_bayes.pacs.settings import TEMPLATE_NAME, DicomInferenceSettings
from monai_bayes.utils.files import read_json_object

__all__ = ["InferenceBundle", "configure_inferer", "file_sha256", "load_exported_bundle", "load_inference_bundle"]

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = ("network", "inferer")


@dataclass
class InferenceBundle:
    """A bundle's inference components, ready to run.

    Attributes
    ----------
    root
        Bundle folder.
    name, version
        From ``metadata.json`` (``name`` defaults to the folder name).
    network
        The network with its weights, in eval mode, on :attr:`device`.
    inferer
        The bundle's :class:`~monai_bayes.inferers.MonteCarloInferer`, set to ``output="samples"``.
    preprocessing
        Callable on a channel-first image ``(1, *spatial)`` (identity if the bundle has none).
    device
        Where the network runs.
    spatial_dims
        2 (slice-wise) or 3 (volumetric), or ``None`` if neither metadata nor ``network_def`` say.
    method, r_bayes
        ``metadata["monai_bayes"]["method"]`` / ``["r_bayes"]`` (the fraction of Bayesian weights).
    checkpoint_sha256, config_sha256
        Hashes of the weights (``models/*``) and of ``configs/inference.json`` (fingerprint inputs).
    metadata
        The whole ``metadata.json``.
    settings
        ``pacs_settings`` of ``configs/inference_dicom.json`` if present, else the defaults.
    """

    root: Path
    name: str
    version: str
    network: nn.Module
    inferer: MonteCarloInferer
    preprocessing: Callable[[Any], Any]
    device: torch.device
    spatial_dims: int | None
    method: str | None
    r_bayes: float | None
    checkpoint_sha256: str
    config_sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    settings: DicomInferenceSettings = field(default_factory=DicomInferenceSettings)

    @property
    def num_samples(self) -> int:
        """Monte-Carlo samples ``S`` drawn per input."""
        return int(self.inferer.num_samples)

    @property
    def activation(self) -> str:
        """``"softmax"`` or ``"sigmoid"``."""
        return str(self.inferer.activation)

    @property
    def seed(self) -> int:
        """Seed of the MC noise (always set: the pipeline needs deterministic results)."""
        return int(self.inferer.seed)  # type: ignore[arg-type]

    def model_dict(self) -> dict[str, Any]:
        """What identifies the model in manifests and the fingerprint (no paths, no secrets)."""
        return {
            "name": self.name,
            "version": self.version,
            "method": self.method,
            "r_bayes": self.r_bayes,
            "num_samples": self.num_samples,
            "activation": self.activation,
            "seed": self.seed,
            "spatial_dims": self.spatial_dims,
            "checkpoint_sha256": self.checkpoint_sha256,
            "config_sha256": self.config_sha256,
        }


def configure_inferer(inferer: MonteCarloInferer, num_samples: int | None = None, seed: int | None = None) -> None:
    """Set ``S`` and the seed of a bundle's MC inferer (a missing seed becomes 0: results must be
    reproducible) and make it return the samples ``(B, S, C, *sp)``.
    """
    if num_samples is not None:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise PacsConfigError(f"num_samples must be a positive int, got {num_samples!r}")
        inferer.num_samples = num_samples
        if isinstance(inferer.chunk_size, int):  # "auto" plans per call
            inferer.chunk_size = min(inferer.chunk_size, num_samples)
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise PacsConfigError(f"seed must be a non-negative int, got {seed!r}")
        inferer.seed = seed
    elif inferer.seed is None:
        inferer.seed = 0
    inferer.output = "samples"


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _weights_sha256(root: Path) -> str:
    """Hash of the published weights: ``models/model.pt`` alone, or -- when the bundle splits a stochastic
    model into means and extras (``model_bayes.pt``, ``model_nested.pt``) -- of every ``models/*.pt``
    (sorted); without ``model.pt``, of every file under ``models/``.
    """
    models = root / "models"
    main = models / "model.pt"
    if main.is_file():
        weights = sorted(p for p in models.glob("*.pt") if p.is_file())
        if weights == [main]:
            return file_sha256(main)
        files = weights
    else:
        files = sorted(p for p in models.rglob("*") if p.is_file()) if models.is_dir() else []
    if not files:
        raise BundleError(f"{models}: no checkpoint found; expected models/model.pt")
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(models).as_posix().encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except ValueError as err:
        raise BundleError(str(err)) from None


def _spatial_dims(metadata: dict[str, Any], parser: Any) -> int | None:
    try:
        shape = metadata["network_data_format"]["inputs"]["image"]["spatial_shape"]
        if isinstance(shape, list | tuple) and len(shape) in (2, 3):
            return len(shape)
    except (KeyError, TypeError):
        pass
    try:
        dims = parser.get("network_def", {}).get("spatial_dims")
    except AttributeError:
        dims = None
    return int(dims) if dims in (2, 3) else None


def _parse(parser: Any, key: str, where: Path) -> Any:
    try:
        return parser.get_parsed_content(key)
    except Exception as err:  # config evaluation raises anything; name the key and the file
        cause = err.__cause__ or err
        raise BundleError(f"{where}: cannot instantiate {key!r} ({type(cause).__name__}: {cause})") from err


def load_inference_bundle(
    root: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
) -> InferenceBundle:
    """Read a bundle folder and instantiate its inference components.

    Parameters
    ----------
    root
        Bundle folder with ``configs/inference.json`` and ``configs/metadata.json``, or an exported
        ``.onnx`` artefact (:func:`load_exported_bundle`).
    device
        Override of the config's ``device`` (e.g. ``"cpu"``, ``"cuda:0"``).
    num_samples
        Override of the inferer's ``S`` (also ``settings.num_samples`` when given there).
    seed
        Override of the inferer's seed; without one the inferer's own seed is kept, or 0.

    Returns
    -------
    InferenceBundle

    Raises
    ------
    BundleError
        (a ``ValueError``) naming the file / key: missing configs or checkpoint, invalid JSON, a
        component that fails to instantiate, an inferer that is not a ``MonteCarloInferer`` or has
        no activation.
    """
    from monai.bundle import ConfigParser

    root = Path(root).expanduser().resolve()
    if root.suffix == ".onnx":
        return load_exported_bundle(root, num_samples=num_samples, seed=seed)
    configs = root / "configs"
    inference_json, metadata_json, dicom_json = (
        configs / "inference.json",
        configs / "metadata.json",
        configs / TEMPLATE_NAME,
    )
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found")
    for p in (inference_json, metadata_json):
        if not p.is_file():
            raise BundleError(f"{p}: missing; a bundle needs configs/inference.json and configs/metadata.json")
    metadata = _read_json(metadata_json)
    _read_json(inference_json)  # clear error for invalid JSON before ConfigParser's
    config_files = [str(inference_json)]
    if dicom_json.is_file():
        _read_json(dicom_json)
        config_files.append(str(dicom_json))

    parser = ConfigParser(globals={"monai_bayes": "monai_bayes", "os": "os"})
    parser.read_config(config_files)
    parser.read_meta(str(metadata_json))
    missing = [k for k in _REQUIRED_KEYS if k not in parser]
    if missing:
        raise BundleError(f"{inference_json}: missing required keys {missing}")
    parser["bundle_root"] = str(root)
    if device is not None:
        parser["device"] = f"$torch.device({str(torch.device(device))!r})"
    parser.parse(reset=True)

    settings = DicomInferenceSettings()
    if dicom_json.is_file() and "pacs_settings" in parser:
        value = _parse(parser, "pacs_settings", dicom_json)
        try:
            settings = value if isinstance(value, DicomInferenceSettings) else DicomInferenceSettings.from_dict(value)
        except PacsConfigError as err:
            raise BundleError(f"{dicom_json}: pacs_settings: {err}") from None

    network = _parse(parser, "network", inference_json)
    inferer = _parse(parser, "inferer", inference_json)
    preprocessing = _parse(parser, "image_preprocessing", inference_json) if "image_preprocessing" in parser else None
    if not isinstance(network, nn.Module):
        raise BundleError(f"{inference_json}: 'network' must be a torch.nn.Module, got {type(network).__name__}")
    if not isinstance(inferer, MonteCarloInferer):
        raise BundleError(
            f"{inference_json}: 'inferer' must be a monai_bayes.inferers.MonteCarloInferer, "
            f"got {type(inferer).__name__}"
        )
    if inferer.activation not in ("softmax", "sigmoid"):
        raise BundleError(
            f"{inference_json}: the inferer needs activation 'softmax' or 'sigmoid', got {inferer.activation!r}"
        )
    if preprocessing is not None and not callable(preprocessing):
        raise BundleError(
            f"{inference_json}: 'image_preprocessing' must be callable, got {type(preprocessing).__name__}"
        )

    configure_inferer(
        inferer,
        num_samples=num_samples if num_samples is not None else settings.num_samples,
        seed=seed if seed is not None else settings.seed,
    )

    dev = next((p.device for p in network.parameters()), torch.device("cpu"))
    mb = metadata.get("monai_bayes", {}) if isinstance(metadata.get("monai_bayes"), dict) else {}
    r_bayes = mb.get("r_bayes")
    bundle = InferenceBundle(
        root=root,
        name=str(metadata.get("name") or root.name),
        version=str(metadata.get("version") or "0"),
        network=network.eval(),
        inferer=inferer,
        preprocessing=preprocessing if preprocessing is not None else (lambda x: x),
        device=dev,
        spatial_dims=_spatial_dims(metadata, parser),
        method=str(mb["method"]) if mb.get("method") is not None else None,
        r_bayes=float(r_bayes) if r_bayes is not None else None,
        checkpoint_sha256=_weights_sha256(root),
        config_sha256=file_sha256(inference_json),
        metadata=metadata,
        settings=settings,
    )
    logger.info(
        "bundle %s %s: method=%s r_bayes=%s S=%d seed=%d device=%s",
        bundle.name,
        bundle.version,
        bundle.method,
        bundle.r_bayes,
        bundle.num_samples,
        bundle.seed,
        bundle.device,
    )
    return bundle


def load_exported_bundle(
    artefact: str | os.PathLike[str], *, num_samples: int | None = None, seed: int | None = None
) -> InferenceBundle:
    """An exported ``.onnx`` artefact (``monai-bayes export <bundle> model.onnx``) as an :class:`InferenceBundle`.

    No network definition, weights or training code are read: the network is the onnxruntime session
    (:class:`~monai_bayes.export.ExportedNetwork`); the sidecar ``<artefact>.json`` written by the export
    carries the bundle's configs, from which the image preprocessing, the inferer's activation and seed,
    the PACS settings and the metadata are taken. The inferer runs all ``S`` samples in one call of the
    graph, through a ``SlidingWindowInferer`` with the graph's spatial shape as ROI (one window when the
    image has that shape; otherwise the bundle's own sliding-window settings if its ROI matches, else
    overlap 0.25). With the same seed, the noise equals what the bundle's network draws, so the outputs
    match the bundle's up to float rounding.

    Parameters
    ----------
    artefact
        The ``.onnx`` file; ``<artefact>.json`` must exist next to it.
    num_samples
        Must equal the artefact's ``S`` if given (it is fixed in the graph).
    seed
        Override of the bundle's seed (default: the bundle's, else 0).

    Returns
    -------
    InferenceBundle

    Raises
    ------
    BundleError
        Naming the file: missing artefact or sidecar, a sidecar without the bundle's configs (exported
        by an older version), a config component that fails to instantiate, or another ``num_samples``.
    """
    from monai.bundle import ConfigParser
    from monai.inferers import SlidingWindowInferer
    from monai.utils import ensure_tuple

    from monai_bayes.export import ExportedNetwork

    path = Path(artefact).expanduser().resolve()
    sidecar = path.with_name(path.name + ".json")
    for p in (path, sidecar):
        if not p.is_file():
            raise BundleError(f"{p}: missing; an exported artefact needs the .onnx file and its .onnx.json sidecar")
    info = _read_json(sidecar)
    configs = info.get("bundle")
    if not isinstance(configs, dict) or not isinstance(configs.get("inference"), dict):
        raise BundleError(
            f"{sidecar}: no 'bundle' section with the bundle's inference config; export the artefact again "
            "with `monai-bayes export <bundle> <artefact>.onnx`"
        )
    network = ExportedNetwork(path)
    if num_samples is not None and num_samples != network.num_samples:
        raise BundleError(f"{path}: the artefact runs S = {network.num_samples} samples, asked for {num_samples}")
    parser = ConfigParser(globals={"monai_bayes": "monai_bayes", "os": "os"})
    parser.read_config({**configs["inference"], **configs.get("inference_dicom", {})})
    parser["bundle_root"] = str(path.parent)
    parser.parse(reset=True)
    settings = DicomInferenceSettings()
    if "pacs_settings" in parser:
        value = _parse(parser, "pacs_settings", sidecar)
        try:
            settings = value if isinstance(value, DicomInferenceSettings) else DicomInferenceSettings.from_dict(value)
        except PacsConfigError as err:
            raise BundleError(f"{sidecar}: pacs_settings: {err}") from None
    preprocessing = _parse(parser, "image_preprocessing", sidecar) if "image_preprocessing" in parser else None
    bundle_inferer = _parse(parser, "inferer", sidecar)
    if not isinstance(bundle_inferer, MonteCarloInferer) or bundle_inferer.activation not in ("softmax", "sigmoid"):
        raise BundleError(
            f"{sidecar}: the bundle's inferer must be a MonteCarloInferer with a softmax/sigmoid activation"
        )
    roi = list(network.spatial_shape)
    inner = bundle_inferer.inferer
    if not (isinstance(inner, SlidingWindowInferer) and list(ensure_tuple(inner.roi_size)) == roi):
        inner = SlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=0.25)
    inferer = MonteCarloInferer(
        network.num_samples,
        inferer=inner,
        chunk_size=None,
        activation=bundle_inferer.activation,
        seed=bundle_inferer.seed,
        shared_prefix=False,
        sparse_input=False,
    )
    configure_inferer(inferer, seed=seed if seed is not None else settings.seed)
    metadata = configs.get("metadata") or {}
    mb = metadata.get("monai_bayes", {}) if isinstance(metadata.get("monai_bayes"), dict) else {}
    r_bayes = mb.get("r_bayes")
    return InferenceBundle(
        root=path,
        name=str(metadata.get("name") or path.stem),
        version=str(metadata.get("version") or "0"),
        network=network,
        inferer=inferer,
        preprocessing=preprocessing if preprocessing is not None else (lambda x: x),
        device=torch.device("cpu"),
        spatial_dims=len(roi),
        method=str(mb["method"]) if mb.get("method") is not None else None,
        r_bayes=float(r_bayes) if r_bayes is not None else None,
        checkpoint_sha256=file_sha256(path),
        config_sha256=file_sha256(sidecar),
        metadata=metadata,
        settings=settings,
    )
