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


def test_help_lists_the_commands_without_importing_torch():
    """``monai-bayes --help`` answers at once: neither torch nor MONAI is imported for it."""
    code = (
        "import sys; from monai_bayes.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'numpy') if m in sys.modules)\n"
        "print(heavy, 'pacs' in out.getvalue() and 'export' in out.getvalue())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] True"


def test_utils_exports_every_name_it_lists():
    import monai_bayes.utils as utils

    assert sorted(utils.__all__) == sorted(utils._LAZY)
    for name in utils.__all__:
        assert getattr(utils, name).__module__.startswith("monai_bayes.utils."), name
