"""Run an exported stochastic artefact (``.onnx``) as a stochastic network of the layer protocol.

:class:`ExportedNetwork` wraps an onnxruntime session of a :class:`~monai_bayes.export.NoiseInputNetwork`
graph so that the library's Monte-Carlo machinery drives it like the network it was exported from: its
noise inputs form one stochastic layer (:class:`ArtefactNoise`, ``noise_shapes()`` = the graph's noise
inputs in order), so :func:`~monai_bayes.layers.draw_noise` with a seeded generator draws exactly the noise
the original network would have drawn (same shapes, same order), and
:class:`~monai_bayes.inferers.MonteCarloInferer` (``chunk_size=None``, ``shared_prefix=False``) with a
``SlidingWindowInferer`` whose ROI is the graph's spatial shape runs it on images of any size. No training
code and no network definition are needed: the PACS pipeline loads a ``.onnx`` file this way
(:func:`monai_bayes.pacs.load_inference_bundle`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from monai_bayes.layers.base import StochasticLayer
from monai_bayes.utils.files import read_json_if_exists
from monai_bayes.utils.optional import require_extra

__all__ = ["ArtefactNoise", "ExportedNetwork"]


class ArtefactNoise(StochasticLayer, nn.Module):
    """The noise inputs of an exported graph as one stochastic layer (no parameters, ``kl() = 0``).

    Parameters
    ----------
    shapes : dict of str to tuple of int
        Per-sample shape of each noise input, in the graph's input order.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self._init_stochastic_state()
        self.shapes = dict(shapes)

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """The graph's noise inputs without their sample dimension.

        Returns
        -------
        dict of str to tuple of int
        """
        return dict(self.shapes)

    def internal_noise(self) -> bool:
        """``False``: all randomness is given as inputs.

        Returns
        -------
        bool
        """
        return False

    def kl(self) -> torch.Tensor:
        """``0`` (inference only).

        Returns
        -------
        torch.Tensor
        """
        return torch.zeros(())

    def _reference_tensor(self) -> torch.Tensor:
        return torch.zeros(())

    def noise(self) -> list[torch.Tensor]:
        """The frozen noise (or fresh noise) of the current ``S`` samples, one ``(S, *shape)`` array per input.

        Returns
        -------
        list of torch.Tensor
        """
        ref = self._reference_tensor()
        return [self._noise_for(name, shape, self._num_samples, ref) for name, shape in self.shapes.items()]


class ExportedNetwork(nn.Module):
    """An exported ``.onnx`` artefact as a network: ``forward(x (S·B, C_in, *spatial)) -> (S·B, C_out, *spatial)``.

    Inside :func:`~monai_bayes.layers.mc_samples` ``(net, S)`` with ``S`` the graph's sample count, the input
    is ``S`` sample-major copies of ``B`` images (what :class:`~monai_bayes.inferers.MonteCarloInferer`
    passes); the graph runs once per group of its batch size with the frozen noise of
    :attr:`noise_layer` (the same noise for every group and every sliding window, so each sample is one
    coherent network sample).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file written by :func:`~monai_bayes.export.export_onnx`.
    threads : int, optional
        onnxruntime intra-op threads (default: onnxruntime's choice).
    draw_order : sequence of (int or None, shape), optional
        :attr:`NoiseInputNetwork.draw_order` of the exported wrapper (default: the sidecar
        ``<path>.json``'s ``noise_draw_order`` if present, else the graph's noise inputs in order). The
        noise layer then also draws the noise the source network declares but the graph does not use (BN3
        ordering noise at a fixed width), so a seeded draw gives exactly the source network's samples.

    Raises
    ------
    ValueError
        Naming the file if it is missing or is not a noise-input graph (``image`` then ``(S, ...)`` inputs).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        threads: int | None = None,
        draw_order: Sequence[tuple[int | None, Sequence[int]]] | None = None,
    ) -> None:
        super().__init__()
        require_extra("export", ("onnxruntime",), "running ONNX artefacts")
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"exported artefact {str(self.path)!r} does not exist.")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        shapes = [tuple(i.shape) for i in inputs]
        if not inputs or any(not all(isinstance(d, int) for d in s) for s in shapes):
            raise ValueError(f"{self.path}: expected an exported graph with fixed input shapes, got {shapes}.")
        #: ``(B, C_in, *spatial)`` of the graph
        self.image_shape: tuple[int, ...] = shapes[0]
        samples = {s[0] for s in shapes[1:]} or {1}
        if len(samples) != 1:
            raise ValueError(f"{self.path}: noise inputs disagree on the number of samples: {shapes[1:]}.")
        #: ``S`` of the graph
        self.num_samples: int = samples.pop()
        self.input_names = [i.name for i in inputs]
        if draw_order is None:
            sidecar = read_json_if_exists(self.path.with_name(self.path.name + ".json"))
            draw_order = sidecar.get("noise_draw_order") if isinstance(sidecar, dict) else None
        noise_inputs = inputs[1:]
        order = list(draw_order) if draw_order is not None else [(k, s[1:]) for k, s in enumerate(shapes[1:])]
        used = {k: tuple(shape) for k, shape in order if k is not None}
        if sorted(used) != list(range(len(noise_inputs))) or len(used) != sum(k is not None for k, _ in order):
            raise ValueError(f"{self.path}: the noise draw order does not name each graph noise input once: {order}.")
        if any(used[k] != shapes[1 + k][1:] for k in used):
            raise ValueError(f"{self.path}: the noise draw order's shapes differ from the graph's inputs {shapes[1:]}.")
        #: graph noise input names, in input order
        self._feed_names = [i.name for i in noise_inputs]
        self.noise_layer = ArtefactNoise(
            {
                (noise_inputs[k].name if k is not None else f"unused_{j}"): tuple(shape)
                for j, (k, shape) in enumerate(order)
            }
        )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The graph's spatial input shape (the sliding-window ROI for larger images).

        Returns
        -------
        tuple of int
        """
        return self.image_shape[2:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``S`` samples of the logits for ``S`` sample-major copies of ``B`` images.

        Parameters
        ----------
        x : torch.Tensor
            ``(S·B, C_in, *spatial)``, the graph's spatial shape.

        Returns
        -------
        torch.Tensor
            ``(S·B, C_out, *spatial)`` logits, sample-major.

        Raises
        ------
        ValueError
            If the layer runs another number of samples than the graph, or the image shape differs.
        """
        S = self.noise_layer.num_samples
        if self.num_samples != S:
            raise ValueError(
                f"{self.path}: the artefact runs S = {self.num_samples} samples per call, asked for {S}; "
                "export it again with --num-samples or run it with that S."
            )
        if tuple(x.shape[1:]) != self.image_shape[1:]:
            raise ValueError(
                f"{self.path}: expected images of shape (·, {self.image_shape[1:]}), got {tuple(x.shape)}."
            )
        images = x[: x.shape[0] // S]  # the S blocks are copies of the same B images
        drawn = dict(zip(self.noise_layer.shapes, self.noise_layer.noise()))
        noise = [drawn[name].detach().cpu().numpy() for name in self._feed_names]
        graph_batch = self.image_shape[0]
        outs = []
        for start in range(0, images.shape[0], graph_batch):
            chunk = images[start : start + graph_batch]
            n = chunk.shape[0]
            if n < graph_batch:
                chunk = torch.cat([chunk, chunk.new_zeros(graph_batch - n, *chunk.shape[1:])])
            feeds = dict(zip(self.input_names, [chunk.detach().cpu().float().numpy(), *noise]))
            outs.append(torch.from_numpy(self.session.run(None, feeds)[0])[:, :n])  # (S, n, C_out, *sp)
        out = torch.cat(outs, dim=1).to(x.device)
        return out.reshape(-1, *out.shape[2:])
