"""Execute the tutorial notebooks and write them back with their outputs (printed tables, figures).

Each notebook under ``tutorials/`` runs in a fresh kernel (nbclient) with ``MONAI_BAYES_TUTORIAL_QUICK=0``
(the notebooks' meaningful settings) or, with ``--quick``, ``=1`` (the tiny settings CI uses), in a fixed
working folder ``<work>/<notebook>`` so the printed paths do not change between runs. PNG outputs larger
than ``--max-png-kb`` are downscaled so the committed notebooks stay small; the settings used are
recorded in the notebook's metadata (``monai_bayes.executed_with``). The executed notebook replaces the
file atomically only when the whole notebook ran. CI (``tests/test_tutorials.py``) executes them again in
quick mode and checks that they run and what they print, not that outputs equal the committed ones.

Usage::

    python scripts/execute_tutorials.py                 # meaningful settings (minutes to hours on CPU)
    python scripts/execute_tutorials.py --quick 01_quick_start 04_bmr
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from monai_bayes.utils.atomic import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = REPO_ROOT / "tutorials"


def shrink_png(data: str, max_bytes: int) -> str:
    """A base64 PNG downscaled (Lanczos, in steps of 0.8×) until it fits ``max_bytes``.

    Parameters
    ----------
    data : str
        Base64-encoded PNG, as stored in a notebook's ``image/png`` output.
    max_bytes : int
        Largest size of the decoded PNG.

    Returns
    -------
    str
        ``data`` unchanged when it fits, else the base64 of the smaller PNG (optimised, no metadata).
    """
    from PIL import Image

    raw = base64.b64decode(data)
    if len(raw) <= max_bytes:
        return data
    image = Image.open(io.BytesIO(raw))
    scale = 1.0
    while len(raw) > max_bytes and scale > 0.2:
        scale *= 0.8
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        buffer = io.BytesIO()
        image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="PNG", optimize=True)
        raw = buffer.getvalue()
    return base64.b64encode(raw).decode("ascii")


#: output lines that only say something about this machine's optional packages, dropped from the outputs
NOISE = ("nvImageCodec", "NvImgCodec", "TqdmWarning", "notebook_tqdm", "warnings.warn(")


def clean_outputs(book: nbformat.NotebookNode, max_png_bytes: int) -> None:
    """Drop per-cell timestamps and lines about optional packages, downscale large PNG outputs (in place).

    Parameters
    ----------
    book : nbformat.NotebookNode
        An executed notebook.
    max_png_bytes : int
        Largest PNG output kept as is (:func:`shrink_png`).
    """
    for cell in book.cells:
        cell.get("metadata", {}).pop("execution", None)  # per-cell timestamps: noise in diffs
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines = [ln for ln in output["text"].splitlines(keepends=True) if not any(n in ln for n in NOISE)]
                output["text"] = "".join(lines)
                if not output["text"].strip():
                    continue
            if "image/png" in output.get("data", {}):
                output["data"]["image/png"] = shrink_png(output["data"]["image/png"], max_png_bytes)
            outputs.append(output)
        if cell.cell_type == "code":
            cell.outputs = outputs


def execute(path: Path, work: Path, quick: bool, timeout: int, max_png_bytes: int) -> float:
    """Run one notebook and write it back with its outputs.

    Parameters
    ----------
    path : Path
        The ``.ipynb`` file.
    work : Path
        Working folder of this notebook (``MONAI_BAYES_TUTORIAL_DIR`` and the kernel's cwd).
    quick : bool
        ``MONAI_BAYES_TUTORIAL_QUICK=1`` (CI's tiny settings) instead of the meaningful ones.
    timeout : int
        Seconds per cell.
    max_png_bytes : int
        Largest PNG output kept as is (larger ones are downscaled, :func:`shrink_png`).

    Returns
    -------
    float
        Wall seconds of the run.
    """
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "MONAI_BAYES_TUTORIAL_QUICK": "1" if quick else "0",
            "MONAI_BAYES_TUTORIAL_DIR": str(work),
            "MPLBACKEND": "Agg",
        }
    )
    start = time.perf_counter()
    NotebookClient(book, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    seconds = time.perf_counter() - start
    clean_outputs(book, max_png_bytes)
    book.metadata["monai_bayes"] = {
        "executed_with": "quick settings (MONAI_BAYES_TUTORIAL_QUICK=1)"
        if quick
        else "meaningful settings (MONAI_BAYES_TUTORIAL_QUICK=0)",
        "executed_by": "python scripts/execute_tutorials.py" + (" --quick" if quick else ""),
    }
    atomic_write_text(path, nbformat.writes(book))
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Execute the selected tutorials (all by default) and write them back.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every notebook ran, 1 otherwise (a failed notebook is left unchanged).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook stems (e.g. 01_quick_start); default: all")
    parser.add_argument("--quick", action="store_true", help="CI's tiny settings instead of the meaningful ones")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per cell (default 7200)")
    parser.add_argument("--max-png-kb", type=int, default=150, help="downscale PNG outputs above this size")
    parser.add_argument("--clean-only", action="store_true", help="only clean the stored outputs (no execution)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "monai_bayes_tutorials")
    args = parser.parse_args(argv)
    paths = sorted(TUTORIALS.glob("*.ipynb"))
    if args.names:
        known = {p.stem: p for p in paths}
        unknown = [n for n in args.names if n not in known]
        if unknown:
            parser.error(f"unknown tutorials {unknown}; known: {sorted(known)}")
        paths = [known[n] for n in args.names]
    if args.clean_only:
        for path in paths:
            book = nbformat.read(path, as_version=4)
            clean_outputs(book, args.max_png_kb * 1024)
            atomic_write_text(path, nbformat.writes(book))
        return 0
    failed = 0
    for path in paths:
        try:
            seconds = execute(path, args.work / path.stem, args.quick, args.timeout, args.max_png_kb * 1024)
        except Exception as err:  # report and go on with the next notebook
            failed += 1
            print(f"{path.name}: FAILED ({type(err).__name__}: {str(err)[:500]})", file=sys.stderr)
            continue
        print(f"{path.name}: executed in {seconds:.0f} s, {path.stat().st_size / 1024:.0f} KiB")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
