"""Fail with one line when the ``pacs`` extra is missing (imported first by :mod:`monai_bayes.pacs`)."""

from __future__ import annotations

import importlib.util

__all__ = ["PACS_REQUIREMENTS", "missing_pacs_requirements"]

#: module -> distribution of the ``pacs`` extra
PACS_REQUIREMENTS: dict[str, str] = {
    "requests": "requests",
    "highdicom": "highdicom",
    "dicomweb_client": "dicomweb-client",
    "pynetdicom": "pynetdicom",
}


def missing_pacs_requirements() -> list[str]:
    """Distributions of the ``pacs`` extra whose module cannot be found."""
    return [dist for module, dist in PACS_REQUIREMENTS.items() if importlib.util.find_spec(module) is None]


_missing = missing_pacs_requirements()
if _missing:
    raise ImportError(
        f"monai_bayes.pacs needs the 'pacs' extra (missing: {', '.join(_missing)}); "
        'install it with: pip install "monai-bayes[pacs]"'
    )
