"""Export a stochastic network so that sampling still happens in the artefact: noise as explicit inputs.

:class:`NoiseInputNetwork` wraps a network of the stochastic-layer protocol (partial / full Bayes; any
layer whose randomness can be frozen, ``noise_shapes()``) as ``forward(image, *noise) -> logits`` with
``logits`` of shape ``(S, B, C_out, *spatial)``: the image is repeated ``S`` times (sample-major), every
stochastic layer applies sample ``s`` of the given standard-normal noise to block ``s``, so the ``S``
samples run batched in one call -- the same pass as :func:`~monai_bayes.layers.mc_samples` with
:func:`~monai_bayes.layers.fixed_noise`. The noise inputs are ``(S, *shape)`` tensors in the order of
:attr:`NoiseInputNetwork.noise_names`; :meth:`NoiseInputNetwork.draw_noise` draws them. Because the noise is
an input, ONNX / ``torch.export`` artefacts reproduce PyTorch's output for the same noise and sample freshly
when given fresh noise (a runtime with no random-number operator needed).

:func:`export_onnx` (run with onnxruntime, :func:`run_onnx`) and :func:`export_program` (``torch.export``,
:func:`load_program`) write the artefacts atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_bayes.layers.base import fixed_noise, mc_samples, sampling_mode, stochastic_layers
from monai_bayes.layers.dropout import bind_dropout_noise
from monai_bayes.layers.nested import nested_width
from monai_bayes.utils.atomic import atomic_path
from monai_bayes.utils.optional import require_extra

__all__ = ["NoiseInputNetwork", "export_onnx", "export_program", "load_program", "run_onnx"]


class NoiseInputNetwork(nn.Module):
    """``forward(image, *noise)``: ``S`` posterior samples of ``network`` in one batched pass, noise given.

    Parameters
    ----------
    network : nn.Module
        A stochastic network whose layers take their randomness as noise: partial / full Bayes (weight noise),
        BN3 nested dropout (ordering noise, and weight noise in ``eval()``), MC dropout (mask noise, bound to
        the shape of ``example_image``). It is put in ``eval()`` mode (batch norm with running statistics)
        and runs in ``"sample"`` mode.
    num_samples : int
        ``S``, samples per call (fixed in the exported graph).
    example_image : torch.Tensor, optional
        ``(B, C_in, *spatial)``: the input shape; required when ``network`` has MC-dropout layers, whose mask
        noise ``(S, B, C, *spatial)`` depends on the activation shapes
        (:func:`~monai_bayes.layers.bind_dropout_noise`).
    width : int, optional
        BN3: fix every nested layer to its first ``width`` groups (the width cut); then only the weight noise
        is an input. ``None``: the ordering (sampled width) is part of the noise.

    Raises
    ------
    ValueError
        If ``num_samples < 1``, a layer still draws its randomness internally (BN3 with
        ``weight_noise="local"``), MC-dropout layers without ``example_image``, or a bad ``width``.
    """

    def __init__(
        self,
        network: nn.Module,
        num_samples: int,
        example_image: torch.Tensor | None = None,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
        self.network = network.eval()
        self.num_samples = num_samples
        self.width = width
        self.eval()
        #: per-sample activation shapes of the MC-dropout layers, bound only inside :meth:`sample_settings`
        #: (the wrapped network itself stays usable at any batch size after the wrapper is built)
        self.dropout_shapes: dict[str, tuple[int, ...]] = {}
        if example_image is not None:
            with _restored_dropout_shapes(self.network):
                self.dropout_shapes = bind_dropout_noise(self.network, example_image)
        with self.sample_settings():
            internal = [name for name, layer in stochastic_layers(network) if layer.internal_noise()]
            if internal:
                hint = "pass example_image to bind their mask noise" if example_image is None else ""
                raise ValueError(
                    f"layers {internal[:3]} draw their randomness internally (MC dropout without a bound "
                    f"activation shape, BN3 with local weight noise); {hint or 'use weight_noise=weight'}."
                )
            #: (layer name, noise name, shape of one sample's noise), in input order
            self.noise_names: list[tuple[str, str, tuple[int, ...]]] = [
                (name, key, tuple(shape))
                for name, layer in stochastic_layers(network)
                for key, shape in layer.active_noise_shapes().items()
            ]
            #: noise the layers declare but do not consume in this setting (zeros inside the graph)
            self._unused: list[tuple[str, str, tuple[int, ...]]] = [
                (name, key, tuple(shape))
                for name, layer in stochastic_layers(network)
                for key, shape in layer.noise_shapes().items()
                if key not in layer.active_noise_shapes()
            ]
            inputs = {(layer, key): i for i, (layer, key, _) in enumerate(self.noise_names)}
            #: every declared noise in the order :func:`~monai_bayes.layers.draw_noise` draws it: (graph input
            #: index or ``None`` when unused, per-sample shape); lets a runtime draw the same noise stream
            self.draw_order: list[tuple[int | None, tuple[int, ...]]] = [
                (inputs.get((name, key)), tuple(shape))
                for name, layer in stochastic_layers(network)
                for key, shape in layer.noise_shapes().items()
            ]

    @contextmanager
    def sample_settings(self) -> Iterator[None]:
        """The wrapped network as the graph runs it: MC-dropout masks bound to the example's shape, sample
        mode, and the width cut when one is set; all restored on exit.

        Yields
        ------
        None
        """
        with _restored_dropout_shapes(self.network), sampling_mode(self.network, "sample"):
            for name, layer in stochastic_layers(self.network):
                if name in self.dropout_shapes:
                    layer.activation_shape = self.dropout_shapes[name]  # type: ignore[assignment]
            if self.width is None:
                yield
            else:
                with nested_width(self.network, self.width):
                    yield

    def input_names(self) -> list[str]:
        """Names of the graph inputs: ``image`` then one per noise tensor (``noise_<i>``).

        Returns
        -------
        list of str
        """
        return ["image"] + [f"noise_{i}" for i in range(len(self.noise_names))]

    def draw_noise(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Standard-normal noise for one call: ``(S, *shape)`` per entry of :attr:`noise_names`.

        Parameters
        ----------
        generator : torch.Generator, optional
            Source of the noise.

        Returns
        -------
        tuple of torch.Tensor
        """
        ref = next(self.network.parameters())
        return tuple(
            torch.randn((self.num_samples, *shape), generator=generator, dtype=ref.dtype).to(ref.device)
            for _, _, shape in self.noise_names
        )

    def forward(self, image: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        """``S`` samples of the logits.

        Parameters
        ----------
        image : torch.Tensor
            ``(B, C_in, *spatial)``.
        *noise : torch.Tensor
            One ``(S, *shape)`` tensor per entry of :attr:`noise_names`.

        Returns
        -------
        torch.Tensor
            ``(S, B, C_out, *spatial)`` logits.

        Raises
        ------
        ValueError
            If the number of noise tensors is not ``len(noise_names)``.
        """
        if len(noise) != len(self.noise_names):
            raise ValueError(f"expected {len(self.noise_names)} noise inputs, got {len(noise)}.")
        S, B = self.num_samples, image.shape[0]
        per_layer: dict[str, dict[str, torch.Tensor]] = {}
        for (layer, key, _), eps in zip(self.noise_names, noise):
            per_layer.setdefault(layer, {})[key] = eps
        for layer, key, shape in self._unused:
            per_layer.setdefault(layer, {})[key] = image.new_zeros((S, *shape))
        stacked = image.repeat(S, *([1] * (image.dim() - 1)))
        with (
            self.sample_settings(),
            mc_samples(self.network, S),
            fixed_noise(self.network, per_layer),
            _grouped_strategy(self.network),
        ):
            out = self.network(stacked)
        return out.reshape(S, B, *out.shape[1:])


@contextmanager
def _restored_dropout_shapes(network: nn.Module) -> Iterator[None]:
    """Give every MC-dropout layer back the activation shape it had on entry (usually ``None``: unbound)."""
    layers = [layer for _, layer in stochastic_layers(network) if hasattr(layer, "activation_shape")]
    previous = [layer.activation_shape for layer in layers]
    try:
        yield
    finally:
        for layer, shape in zip(layers, previous):
            layer.activation_shape = shape


@contextmanager
def _grouped_strategy(network: nn.Module) -> Iterator[None]:
    """Batched passes by grouped convolution: static shapes (the sparse strategy's channel sets are data-dependent)."""
    layers: list[Any] = [layer for _, layer in stochastic_layers(network) if hasattr(layer, "batched_strategy")]
    previous = [layer.batched_strategy for layer in layers]
    for layer in layers:
        layer.batched_strategy = "grouped"
    try:
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer.batched_strategy = old


def export_onnx(
    wrapper: NoiseInputNetwork,
    example_image: torch.Tensor,
    path: str | os.PathLike,
    opset: int = 18,
    optimize: bool = True,
) -> Path:
    """Export ``wrapper`` to ONNX (``torch.onnx.export``, dynamo exporter), atomically.

    Parameters
    ----------
    wrapper : NoiseInputNetwork
        The network with noise inputs.
    example_image : torch.Tensor
        ``(B, C_in, *spatial)`` example; the exported graph has these shapes.
    path : str or os.PathLike
        Output ``.onnx`` file.
    opset : int
        ONNX opset version.
    optimize : bool
        Run the onnxscript graph optimiser (smaller file; ``False`` exports about 1.6× faster, same outputs and
        onnxruntime speed, ~1.5× the bytes: ``benchmarks/bench_export_time.py``).

    Returns
    -------
    Path
        ``path``.
    """
    require_extra("export", ("onnx", "onnxscript"), "ONNX export")
    path = Path(path)
    args = (example_image, *wrapper.draw_noise())
    with atomic_path(path) as tmp:
        program = torch.onnx.export(
            wrapper,
            args,
            input_names=wrapper.input_names(),
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            external_data=False,
            optimize=optimize,
        )
        assert program is not None
        program.save(str(tmp))
    return path


def run_onnx(path: str | os.PathLike, image: torch.Tensor, noise: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Run an exported artefact with onnxruntime on the CPU.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file.
    image : torch.Tensor
        ``(B, C_in, *spatial)``.
    noise : tuple of torch.Tensor
        The noise inputs, as from :meth:`NoiseInputNetwork.draw_noise`.

    Returns
    -------
    torch.Tensor
        ``(S, B, C_out, *spatial)`` logits.
    """
    require_extra("export", ("onnxruntime",), "running ONNX artefacts")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, [t.detach().cpu().numpy() for t in (image, *noise)]))
    return torch.from_numpy(session.run(None, feeds)[0])


def export_program(wrapper: NoiseInputNetwork, example_image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Export ``wrapper`` with ``torch.export`` and save the program (``.pt2``) atomically.

    Parameters
    ----------
    wrapper : NoiseInputNetwork
        The network with noise inputs.
    example_image : torch.Tensor
        ``(B, C_in, *spatial)`` example.
    path : str or os.PathLike
        Output ``.pt2`` file.

    Returns
    -------
    Path
        ``path``.
    """
    program = torch.export.export(wrapper, (example_image, *wrapper.draw_noise()))
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
    return path


def load_program(path: str | os.PathLike) -> nn.Module:
    """Load a program saved by :func:`export_program` as a callable module (no training code needed).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.pt2`` file.

    Returns
    -------
    nn.Module
        ``module(image, *noise) -> (S, B, C_out, *spatial)`` logits.

    Raises
    ------
    ValueError
        Naming the file if it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"exported program {str(path)!r} does not exist.")
    return torch.export.load(str(path)).module()
