"""Optional extras: one line that says what to install when a feature's packages are missing.

MONAI's :func:`monai.utils.optional_import` defers a missing module until first use; a command-line tool wants
the opposite — check before doing anything and stop with one line. :func:`require_extra` does that for a
``monai-bayes[extra]`` extra; :func:`monai_bayes.cli.main` prints a :class:`MissingExtraError` as one line
and exits with code 1.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

__all__ = ["MissingExtraError", "require_extra"]


class MissingExtraError(ImportError):
    """An optional extra of monai-bayes is not installed; ``str()`` is the one-line install hint.

    Parameters
    ----------
    extra : str
        Name of the extra, e.g. ``"pacs"``.
    missing : Sequence[str]
        The top-level modules that could not be found.
    feature : str
        What needs them, e.g. ``"monai-bayes pacs"``.
    """

    def __init__(self, extra: str, missing: Sequence[str], feature: str) -> None:
        self.extra, self.missing, self.feature = extra, tuple(missing), feature
        super().__init__(
            f"{feature} needs the optional package{'s' if len(self.missing) > 1 else ''}"
            f' {", ".join(self.missing)}: pip install "monai-bayes[{extra}]"',
            name=self.missing[0] if self.missing else None,
        )


def _is_installed(module: str) -> bool:
    """Whether ``module`` (a dotted name) can be imported, without importing it when it is top-level."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a module without a spec
        return False


def require_extra(extra: str, modules: Sequence[str], feature: str | None = None) -> None:
    """Raise :class:`MissingExtraError` if any of ``modules`` is not installed.

    Parameters
    ----------
    extra : str
        The ``monai-bayes`` extra that installs ``modules`` (``pip install "monai-bayes[<extra>]"``).
    modules : Sequence[str]
        Importable module names, e.g. ``("highdicom", "dicomweb_client", "requests")``.
    feature : str, optional
        What needs them, for the message (default ``"this feature"``).

    Raises
    ------
    MissingExtraError
        Naming every missing module and the install command, in one line.
    ValueError
        If ``extra`` is empty or ``modules`` is empty.
    """
    if not extra or not modules:
        raise ValueError(f"extra and modules must be non-empty, got extra={extra!r}, modules={list(modules)!r}.")
    missing = [m for m in modules if not _is_installed(m)]
    if missing:
        raise MissingExtraError(extra, missing, feature or "this feature")
