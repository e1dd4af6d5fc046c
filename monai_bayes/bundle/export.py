"""``monai-bayes export``: a bundle's published model as a stochastic ONNX / ``torch.export`` artefact.

Reads ``configs/inference.json``'s ``network`` (which loads the weights; without one, ``network_def`` and
the published model in ``models/``, :func:`~monai_bayes.bundle.load_published_network`), wraps it as a
:class:`~monai_bayes.export.NoiseInputNetwork` (``S`` samples per call, noise as inputs) and writes the
artefact with :func:`~monai_bayes.export.export_onnx` or :func:`~monai_bayes.export.export_program`, plus a
JSON sidecar describing its inputs::

    monai-bayes export bundles/lidc_sparse_bayes model_s8.onnx --num-samples 8 --patch 128
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_bayes.bundle.steps import load_published_network, read_published_info
from monai_bayes.export import NoiseInputNetwork, export_onnx, export_program
from monai_bayes.utils.atomic import atomic_write_json
from monai_bayes.utils.files import read_json_if_exists

__all__ = ["export_bundle_model", "register"]


def _parsed(bundle_root: Path, overrides: Mapping[str, Any], key: str) -> Any:
    from monai.bundle import ConfigParser

    config = bundle_root / "configs" / "inference.json"
    if not config.is_file():
        raise ValueError(f"{config}: missing; the bundle's inference.json defines network_def.")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update({"bundle_root": str(bundle_root), **overrides})
    return parser.get_parsed_content(key)


def _has_key(bundle_root: Path, key: str) -> bool:
    config = read_json_if_exists(bundle_root / "configs" / "inference.json")
    return isinstance(config, dict) and key in config


def _network_def(bundle_root: Path, overrides: Mapping[str, Any]) -> torch.nn.Module:
    return _parsed(bundle_root, overrides, "network_def")


def _bundle_configs(bundle_root: Path) -> dict[str, Any]:
    """The bundle's configs the artefact needs at inference (preprocessing, inferer, PACS settings, metadata)."""
    configs = bundle_root / "configs"
    return {
        name: read_json_if_exists(configs / f"{name}.json")
        for name in ("metadata", "inference", "inference_dicom")
        if (configs / f"{name}.json").is_file()
    }


def export_bundle_model(
    bundle_root: str | os.PathLike,
    output: str | os.PathLike,
    *,
    num_samples: int = 8,
    patch_size: int = 128,
    batch_size: int = 1,
    overrides: Mapping[str, Any] | None = None,
    width: int | None = None,
    optimize: bool = True,
) -> Path:
    """Export the bundle's published model with its stochasticity (format from ``output``'s suffix).

    Parameters
    ----------
    bundle_root : str or os.PathLike
        The bundle folder (``configs/inference.json``, ``models/model.pt`` and, for a stochastic model,
        ``models/model_bayes.pt``).
    output : str or os.PathLike
        ``*.onnx`` (ONNX, run with onnxruntime) or ``*.pt2`` (``torch.export`` program); a sidecar
        ``<output>.json`` lists the inputs.
    num_samples : int
        ``S``, samples per call.
    patch_size : int
        Spatial size of the (square / cubic) input the graph is exported for.
    batch_size : int
        ``B`` of the exported graph.
    overrides : Mapping, optional
        Config ids of ``inference.json`` to override (e.g. ``{"network_def#channels": [...]}``).
    width : int, optional
        BN3 bundles: export the width-``width`` cut (weight noise only); ``None``: the sampled width.
    optimize : bool
        ONNX only: run the onnxscript optimiser (see :func:`~monai_bayes.export.export_onnx`).

    Returns
    -------
    Path
        ``output``.

    Raises
    ------
    ValueError
        For an unknown suffix, a missing config or published model, or a model whose layers draw their
        randomness internally (BN3 with local weight noise).
    """
    root, output = Path(bundle_root), Path(output)
    if output.suffix not in (".onnx", ".pt2"):
        raise ValueError(f"output must end in .onnx or .pt2, got {str(output)!r}.")
    network_def = _network_def(root, overrides or {})
    if _has_key(root, "network"):  # inference.json's ``network`` loads the weights (the PACS bundle contract)
        network = _parsed(root, overrides or {}, "network").eval()
    else:
        network = load_published_network(network_def, root / "models").eval()
    spatial = int(getattr(network_def, "dimensions", None) or getattr(network_def, "spatial_dims", 2) or 2)
    in_channels = int(getattr(network_def, "in_channels", 1))
    example = torch.zeros(batch_size, in_channels, *([patch_size] * spatial))
    wrapper = NoiseInputNetwork(network, num_samples, example_image=example, width=width)
    if output.suffix == ".onnx":
        export_onnx(wrapper, example, output, optimize=optimize)
    else:
        export_program(wrapper, example, output)
    atomic_write_json(
        output.with_name(output.name + ".json"),
        {
            "model": read_published_info(root / "models"),
            "num_samples": num_samples,
            "inputs": {"image": list(example.shape)}
            | {
                name: [num_samples, *shape]
                for name, (_, _, shape) in zip(wrapper.input_names()[1:], wrapper.noise_names)
            },
            "noise": "standard normal, float32; fresh noise per call gives fresh posterior samples",
            "output": f"logits (S={num_samples}, B, C_out, *spatial); softmax over C_out for probabilities",
            "width": width,
            "noise_draw_order": [[index, list(shape)] for index, shape in wrapper.draw_order],
            "bundle": _bundle_configs(root),
        },
    )
    return output


def _run(args: argparse.Namespace) -> None:
    out = export_bundle_model(
        args.bundle_root, args.output, num_samples=args.num_samples, patch_size=args.patch, batch_size=args.batch
    )
    print(out)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export`` command to the ``monai-bayes`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The top-level sub-command set.

    Returns
    -------
    argparse.ArgumentParser
        The command's parser.
    """
    p = subparsers.add_parser(
        "export",
        help="export a bundle's published model to ONNX / torch.export with noise as inputs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle_root", type=Path, help="bundle folder")
    p.add_argument("output", type=Path, help="*.onnx or *.pt2")
    p.add_argument("--num-samples", type=int, default=8, help="samples per call (default 8)")
    p.add_argument("--patch", type=int, default=128, help="input size of the exported graph (default 128)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the exported graph (default 1)")
    p.add_argument("--width", type=int, help="BN3 bundles: export this width cut (default: sampled width)")
    p.add_argument(
        "--no-optimize",
        dest="optimize",
        action="store_false",
        help="ONNX: skip the graph optimiser (faster export, larger file)",
    )
    p.set_defaults(
        func=lambda a: print(
            export_bundle_model(
                a.bundle_root,
                a.output,
                num_samples=a.num_samples,
                patch_size=a.patch,
                batch_size=a.batch,
                width=a.width,
                optimize=a.optimize,
            )
        )
    )
    return p
