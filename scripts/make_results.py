"""Regenerate every results table and figure in the docs from the committed results.

Tables: in ``docs/*.md``, ``README.md`` and ``benchmarks/README.md`` the Markdown between the lines
``<!-- results-table: <experiment>/<table>.csv -->`` and ``<!-- /results-table -->`` is rendered from
``results/<experiment>/<table>.csv``. Figures: every entry of ``results/<experiment>/figures.json`` is
drawn by its plotting function from its committed inputs. The contract is described in
:mod:`monai_bayes.evaluation.results` and docs/results.md.

Usage::

    python scripts/make_results.py            # rewrite pages / figures that differ
    python scripts/make_results.py --check    # exit 1 with a diff where they differ; writes nothing
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from monai_bayes.evaluation.results import check_results, regenerate

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or check) the docs' results tables and figures.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when everything matches / was written, 1 when ``--check`` found differences.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="report differences (unified diff) and exit 1; write nothing"
    )
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.check:
        differences = check_results(args.root)
        for difference in differences:
            sys.stdout.write(difference.diff if difference.diff.endswith("\n") else difference.diff + "\n")
        if differences:
            print(f"{len(differences)} file(s) differ from the committed results; run python scripts/make_results.py")
            return 1
        print("docs and figures match the committed results")
        return 0
    for path in regenerate(args.root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
