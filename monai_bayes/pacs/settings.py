"""Settings of the DICOM / PACS pipeline (what a bundle's ``configs/inference_dicom.json`` holds).

:class:`DicomInferenceSettings` is instantiable from a MONAI bundle config::

    "pacs_settings": {"_target_": "monai_bayes.pacs.DicomInferenceSettings", "threshold": 0.5, ...}

The template shipped next to this module (``inference_dicom.json``, also printed by
``monai-bayes pacs template``) lists every field with its default; a test keeps the two in step.
Only the fields that change the written objects enter the result fingerprint (and so the derived
DICOM UIDs): see :meth:`DicomInferenceSettings.content_dict`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any

from monai_bayes.pacs.errors import PacsConfigError

__all__ = [
    "DEFAULT_MAX_VOLUME_VOXELS",
    "TEMPLATE_NAME",
    "UNCERTAINTY_KINDS",
    "CodeSpec",
    "DicomInferenceSettings",
    "SegmentSpec",
    "template_text",
]

TEMPLATE_NAME = "inference_dicom.json"

#: Uncertainty maps the pipeline can write as Parametric Maps / NIfTI (all in nats).
UNCERTAINTY_KINDS = ("total_entropy", "mutual_information", "aleatoric_entropy")

#: Settings that only change how results are computed or delivered, not what they contain.
_TRANSPORT_FIELDS = frozenset(
    {
        "modality",
        "slice_batch_size",
        "write_nifti",
        "connect_timeout_s",
        "read_timeout_s",
        "max_attempts",
        "backoff_s",
        "max_backoff_s",
        "ca_bundle",
        "allow_insecure_http",
        "max_volume_voxels",
        "ae_title",
        "dimse_retrieve",
        "move_port",
        "tls_cert",
        "tls_key",
    }
)

#: Default upper bound of an input volume (voxels): 512 × 512 × 2048, i.e. 2 GiB as float32.
DEFAULT_MAX_VOLUME_VOXELS = 512 * 512 * 2048


@dataclass(frozen=True)
class CodeSpec:
    """A coded concept (DICOM Code Sequence item): code value, coding scheme, meaning."""

    value: str
    scheme: str
    meaning: str

    @classmethod
    def parse(cls, obj: CodeSpec | Mapping[str, Any] | Sequence[str], what: str) -> CodeSpec:
        """Accept a CodeSpec, ``{"value", "scheme", "meaning"}`` or ``[value, scheme, meaning]``."""
        if isinstance(obj, CodeSpec):
            return obj
        if isinstance(obj, Mapping):
            missing = {"value", "scheme", "meaning"} - set(obj)
            if missing:
                raise PacsConfigError(f"{what}: code needs keys value, scheme, meaning; missing {sorted(missing)}")
            return cls(str(obj["value"]), str(obj["scheme"]), str(obj["meaning"]))
        if isinstance(obj, Sequence) and not isinstance(obj, str) and len(obj) == 3:
            return cls(*(str(v) for v in obj))
        raise PacsConfigError(f"{what}: expected a code {{value, scheme, meaning}}, got {obj!r}")


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of the DICOM Segmentation.

    Attributes
    ----------
    label
        Segment label (LO, at most 64 characters).
    class_index
        Channel of the network output: for ``softmax`` the class (``1`` = first foreground class),
        for ``sigmoid`` the output channel (``0`` for a one-channel network).
    category, type
        Segmented property category and type codes (SNOMED CT by default: morphologically abnormal
        structure / nodule).
    """

    label: str = "nodule"
    class_index: int = 1
    category: CodeSpec = field(
        default_factory=lambda: CodeSpec("49755003", "SCT", "Morphologically Abnormal Structure")
    )
    type: CodeSpec = field(default_factory=lambda: CodeSpec("27925004", "SCT", "Nodule"))

    @classmethod
    def parse(cls, obj: SegmentSpec | Mapping[str, Any], index: int) -> SegmentSpec:
        """Build from a mapping with keys ``label``, ``class_index``, ``category``, ``type``."""
        if isinstance(obj, SegmentSpec):
            return obj
        if not isinstance(obj, Mapping):
            raise PacsConfigError(f"segments[{index}]: expected a mapping, got {type(obj).__name__}")
        unknown = set(obj) - {"label", "class_index", "category", "type", "_desc_"}
        if unknown:
            raise PacsConfigError(f"segments[{index}]: unknown keys {sorted(unknown)}")
        default = cls()
        label = str(obj.get("label", default.label))
        if not label or len(label) > 64:
            raise PacsConfigError(f"segments[{index}].label must have 1-64 characters, got {label!r}")
        class_index = obj.get("class_index", default.class_index)
        if not isinstance(class_index, int) or isinstance(class_index, bool) or class_index < 0:
            raise PacsConfigError(f"segments[{index}].class_index must be an int >= 0, got {class_index!r}")
        return cls(
            label=label,
            class_index=class_index,
            category=CodeSpec.parse(obj.get("category", default.category), f"segments[{index}].category"),
            type=CodeSpec.parse(obj.get("type", default.type), f"segments[{index}].type"),
        )


@dataclass
class DicomInferenceSettings:
    """What to read, how to infer, what to write and how to deliver it.

    Attributes
    ----------
    modality
        Accepted Modality values of the input series.
    mode
        ``"2d"``: the network runs slice-wise on whole axial slices ``(b, 1, Y, X)``; ``"3d"``: on
        the volume ``(1, 1, Z, Y, X)`` through the bundle's inferer (e.g. a sliding window);
        ``"auto"``: from the bundle metadata (``network_data_format.inputs.image.spatial_shape``)
        or ``network_def.spatial_dims``.
    slice_batch_size
        Slices per forward pass in 2D mode (memory: ``S × slice_batch_size`` images per pass).
    num_samples
        Monte-Carlo samples ``S``; ``None`` keeps the bundle inferer's value.
    seed
        Seed of the MC noise; ``None`` keeps the bundle inferer's seed, or 0 if it has none. A fixed
        seed makes the result deterministic, which the idempotent UIDs rely on.
    threshold
        Foreground threshold on the predictive mean probability of each segment's class.
    segmentation_type
        ``"binary"`` (thresholded mask) or ``"fractional"`` (predictive mean probability, 8 bit).
    omit_empty_frames
        Leave frames without foreground out of the SEG (smaller objects; readers fill them with 0).
    segments
        One :class:`SegmentSpec` per output class written to the SEG.
    uncertainty_maps
        Which of ``total_entropy``, ``mutual_information``, ``aleatoric_entropy`` to write as DICOM
        Parametric Maps (NIfTI gets all three).
    anatomic_region, frame_laterality
        Anatomic region code (SEG segments and the Parametric Maps' Frame Anatomy) and its
        laterality (``U`` unpaired, ``B`` both, ``L``, ``R``).
    series_number_seg, series_number_pm
        Series Number of the SEG and the Parametric Map series.
    series_description
        Prefix of the written series' descriptions.
    write_nifti
        Also write NIfTI files (mask, probability, uncertainty maps) for research use.
    connect_timeout_s, read_timeout_s
        HTTP timeouts per request (seconds).
    max_attempts, backoff_s, max_backoff_s
        Bounded retries: up to ``max_attempts`` tries per request on connection errors, timeouts,
        5xx, 408 and 429, sleeping ``min(backoff_s · 2^k, max_backoff_s)`` seconds before retry k+1.
    ca_bundle
        PEM file of the certificate authorities to trust for ``https://`` (e.g. a hospital's
        internal CA). ``None``: ``$REQUESTS_CA_BUNDLE`` / ``$CURL_CA_BUNDLE`` if set, else the
        certifi bundle. Verification is never switched off.
    allow_insecure_http
        Allow sending credentials over plain ``http://`` to a host other than loopback (refused by
        default: they would cross the network readable by anyone on the path).
    max_volume_voxels
        Largest input volume accepted (Z · Y · X voxels), checked from the headers before any
        pixel memory is allocated.
    ae_title
        This node's AE title for DIMSE (``dicom://`` URLs): the calling AE of its associations and
        the C-MOVE destination. The PACS must know it (with host and port for C-MOVE).
    dimse_retrieve
        ``"get"`` (C-GET: instances come back on the same association) or ``"move"`` (C-MOVE to
        this node's storage SCP on ``move_port``).
    move_port
        TCP port of the temporary storage SCP receiving C-MOVE sub-operations (``"move"`` only).
    tls_cert, tls_key
        Client certificate chain and key (PEM) for mutual TLS with a ``dicoms://`` peer; its
        certificate is verified against ``ca_bundle`` (else the system trust store).
    """

    modality: list[str] = field(default_factory=lambda: ["CT"])
    mode: str = "auto"
    slice_batch_size: int = 4
    num_samples: int | None = None
    seed: int | None = None
    threshold: float = 0.5
    segmentation_type: str = "binary"
    omit_empty_frames: bool = True
    segments: list[SegmentSpec] = field(default_factory=lambda: [SegmentSpec()])
    uncertainty_maps: list[str] = field(default_factory=lambda: ["total_entropy", "mutual_information"])
    anatomic_region: CodeSpec | None = field(default_factory=lambda: CodeSpec("51185008", "SCT", "Chest"))
    frame_laterality: str = "U"
    series_number_seg: int = 9101
    series_number_pm: int = 9102
    series_description: str = "monai_bayes"
    write_nifti: bool = True
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    max_attempts: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    ca_bundle: str | None = None
    allow_insecure_http: bool = False
    max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS
    ae_title: str = "MONAI_BAYES"
    dimse_retrieve: str = "get"
    move_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        self.modality = [self.modality] if isinstance(self.modality, str) else [str(m) for m in self.modality]
        if not self.modality:
            raise PacsConfigError("modality must name at least one accepted Modality, e.g. ['CT']")
        if self.mode not in ("auto", "2d", "3d"):
            raise PacsConfigError(f"mode must be 'auto', '2d' or '3d', got {self.mode!r}")
        _positive_int(self.slice_batch_size, "slice_batch_size")
        if self.num_samples is not None:
            _positive_int(self.num_samples, "num_samples")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise PacsConfigError(f"seed must be a non-negative int or null, got {self.seed!r}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise PacsConfigError(f"threshold must be in (0, 1), got {self.threshold!r}")
        self.threshold = float(self.threshold)
        if self.segmentation_type not in ("binary", "fractional"):
            raise PacsConfigError(f"segmentation_type must be 'binary' or 'fractional', got {self.segmentation_type!r}")
        if not self.segments:
            raise PacsConfigError("segments must list at least one segment")
        self.segments = [SegmentSpec.parse(s, i) for i, s in enumerate(self.segments)]
        indices = [s.class_index for s in self.segments]
        if len(set(indices)) != len(indices):
            raise PacsConfigError(f"segments must use distinct class_index values, got {indices}")
        self.uncertainty_maps = list(self.uncertainty_maps)
        for kind in self.uncertainty_maps:
            if kind not in UNCERTAINTY_KINDS:
                raise PacsConfigError(f"uncertainty_maps: unknown map {kind!r}; expected some of {UNCERTAINTY_KINDS}")
        if self.anatomic_region is not None:
            self.anatomic_region = CodeSpec.parse(self.anatomic_region, "anatomic_region")
        if self.frame_laterality not in ("U", "B", "L", "R"):
            raise PacsConfigError(f"frame_laterality must be U, B, L or R, got {self.frame_laterality!r}")
        for name in ("series_number_seg", "series_number_pm"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 < value < 2**31:
                raise PacsConfigError(f"{name} must be an int in [1, 2^31), got {value!r}")
        _positive_int(self.max_attempts, "max_attempts")
        for name in ("connect_timeout_s", "read_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise PacsConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        for name in ("backoff_s", "max_backoff_s"):
            if float(getattr(self, name)) < 0:
                raise PacsConfigError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        if self.ca_bundle is not None and not isinstance(self.ca_bundle, str):
            raise PacsConfigError(f"ca_bundle must be a path (string) or null, got {self.ca_bundle!r}")
        if not isinstance(self.allow_insecure_http, bool):
            raise PacsConfigError(f"allow_insecure_http must be true or false, got {self.allow_insecure_http!r}")
        _positive_int(self.max_volume_voxels, "max_volume_voxels")
        self._check_dimse()

    def _check_dimse(self) -> None:
        """Validate the DIMSE fields (AE title, retrieve method, C-MOVE port, TLS files)."""
        from monai_bayes.pacs.transport import check_ae_title

        self.ae_title = check_ae_title(self.ae_title, "ae_title")
        if self.dimse_retrieve not in ("get", "move"):
            raise PacsConfigError(f"dimse_retrieve must be 'get' or 'move', got {self.dimse_retrieve!r}")
        if self.move_port is not None and (
            not isinstance(self.move_port, int) or isinstance(self.move_port, bool) or not 0 < self.move_port < 65536
        ):
            raise PacsConfigError(f"move_port must be a TCP port (1-65535) or null, got {self.move_port!r}")
        if self.dimse_retrieve == "move" and self.move_port is None:
            raise PacsConfigError("dimse_retrieve 'move' needs move_port: the PACS sends the instances to that port")
        for name in ("tls_cert", "tls_key"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise PacsConfigError(f"{name} must be a path (string) or null, got {getattr(self, name)!r}")
        if self.tls_key is not None and self.tls_cert is None:
            raise PacsConfigError("tls_key is set without tls_cert")

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DicomInferenceSettings:
        """Build from a plain mapping (``_target_`` / ``_desc_`` keys ignored); unknown keys raise."""
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k not in ("_target_", "_desc_")}
        unknown = set(data) - known
        if unknown:
            raise PacsConfigError(f"unknown DICOM inference settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (codes and segments as mappings)."""
        return asdict(self)

    def replace(self, **changes: Any) -> DicomInferenceSettings:
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        data = self.to_dict()
        data.update({k: v for k, v in changes.items() if v is not None})
        return type(self).from_dict(data)

    def content_dict(self) -> dict[str, Any]:
        """The settings that change the written objects: they enter the result fingerprint."""
        return {k: v for k, v in self.to_dict().items() if k not in _TRANSPORT_FIELDS}


def _positive_int(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PacsConfigError(f"{name} must be a positive int, got {value!r}")


def template_text() -> str:
    """The ``inference_dicom.json`` bundle-config template shipped with this package."""
    return resources.files("monai_bayes.pacs").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def template_settings() -> dict[str, Any]:
    """The ``pacs_settings`` block of the template as a plain dict (``_target_`` / ``_desc_`` removed)."""
    block = json.loads(template_text())["pacs_settings"]
    return {k: v for k, v in block.items() if k not in ("_target_", "_desc_")}
