"""Optional extras: require_extra's one-line install hint, and the CLI printing it with exit code 1."""

from __future__ import annotations

import sys
import types

import pytest

from monai_bayes import cli
from monai_bayes.utils import MissingExtraError, require_extra


def test_installed_modules_pass() -> None:
    require_extra("pacs", ("json", "torch.nn"), "json and torch")


def test_missing_modules_give_one_install_line() -> None:
    with pytest.raises(MissingExtraError) as info:
        require_extra("pacs", ("json", "no_such_module_mb1", "no_such_pkg_mb2.sub"), "monai-bayes pacs")
    message = str(info.value)
    assert message == (
        "monai-bayes pacs needs the optional packages no_such_module_mb1, no_such_pkg_mb2.sub:"
        ' pip install "monai-bayes[pacs]"'
    )
    assert "\n" not in message and isinstance(info.value, ImportError)
    assert info.value.missing == ("no_such_module_mb1", "no_such_pkg_mb2.sub") and info.value.extra == "pacs"
    with pytest.raises(MissingExtraError, match=r"needs the optional package no_such_module_mb1: pip"):
        require_extra("x", ["no_such_module_mb1"])
    with pytest.raises(ValueError, match="must be non-empty"):
        require_extra("pacs", [])


def test_cli_prints_the_line_and_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A sub-command whose register() finds its extra missing: one stderr line, exit code 1, no traceback."""
    fake = types.ModuleType("_mb_fake_command")

    def register(subparsers: object) -> None:
        require_extra("pacs", ["no_such_module_mb1"], "monai-bayes fake")

    fake.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "_mb_fake_command", fake)
    monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, ("fake", "_mb_fake_command", "needs an extra")))
    assert cli.main(["fake", "run"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "monai-bayes: error: monai-bayes fake needs the optional package no_such_module_mb1:"
        ' pip install "monai-bayes[pacs]"\n'
    )
