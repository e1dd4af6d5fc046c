"""Copy the configs the bundles share from their one source, so each bundle folder stands alone.

``bundles/lidc_sparse_bayes`` is the source of the step configs that the ISIC bundle runs unchanged and of
the LIDC data / network / deterministic-training configs of the nested (BN3) bundle. The copies are real
files (a zipped, downloaded or Windows-copied bundle keeps them); ``tests/bundles/test_model_zoo.py`` fails
when a copy differs from its source. After editing a source config run::

    python scripts/sync_bundle_configs.py          # rewrite the copies
    python scripts/sync_bundle_configs.py --check  # exit 1 and list the copies that differ
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

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


def differing_copies(repo: Path = REPO) -> list[Path]:
    """The shared config copies whose bytes differ from (or lack) their source."""
    source = repo / "bundles" / SOURCE / "configs"
    bad = []
    for bundle, names in SHARED_CONFIGS.items():
        for name in names:
            copy = repo / "bundles" / bundle / "configs" / name
            if copy.is_symlink() or not copy.is_file() or copy.read_bytes() != (source / name).read_bytes():
                bad.append(copy)
    return bad


def sync(repo: Path = REPO) -> list[Path]:
    """Rewrite every differing copy from its source; return the rewritten paths."""
    source = repo / "bundles" / SOURCE / "configs"
    written = []
    for copy in differing_copies(repo):
        if copy.is_symlink():
            copy.unlink()
        shutil.copyfile(source / copy.name, copy)
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
