"""``monai-bayes`` dispatch: a missing optional extra is one line saying what to install (issue 13 point 6)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: run the CLI with ``requests`` (part of the ``pacs`` extra) hidden, as in a venv without the extra
_WITHOUT_REQUESTS = "import sys; sys.modules['requests'] = None; from monai_bayes.cli import main; sys.exit(main())"


@pytest.mark.parametrize("args", [["pacs", "run", "--help"], ["pacs", "ping"]])
def test_pacs_without_the_extra_is_one_line(args):
    done = subprocess.run([sys.executable, "-c", _WITHOUT_REQUESTS, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "monai-bayes pacs: monai_bayes.pacs needs the 'pacs' extra (missing: requests); "
        'install it with: pip install "monai-bayes[pacs]"'
    ]
    assert "Traceback" not in done.stderr


def test_importing_the_pacs_package_without_the_extra_names_it():
    code = "import sys; sys.modules['requests'] = None; import monai_bayes.pacs"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and 'pip install "monai-bayes[pacs]"' in done.stderr
