"""The one protocol every stochastic layer answers, and the model-level controls that drive it.

A *stochastic layer* is any ``nn.Module`` that also inherits :class:`StochasticLayer`:
partial / full mean-field Bayesian layers, MC-dropout layers and (later) nested-dropout layers.
Losses, handlers, inferers and exporters only ever use what is defined here:

* ``layer.kl()`` -- the layer's KL divergence to its prior, a scalar tensor (nats);
* a *sampling mode*: ``"sample"`` (draw from the posterior on every forward, in ``train()`` and
  ``eval()`` alike) or ``"mean"`` (posterior mean, i.e. a deterministic network). Set it for a whole
  model with :func:`sampling_mode` / :func:`set_sampling_mode`;
* *batched Monte Carlo*: inside :func:`mc_samples` ``(model, S)`` every stochastic layer treats its
  input batch of ``S·B`` items as ``S`` sample-major blocks of ``B`` and applies one independent
  posterior sample per block, so one forward pass yields ``S`` coherent network samples;
* *frozen noise*: :func:`draw_noise` draws the standard-normal noise ε of every layer for ``S``
  samples, and :func:`fixed_noise` makes the layers use it. The same noise gives the same weight
  samples whether the ``S`` samples run batched or one at a time (needed to compare the two, and
  to keep a sample identical across the windows of a sliding-window inference).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

__all__ = [
    "SAMPLING_MODES",
    "StochasticLayer",
    "draw_noise",
    "fixed_noise",
    "kl_divergence",
    "mc_samples",
    "sampling_mode",
    "select_noise",
    "set_sampling_mode",
    "stochastic_layers",
]

SamplingMode = Literal["sample", "mean"]
SAMPLING_MODES: tuple[str, ...] = ("sample", "mean")

# noise for one model: layer name -> (noise name -> tensor of shape (S, *noise_shape))
ModelNoise = dict[str, dict[str, torch.Tensor]]


if TYPE_CHECKING:
    # every stochastic layer is combined with an nn.Module subclass; tell the type checker so
    _ModuleBase = nn.Module
else:
    _ModuleBase = object


class StochasticLayer(_ModuleBase):
    """Mixin holding the state and contract shared by all stochastic layers.

    Subclasses implement :meth:`kl` and, if their randomness can be frozen, :meth:`noise_shapes`.
    The state lives in plain attributes created by :meth:`_init_stochastic_state`, which a layer's
    ``__init__`` (or the converter, after swapping a module's class) must call.
    """

    #: modes this kind of layer understands; nested layers extend it
    supported_modes: tuple[str, ...] = SAMPLING_MODES

    def _init_stochastic_state(self) -> None:
        self._sampling_mode: str = "sample"
        self._num_samples: int = 1
        self._noise: dict[str, torch.Tensor] | None = None
        #: set for one call by shared-prefix execution: the input holds B items shared by all S samples
        self._shared_input: bool = False

    # ----------------------------------------------------------------------------- protocol
    def kl(self) -> torch.Tensor:
        """KL divergence of this layer's posterior to its prior, a scalar tensor in nats."""
        raise NotImplementedError

    def noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of the standard-normal noise one posterior sample needs, by noise name.

        An empty dict means the layer's randomness cannot be frozen (e.g. MC dropout, whose masks
        depend on the activation shape); such layers draw fresh noise on every call.
        """
        return {}

    def active_noise_shapes(self) -> dict[str, tuple[int, ...]]:
        """The entries of :meth:`noise_shapes` that the layer's next forward pass actually consumes.

        Default: all of them. A nested layer at a fixed width ignores its ordering noise; exporters
        (:class:`~monai_bayes.export.NoiseInputNetwork`) make graph inputs only of the consumed noise.
        """
        return self.noise_shapes()

    def internal_noise(self) -> bool:
        """Whether the layer's next forward pass draws randomness that cannot be given as frozen noise.

        Default: the layer has randomness but no :meth:`noise_shapes` (MC dropout before its noise shape is
        bound). Such a layer cannot be exported with its noise as graph inputs.
        """
        return not self.noise_shapes()

    def deterministic_module(self) -> nn.Module:
        """The deterministic (posterior-mean) module to put in this layer's place.

        May reuse and modify ``self``; :func:`monai_bayes.networks.to_deterministic` calls it on a
        copy unless asked to work in place.
        """
        raise NotImplementedError

    def takes_shared_input(self) -> bool:
        """Whether this layer can compute its ``S`` samples from one ``B``-item input shared by all samples.

        Shared-prefix execution (:func:`~monai_bayes.layers.shared_prefix_forward` with
        ``sparse_shared_input=True``) then calls the layer on the shared input with :attr:`_shared_input`
        set, instead of expanding the input to ``S·B`` items first; the layer returns the usual ``(S·B, ...)``
        sample-major output. Default: ``False`` (the input is expanded).
        """
        return False

    # ----------------------------------------------------------------------------- state
    @property
    def sampling_mode(self) -> str:
        return self._sampling_mode

    @sampling_mode.setter
    def sampling_mode(self, mode: str) -> None:
        if mode not in self.supported_modes:
            raise ValueError(
                f"sampling mode of {type(self).__name__} must be one of {self.supported_modes}, got {mode!r}."
            )
        self._sampling_mode = mode

    @property
    def num_samples(self) -> int:
        """Number of posterior samples applied in one forward pass (input batch = S·B, sample-major)."""
        return self._num_samples

    @num_samples.setter
    def num_samples(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"num_samples must be a positive int, got {value!r}.")
        self._num_samples = value

    def set_noise(self, noise: Mapping[str, torch.Tensor] | None) -> None:
        """Freeze the noise used by the next forward passes (``None`` returns to fresh noise).

        Each tensor has shape ``(S, *noise_shapes()[name])``; ``S`` must equal :attr:`num_samples`
        when the layer runs.
        """
        if noise is None:
            self._noise = None
            return
        expected = self.noise_shapes()
        if set(noise) != set(expected):
            raise ValueError(f"noise for {type(self).__name__} must have keys {sorted(expected)}, got {sorted(noise)}.")
        for name, shape in expected.items():
            if tuple(noise[name].shape[1:]) != shape:
                raise ValueError(
                    f"noise[{name!r}] for {type(self).__name__} must have shape (S, {', '.join(map(str, shape))}), "
                    f"got {tuple(noise[name].shape)}."
                )
        self._noise = dict(noise)

    def draw_noise(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Draw standard-normal noise for ``num_samples`` samples (does not freeze it)."""
        ref = self._reference_tensor()
        out = {}
        for name, shape in self.noise_shapes().items():
            out[name] = _randn((num_samples, *shape), generator, ref)
        return out

    def _reference_tensor(self) -> torch.Tensor:
        """A tensor of the layer whose device/dtype noise should have."""
        return next(iter(self.parameters()))

    def _noise_for(self, name: str, shape: tuple[int, ...], num_samples: int, ref: torch.Tensor) -> torch.Tensor:
        """The frozen noise ``name`` when set, else fresh ``N(0, 1)`` noise of shape ``(S, *shape)``."""
        if self._noise is None:
            return torch.randn((num_samples, *shape), device=ref.device, dtype=ref.dtype)
        eps = self._noise[name]
        if eps.shape[0] != num_samples:
            raise ValueError(
                f"frozen noise of {type(self).__name__} holds {eps.shape[0]} samples but the layer runs "
                f"{num_samples} samples per pass; draw the noise for the same number of samples."
            )
        return eps.to(device=ref.device, dtype=ref.dtype)

    def _check_batch(self, batch: int) -> int:
        """Return the per-sample batch size B for an input batch of S·B items."""
        if batch % self._num_samples:
            raise ValueError(
                f"{type(self).__name__} runs {self._num_samples} samples per pass, so the input batch must be a "
                f"multiple of {self._num_samples} (S·B, sample-major); got a batch of {batch}."
            )
        return batch // self._num_samples


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, ref: torch.Tensor) -> torch.Tensor:
    """Standard-normal noise on ``ref``'s device and dtype, drawn from ``generator`` if given."""
    if generator is None:
        return torch.randn(shape, device=ref.device, dtype=ref.dtype)
    eps = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return eps.to(device=ref.device, dtype=ref.dtype)


# --------------------------------------------------------------------------------- model level
def stochastic_layers(model: nn.Module) -> list[tuple[str, StochasticLayer]]:
    """All stochastic layers of ``model`` as ``(qualified name, layer)`` pairs, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, StochasticLayer)]


def set_sampling_mode(model: nn.Module, mode: str) -> dict[str, str]:
    """Set the sampling mode of every stochastic layer; returns the previous modes by layer name."""
    layers = stochastic_layers(model)
    for _, layer in layers:  # validate first so that a bad mode changes nothing
        if mode not in layer.supported_modes:
            raise ValueError(f"mode must be one of {layer.supported_modes}, got {mode!r}.")
    previous = {}
    for name, layer in layers:
        previous[name] = layer.sampling_mode
        layer.sampling_mode = mode
    return previous


@contextmanager
def sampling_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Context manager: run ``model`` in ``"sample"`` or ``"mean"`` (posterior-mean) mode.

    Example
    -------
    >>> with sampling_mode(net, "mean"):
    ...     logits = net(x)  # deterministic: every Bayesian weight at its mean
    """
    previous = set_sampling_mode(model, mode)
    try:
        yield model
    finally:
        layers = dict(stochastic_layers(model))
        for name, old in previous.items():
            if name in layers:
                layers[name].sampling_mode = old


@contextmanager
def mc_samples(model: nn.Module, num_samples: int) -> Iterator[nn.Module]:
    """Context manager: one forward pass draws ``num_samples`` posterior samples.

    The input batch must hold ``S·B`` items, sample-major (``torch.cat([x] * S)``); item block ``s``
    is pushed through posterior sample ``s`` of every stochastic layer. Layers that are not
    stochastic act item-wise, so the output is ``S`` network samples stacked the same way. Note
    that batch-norm layers in *training* mode compute statistics over all ``S·B`` items.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
    layers = stochastic_layers(model)
    previous = [layer.num_samples for _, layer in layers]
    for _, layer in layers:
        layer.num_samples = num_samples
    try:
        yield model
    finally:
        for (_, layer), old in zip(layers, previous):
            layer.num_samples = old


def draw_noise(model: nn.Module, num_samples: int, generator: torch.Generator | None = None) -> ModelNoise:
    """Draw the noise of every freezable stochastic layer for ``num_samples`` samples.

    Returns ``{layer name: {noise name: tensor (S, *shape)}}``; pass it to :func:`fixed_noise`.
    """
    return {
        name: layer.draw_noise(num_samples, generator)
        for name, layer in stochastic_layers(model)
        if layer.noise_shapes()
    }


def select_noise(noise: ModelNoise, index: int | slice) -> ModelNoise:
    """The noise of a subset of samples (``index`` along the sample dim), keeping the sample dim."""
    sl = slice(index, index + 1) if isinstance(index, int) else index
    return {layer: {name: eps[sl] for name, eps in per.items()} for layer, per in noise.items()}


@contextmanager
def fixed_noise(model: nn.Module, noise: ModelNoise) -> Iterator[nn.Module]:
    """Context manager: stochastic layers use ``noise`` (from :func:`draw_noise`) instead of fresh noise."""
    layers = dict(stochastic_layers(model))
    unknown = set(noise) - set(layers)
    if unknown:
        raise ValueError(f"noise names layers that are not stochastic layers of the model: {sorted(unknown)}.")
    for name, per in noise.items():
        layers[name].set_noise(per)
    try:
        yield model
    finally:
        for name in noise:
            layers[name].set_noise(None)


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of ``kl()`` over all stochastic layers of ``model`` (a scalar; 0 if there are none)."""
    ref = next(iter(model.parameters()), None)
    device = None if ref is None else ref.device
    terms = [layer.kl().reshape(()).to(device) for _, layer in stochastic_layers(model)]
    if not terms:
        return torch.zeros((), device=device)
    return torch.stack(terms).sum()
