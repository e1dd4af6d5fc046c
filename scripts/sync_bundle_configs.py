"""Copy the configs the bundles share from their one source, so each bundle folder stands alone.

``bundles/lidc_sparse_bayes`` is the source of the step configs that the ISIC bundle runs unchanged and of
the LIDC data / network / deterministic-training configs of the nested (BN3) bundle. The copies are real
files (a zipped, downloaded or Windows-copied bundle keeps them); ``tests/bundles/test_model_zoo.py`` fails
when a copy differs from its source. A copy may keep its own default for a few named top-level ids
(:data:`OWN_DEFAULTS`): it is then the source with those values replaced, written in the same JSON layout.
After editing a source config run::

    python scripts/sync_bundle_configs.py          # rewrite the copies
    python scripts/sync_bundle_configs.py --check  # exit 1 and list the copies that differ
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SOURCE = "lidc_sparse_bayes"

#: bundle -> configs copied verbatim from bundles/lidc_sparse_bayes/configs
SHARED_CONFIGS: dict[str, tuple[str, ...]] = {
    "isic_sparse_bayes": (
        "evaluate.json",
        "logging.conf",
        "multi_gpu_select.json",
        "multi_gpu_train.json",
        "pipeline.json",
        "select.json",
        "sweep.json",
        "train.json",
        "train_deterministic.json",
        "train_sgmcmc.json",
    ),
    "lidc_nested_unet": ("common.json", "logging.conf", "train_deterministic.json"),
}

#: bundle -> shared config -> {top-level id: this bundle's default}, replacing the source's value in the copy
OWN_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # the LIDC sparse-Bayes bundle decays its learning rate; the nested bundle's BN3 training was not measured so
    "lidc_nested_unet": {"common.json": {"lr_schedule": "constant"}},
}


def expected_copy(source: Path, bundle: str) -> bytes:
    """The bytes ``bundles/<bundle>/configs/<source.name>`` must have: the source's, with the bundle's own defaults.

    Raises
    ------
    KeyError
        When an id of :data:`OWN_DEFAULTS` is not a top-level id of the source (a renamed setting).
    """
    own = OWN_DEFAULTS.get(bundle, {}).get(source.name)
    if not own:
        return source.read_bytes()
    config = json.loads(source.read_text(encoding="utf-8"))
    for key, value in own.items():
        if key not in config:
            raise KeyError(f"OWN_DEFAULTS[{bundle!r}][{source.name!r}]: {key!r} is not an id of {source}.")
        config[key] = value
    return (json.dumps(config, indent=4, ensure_ascii=False) + "\n").encode("utf-8")


def differing_copies(repo: Path = REPO) -> list[Path]:
    """The shared config copies whose bytes differ from (or lack) what :func:`expected_copy` says."""
    source = repo / "bundles" / SOURCE / "configs"
    bad = []
    for bundle, names in SHARED_CONFIGS.items():
        for name in names:
            copy = repo / "bundles" / bundle / "configs" / name
            if copy.is_symlink() or not copy.is_file() or copy.read_bytes() != expected_copy(source / name, bundle):
                bad.append(copy)
    return bad


def sync(repo: Path = REPO) -> list[Path]:
    """Rewrite every differing copy from its source; return the rewritten paths."""
    source = repo / "bundles" / SOURCE / "configs"
    written = []
    for copy in differing_copies(repo):
        if copy.is_symlink():
            copy.unlink()
        copy.write_bytes(expected_copy(source / copy.name, copy.parents[1].name))
        written.append(copy)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the copies that differ (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        bad = differing_copies()
        for path in bad:
            print(f"differs from bundles/{SOURCE}/configs/{path.name}: {path.relative_to(REPO)}")
        return 1 if bad else 0
    for path in sync():
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
