"""One registry of training methods: what each trains, selects, evaluates and which bundle configs it runs.

Both orchestrators read it: the in-memory recipe :func:`~monai_bayes.workflows.train_sparse_bayes` and the
bundle runner (:func:`~monai_bayes.bundle.pipeline_steps`, :class:`~monai_bayes.bundle.RunLayout`,
:func:`~monai_bayes.bundle.num_mc_samples`, :func:`~monai_bayes.bundle.build_network`). A new method (BMR,
SG-MCMC, full Bayes from scratch) is one :class:`MethodSpec` in :data:`METHOD_REGISTRY` plus the library
code of any new step; the configs it names must exist in the bundle.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from monai_bayes.networks.prob_unet import ProbabilisticUNet, StochasticSegmentationNetwork

__all__ = [
    "METHODS",
    "METHOD_REGISTRY",
    "MethodSpec",
    "NetworkBuilder",
    "check_method",
    "method_spec",
    "prob_unet_network",
    "ssn_network",
]

#: what the first (deterministic) training step writes: the shared deterministic model, the method's own
#: model (MC dropout), or one file per ensemble member
DeterministicOutput = Literal["shared", "own", "members"]
#: how the Bayesian weights are chosen after step 1: Top-k saliency, every candidate weight, or none
Selection = Literal["saliency", "all"] | None
#: Monte-Carlo samples drawn at evaluation / inference
McSamples = Literal["one", "members", "num_samples"]
#: builds a method's own architecture from the bundle's ``network_def`` and the method's network settings
NetworkBuilder = Callable[[nn.Module, Mapping[str, Any]], nn.Module]


@dataclass(frozen=True)
class MethodSpec:
    """What a method trains, selects and evaluates.

    Parameters
    ----------
    name : str
        The ``method`` setting (``--method`` of the bundles, ``method=`` of ``train_sparse_bayes``).
    deterministic_output : {"shared", "own", "members"}
        Where step 1 (NLL training) writes: the shared deterministic model, the method's own model, or one
        model per ensemble member.
    mc_dropout : bool
        Step 1 trains the network with MC dropout added.
    selection : {"saliency", "all"} or None
        Step 2: Top ``r_bayes`` by saliency (partial Bayes), every candidate weight (full Bayes), or no step 2.
    bayes_training : bool
        Step 3: ELBO training of the converted network.
    mc_samples : {"one", "members", "num_samples"}
        Samples at evaluation: 1 (deterministic network), one per ensemble member, or the configured count.
    uses_r_bayes : bool
        The run name and the reports carry ``r_bayes``.
    description : str
        One line for docs and error messages.
    train_config : str
        The bundle config of step 3 (ELBO / method-specific training), e.g. ``"train"``; a method with its own
        training loop names its own config here and adds its steps to the bundle.
    pretrain : bool
        Step 1 (deterministic NLL training) runs first; ``False`` for methods trained from scratch in their
        own ``train_config`` step (then ``bayes_training`` must be true).
    network_builder : callable, optional
        ``builder(network_def, settings) -> nn.Module``: the method's own architecture built from the
        bundle's ``network_def`` (e.g. a Prob. U-Net with the same U-Net) and its network settings; ``None``:
        the method trains ``network_def`` itself.
    """

    name: str
    deterministic_output: DeterministicOutput = "shared"
    mc_dropout: bool = False
    selection: Selection = None
    bayes_training: bool = False
    mc_samples: McSamples = "num_samples"
    uses_r_bayes: bool = False
    description: str = ""
    train_config: str = "train"
    pretrain: bool = True
    network_builder: NetworkBuilder | None = None

    def __post_init__(self) -> None:
        if not self.pretrain and not self.bayes_training:
            raise ValueError(f"method {self.name!r}: without step 1 (pretrain=False) it needs its own training step.")

    @property
    def from_scratch(self) -> bool:
        """No step 1 and a conversion step: step 2 converts the *untrained* network with its means drawn
        ``μ ~ N(0, 1)`` (:func:`~monai_bayes.networks.init_means_normal`) and step 3 trains it from there (the
        seed's and the authors' full-Bayes baseline, ``mu_weight.data.normal_(mean=0, std=1)``).
        """
        return not self.pretrain and self.selection is not None

    @property
    def configs(self) -> tuple[str, ...]:
        """The bundle step configs this method runs, in order (each merged after ``common``)."""
        steps = ["train_deterministic"] if self.pretrain else []
        if self.selection is not None:
            steps.append("select")
        if self.bayes_training:
            steps.append(self.train_config)
        return (*steps, "evaluate")

    @property
    def stochastic(self) -> bool:
        """Whether the final network draws different samples per pass."""
        return self.mc_samples != "one"


def prob_unet_network(network_def: nn.Module, settings: Mapping[str, Any]) -> nn.Module:
    """The Prob. U-Net of ``network_def``'s U-Net; ``settings``: ``latent_dim``, ``nested`` (mask keywords)."""
    nested = settings.get("nested")
    return ProbabilisticUNet.from_unet(
        network_def,  # type: ignore[arg-type]  # from_unet checks it is a MONAI UNet
        latent_dim=int(settings.get("latent_dim", 6)),
        nested_latent=nested is not None,
        nested_options=dict(nested) if nested is not None else None,
    )


def ssn_network(network_def: nn.Module, settings: Mapping[str, Any]) -> nn.Module:
    """The Stochastic Segmentation Network on ``network_def``'s U-Net; ``settings``: ``rank``."""
    return StochasticSegmentationNetwork.from_unet(network_def, rank=int(settings.get("rank", 10)))  # type: ignore[arg-type]


METHOD_REGISTRY: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "sparse_bayes",
            selection="saliency",
            bayes_training=True,
            uses_r_bayes=True,
            description="SBN (seed 000): deterministic training, Top r_bayes by saliency made Bayesian, ELBO",
        ),
        MethodSpec("deterministic", mc_samples="one", description="the deterministic network (one sample)"),
        MethodSpec(
            "mc_dropout",
            deterministic_output="own",
            mc_dropout=True,
            description="MC dropout (Gal & Ghahramani 2016) trained with the NLL",
        ),
        MethodSpec(
            "full_bayes",
            selection="all",
            bayes_training=True,
            description="mean-field Bayes over every candidate weight (r_bayes = 1), warm-started from the trained "
            "deterministic means",
        ),
        MethodSpec(
            "ensemble",
            deterministic_output="members",
            mc_samples="members",
            description="deep ensemble of independently initialised deterministic members",
        ),
        MethodSpec(
            "full_bayes_scratch",
            selection="all",
            bayes_training=True,
            pretrain=False,
            description="mean-field Bayes over every candidate weight trained from scratch (means drawn N(0, 1), "
            "no deterministic step), the seed's full-Bayes baseline",
        ),
        MethodSpec(
            "prob_unet",
            bayes_training=True,
            pretrain=False,
            train_config="train_prob_unet",
            network_builder=prob_unet_network,
            description="Probabilistic U-Net (Kohl et al. 2018): prior / posterior nets, ELBO, a rater per step",
        ),
        MethodSpec(
            "ssn",
            bayes_training=True,
            pretrain=False,
            train_config="train_ssn",
            network_builder=ssn_network,
            description="Stochastic Segmentation Network (Monteiro 2020): low-rank Gaussian logits, MC likelihood",
        ),
        MethodSpec(
            "bn3_prob_unet",
            bayes_training=True,
            pretrain=False,
            train_config="train_prob_unet",
            network_builder=prob_unet_network,
            description="BN3 on the Prob. U-Net latent (seed 001 on LIDC): ordered dropout over latent dims",
        ),
        MethodSpec(
            "bmr",
            bayes_training=True,
            description="stochastic BMR (seed 002): flat mean-field model, then rounds of spike-and-slab BMR pruning "
            "and further ELBO training",
            train_config="train_bmr",
        ),
        MethodSpec(
            "tiered_ff",
            bayes_training=True,
            description="Tiered-FF (seed 002): mean-field with the non-centred regularised horseshoe prior, ELBO",
            train_config="train_tiered_ff",
        ),
        MethodSpec(
            "sgmcmc",
            bayes_training=True,
            train_config="train_sgmcmc",
            description="cyclical SGHMC (Zhang et al. 2020) from the deterministic model; an ensemble of its samples",
        ),
    )
}

#: the method names, in registry order
METHODS: tuple[str, ...] = tuple(METHOD_REGISTRY)


def method_spec(method: str) -> MethodSpec:
    """The registry entry of ``method``.

    Parameters
    ----------
    method : str
        A key of :data:`METHOD_REGISTRY`.

    Returns
    -------
    MethodSpec

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones and the nearest match.
    """
    if isinstance(method, str) and method in METHOD_REGISTRY:
        return METHOD_REGISTRY[method]
    near = difflib.get_close_matches(str(method), METHODS, n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.{hint}")


def check_method(method: str) -> str:
    """Validate a method name (the bundles' ``--method`` override) and return it.

    Parameters
    ----------
    method : str
        Name to check.

    Returns
    -------
    str
        ``method`` unchanged.

    Raises
    ------
    ValueError
        If ``method`` is not in :data:`METHOD_REGISTRY`.
    """
    return method_spec(method).name
