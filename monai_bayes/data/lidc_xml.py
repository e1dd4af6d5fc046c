"""Parser for the LIDC-IDRI reader annotation XML (``LidcReadMessage``).

Layout (namespace ``http://www.nih.gov`` in most files, other or no namespace in some; element
names are matched by their local name, so all variants read alike)::

    LidcReadMessage
      ResponseHeader            SeriesInstanceUid, StudyInstanceUID, ...
      readingSession            (one per reader, usually four)
        annotationVersion, servicingRadiologistID
        unblindedReadNodule     noduleID, characteristics? (only nodules >= 3 mm), roi+
          roi                   imageZposition, imageSOP_UID, inclusion (TRUE/FALSE), edgeMap+
            edgeMap             xCoord (column), yCoord (row): pixel of the outline
        nonNodule               nonNoduleID, imageZposition, imageSOP_UID, locus (xCoord, yCoord)

Chest-radiograph reads (root ``IdriReadMessage``, namespace ``http://www.nih.gov/idri``) parse to a
message with ``is_ct == False`` and no sessions; the LIDC reader skips them with a report entry.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monai_bayes.data.errors import LidcXmlError

__all__ = [
    "LIDC_NAMESPACE",
    "LidcNonNodule",
    "LidcReadMessage",
    "LidcReaderNodule",
    "LidcReadingSession",
    "LidcRoi",
    "parse_lidc_xml",
]

LIDC_NAMESPACE = "http://www.nih.gov"


@dataclass
class LidcRoi:
    """One outline on one slice.

    Attributes
    ----------
    z_position
        ``imageZposition``: patient z (ImagePositionPatient[2]) of the slice, mm; ``None`` if absent.
    sop_uid
        ``imageSOP_UID``: SOP Instance UID of the slice; ``None`` if absent.
    inclusion
        ``False`` for a hole to subtract from the reader's inclusion outlines on that slice.
    xy
        ``(N, 2)`` float: ``(x, y)`` = (column, row) pixel coordinates of the outline, in XML order,
        a repeated closing point removed. ``N == 1`` for nodules < 3 mm (a centre mark).
    """

    z_position: float | None
    sop_uid: str | None
    inclusion: bool
    xy: np.ndarray


@dataclass
class LidcReaderNodule:
    """One reader's annotation of one nodule (``unblindedReadNodule``)."""

    nodule_id: str
    reader_index: int
    rois: list[LidcRoi]
    characteristics: dict[str, int] = field(default_factory=dict)

    @property
    def is_small(self) -> bool:
        """True for a "nodule < 3 mm" mark: single-point outlines and no characteristics."""
        return not self.characteristics and all(len(r.xy) == 1 for r in self.rois)


@dataclass
class LidcNonNodule:
    """A ``nonNodule`` mark (a lesion >= 3 mm the reader judged not to be a nodule)."""

    non_nodule_id: str
    reader_index: int
    z_position: float | None
    sop_uid: str | None
    xy: np.ndarray


@dataclass
class LidcReadingSession:
    """One reader's session: their nodules and non-nodules."""

    reader_index: int
    annotation_version: str | None
    radiologist_id: str | None
    nodules: list[LidcReaderNodule] = field(default_factory=list)
    non_nodules: list[LidcNonNodule] = field(default_factory=list)


@dataclass
class LidcReadMessage:
    """A parsed LIDC XML file."""

    path: Path | None
    root_tag: str
    namespace: str | None
    series_instance_uid: str | None
    study_instance_uid: str | None
    sessions: list[LidcReadingSession] = field(default_factory=list)

    @property
    def is_ct(self) -> bool:
        """True for CT reads (``LidcReadMessage``); chest-radiograph files are ``IdriReadMessage``."""
        return self.root_tag == "LidcReadMessage"


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def _strip_namespaces(root: ET.Element) -> str | None:
    ns0, _ = _split(root.tag)
    for el in root.iter():
        if isinstance(el.tag, str):
            el.tag = _split(el.tag)[1]
    return ns0


def _text(el: ET.Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    t = el.text.strip()
    return t or None


def _float(el: ET.Element | None, what: str, where: str) -> float | None:
    t = _text(el)
    if t is None:
        return None
    try:
        return float(t)
    except ValueError:
        raise LidcXmlError(f"{what} must be a number, found {t!r}", where) from None


def _points(parent: ET.Element, tag: str, where: str) -> np.ndarray:
    pts = []
    for em in parent.findall(tag):
        x, y = _float(em.find("xCoord"), "xCoord", where), _float(em.find("yCoord"), "yCoord", where)
        if x is None or y is None:
            raise LidcXmlError(f"{tag} without xCoord/yCoord", where)
        pts.append((x, y))
    xy = np.asarray(pts, dtype=float).reshape(-1, 2)
    if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
        xy = xy[:-1]  # closed outlines repeat their first point
    return xy


def _inclusion(el: ET.Element | None, where: str) -> bool:
    t = (_text(el) or "TRUE").upper()
    if t in ("TRUE", "1", "YES"):
        return True
    if t in ("FALSE", "0", "NO"):
        return False
    raise LidcXmlError(f"inclusion must be TRUE or FALSE, found {t!r}", where)


def _parse_nodule(el: ET.Element, reader: int, where: str) -> LidcReaderNodule:
    nid = _text(el.find("noduleID")) or "?"
    here = f"{where} reader {reader} nodule {nid}"
    chars: dict[str, int] = {}
    ch = el.find("characteristics")
    if ch is not None:
        for c in ch:
            v = _text(c)
            if v is not None:
                try:
                    chars[c.tag] = int(float(v))
                except ValueError:
                    continue
    rois = []
    for k, r in enumerate(el.findall("roi")):
        rwhere = f"{here} roi {k}"
        xy = _points(r, "edgeMap", rwhere)
        if len(xy) == 0:
            raise LidcXmlError("roi has no edgeMap points; expected at least one", rwhere)
        z = _float(r.find("imageZposition"), "imageZposition", rwhere)
        uid = _text(r.find("imageSOP_UID"))
        if z is None and uid is None:
            raise LidcXmlError("roi names neither imageSOP_UID nor imageZposition", rwhere)
        rois.append(LidcRoi(z_position=z, sop_uid=uid, inclusion=_inclusion(r.find("inclusion"), rwhere), xy=xy))
    if not rois:
        raise LidcXmlError("unblindedReadNodule has no roi; expected at least one", here)
    return LidcReaderNodule(nodule_id=nid, reader_index=reader, rois=rois, characteristics=chars)


def _parse_non_nodule(el: ET.Element, reader: int, where: str) -> LidcNonNodule:
    nid = _text(el.find("nonNoduleID")) or "?"
    here = f"{where} reader {reader} nonNodule {nid}"
    return LidcNonNodule(
        non_nodule_id=nid,
        reader_index=reader,
        z_position=_float(el.find("imageZposition"), "imageZposition", here),
        sop_uid=_text(el.find("imageSOP_UID")),
        xy=_points(el, "locus", here),
    )


def parse_lidc_xml(source: str | os.PathLike[str] | bytes) -> LidcReadMessage:
    """Parse an LIDC annotation XML file (or its bytes).

    Parameters
    ----------
    source
        Path of the ``.xml`` file, or its content as bytes.

    Returns
    -------
    LidcReadMessage
        Reading sessions in file order (``reader_index`` 0, 1, …). Non-CT messages
        (``IdriReadMessage``) come back with ``is_ct == False`` and no sessions.

    Raises
    ------
    LidcXmlError
        Malformed XML, an unknown root element, a CT message without SeriesInstanceUid, an roi
        without points or slice reference, or non-numeric coordinates; the message names the file,
        reader, nodule and roi.
    """
    path = None if isinstance(source, bytes) else Path(source)
    where = str(path) if path is not None else "<xml bytes>"
    try:
        root = ET.fromstring(source) if isinstance(source, bytes) else ET.parse(source).getroot()
    except (ET.ParseError, LookupError, UnicodeError) as e:  # LookupError: an unknown declared encoding
        raise LidcXmlError(f"malformed XML ({type(e).__name__}: {e})", where) from e
    except OSError as e:
        raise LidcXmlError(f"cannot read file ({e})", where) from e
    ns = _strip_namespaces(root)
    if root.tag not in ("LidcReadMessage", "IdriReadMessage"):
        raise LidcXmlError(f"root element must be LidcReadMessage, found {root.tag!r}", where)
    header = root.find("ResponseHeader")
    series = study = None
    if header is not None:
        series = _text(header.find("SeriesInstanceUid")) or _text(header.find("SeriesInstanceUID"))
        study = _text(header.find("StudyInstanceUID")) or _text(header.find("StudyInstanceUid"))
    msg = LidcReadMessage(
        path=path, root_tag=root.tag, namespace=ns, series_instance_uid=series, study_instance_uid=study
    )
    if not msg.is_ct:
        return msg
    if series is None:
        raise LidcXmlError("ResponseHeader/SeriesInstanceUid missing; expected the UID of the CT series", where)
    for i, s in enumerate(root.findall("readingSession")):
        session = LidcReadingSession(
            reader_index=i,
            annotation_version=_text(s.find("annotationVersion")),
            radiologist_id=_text(s.find("servicingRadiologistID")),
        )
        session.nodules = [_parse_nodule(n, i, where) for n in s.findall("unblindedReadNodule")]
        session.non_nodules = [_parse_non_nodule(n, i, where) for n in s.findall("nonNodule")]
        msg.sessions.append(session)
    return msg
