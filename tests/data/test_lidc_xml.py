"""LIDC XML parsing: namespaces, sessions, nodules, holes, non-nodules, non-CT reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monai_bayes.data import LidcXmlError, parse_lidc_xml
from monai_bayes.data.synthetic import load_lidc_manifest


def test_parse_synthetic_xml_matches_manifest(lidc_raw: Path) -> None:
    for case in load_lidc_manifest(lidc_raw)[:5]:
        msg = parse_lidc_xml(case.xml_path)
        assert msg.is_ct and msg.namespace == "http://www.nih.gov"
        assert msg.series_instance_uid == case.series_instance_uid
        assert msg.study_instance_uid == case.study_instance_uid
        assert len(msg.sessions) == 4
        for n in case.nodules:
            for r, nid in n["reader_nodule_ids"].items():
                nod = next(x for x in msg.sessions[int(r)].nodules if x.nodule_id == nid)
                assert nod.is_small == (int(r) in n["small_readers"])
                assert bool(nod.characteristics) != nod.is_small
                for roi in nod.rois:
                    assert roi.sop_uid in case.sop_instance_uids
                    assert len(roi.xy) >= 1 and roi.xy.shape[1] == 2
        marked = sum(len(nn["readers"]) for nn in case.non_nodules)
        assert sum(len(s.non_nodules) for s in msg.sessions) == marked


def test_exclusion_rois_are_parsed(lidc_raw: Path) -> None:
    found = 0
    for case in load_lidc_manifest(lidc_raw):
        msg = parse_lidc_xml(case.xml_path)
        found += sum(not roi.inclusion for s in msg.sessions for n in s.nodules for roi in n.rois)
    cavitary = sum(n["cavity_radius_mm"] > 0 for c in load_lidc_manifest(lidc_raw) for n in c.nodules)
    assert found > 0 or cavitary == 0


@pytest.mark.parametrize("namespace", [None, "http://www.nih.gov/lidc"])
def test_namespace_variants_parse_alike(lidc_raw: Path, tmp_path: Path, namespace: str | None) -> None:
    case = load_lidc_manifest(lidc_raw)[0]
    text = case.xml_path.read_text()
    new = text.replace(' xmlns="http://www.nih.gov"', "" if namespace is None else f' xmlns="{namespace}"')
    assert new != text
    path = tmp_path / "variant.xml"
    path.write_text(new)
    a, b = parse_lidc_xml(case.xml_path), parse_lidc_xml(path)
    assert b.namespace == namespace
    assert [len(s.nodules) for s in a.sessions] == [len(s.nodules) for s in b.sessions]
    assert a.sessions[0].nodules[0].rois[0].xy.tolist() == b.sessions[0].nodules[0].rois[0].xy.tolist()


def test_chest_radiograph_read_is_not_ct(tmp_path: Path) -> None:
    p = tmp_path / "cxr.xml"
    p.write_text(
        '<?xml version="1.0"?><IdriReadMessage xmlns="http://www.nih.gov/idri"><ResponseHeader>'
        "<SeriesInstanceUid>1.2.3</SeriesInstanceUid></ResponseHeader><CXRreadingSession/></IdriReadMessage>"
    )
    msg = parse_lidc_xml(p)
    assert not msg.is_ct and msg.sessions == []


def test_malformed_xml_errors(tmp_path: Path, lidc_raw: Path) -> None:
    p = tmp_path / "bad.xml"
    p.write_text("<LidcReadMessage><ResponseHeader>")
    with pytest.raises(LidcXmlError, match="malformed XML"):
        parse_lidc_xml(p)
    p.write_text("<Other/>")
    with pytest.raises(LidcXmlError, match="root element must be LidcReadMessage"):
        parse_lidc_xml(p)
    text = load_lidc_manifest(lidc_raw)[0].xml_path.read_text()
    p.write_text(re.sub(r"<SeriesInstanceUid>[^<]*</SeriesInstanceUid>", "", text))
    with pytest.raises(LidcXmlError, match="SeriesInstanceUid missing"):
        parse_lidc_xml(p)
    p.write_text(text.replace("<xCoord>", "<xCoord>x", 1))
    with pytest.raises(LidcXmlError, match=r"reader 0 nodule .* roi 0: xCoord must be a number"):
        parse_lidc_xml(p)
