"""``monai-bayes`` command line.

Each sub-command lives next to the code it drives and registers itself here through a
``register(subparsers)`` function; this module only dispatches. Sub-command modules are imported
lazily so that ``monai-bayes --help`` stays fast and a missing optional extra (e.g. ``pacs``)
only breaks the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from monai_bayes.utils.optional import MissingExtraError

# (command name, "module" or "module:function" whose function (default ``register``) adds it, one-line help)
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("synth", "monai_bayes.data.cli", "write synthetic LIDC / ISIC / ChestMNIST data in the real on-disk formats"),
    ("data", "monai_bayes.data.cli:register_data", "convert real LIDC-IDRI / ISIC 2018 downloads (data prepare ...)"),
    ("pacs", "monai_bayes.pacs.cli", "DICOM / DICOMweb research pipeline (needs the 'pacs' extra)"),
    (
        "export",
        "monai_bayes.bundle.export",
        "a bundle's model as ONNX / torch.export with noise as inputs ('export' extra)",
    ),
    ("distill", "monai_bayes.bundle.distill", "distil a bundle run's model into a deterministic BDK / EnD² student"),
)


#: sub-commands that need an optional extra of the same name
_EXTRAS = frozenset({"pacs", "export"})


def _import_command(name: str, module: str) -> ModuleType:
    """Import a sub-command module; a missing optional dependency ends the program with one line saying
    what to install (``pip install "monai-bayes[pacs]"``) instead of a traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        hint = f'pip install "monai-bayes[{name}]"' if name in _EXTRAS else "pip install monai-bayes"
        missing = getattr(err, "name", None)
        if missing is not None and missing.split(".")[0] == "monai_bayes":
            raise  # our own bug, not a missing dependency
        message = str(err) if "pip install" in str(err) else f"a required package is missing ({err}); install: {hint}"
        raise SystemExit(f"monai-bayes {name}: {message}") from None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Build the top-level parser, importing only the sub-command named in ``argv``."""
    parser = argparse.ArgumentParser(prog="monai-bayes", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, target, help_text in _COMMANDS:
        if name == wanted:
            module, _, function = target.partition(":")
            getattr(_import_command(name, module), function or "register")(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monai-bayes`` console script; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except MissingExtraError as e:  # a command whose optional extra is not installed: one line, exit 1
        print(f"monai-bayes: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
