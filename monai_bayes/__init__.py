"""monai_bayes: cheap, calibrated uncertainty for MONAI segmentation and classification.

Sub-packages follow MONAI's layout: ``layers`` (stochastic layers and the sampling protocol),
``networks`` (converters), ``selection``, ``losses``, ``handlers``, ``inferers``, ``metrics``,
``data``, ``pacs``; :mod:`monai_bayes.uncertainty` holds the uncertainty decomposition.
"""

from monai_bayes._version import __version__
from monai_bayes.networks import to_deterministic, to_full_bayes, to_mc_dropout, to_partial_bayes
from monai_bayes.workflows import train_sparse_bayes

__all__ = [
    "__version__",
    "to_deterministic",
    "to_full_bayes",
    "to_mc_dropout",
    "to_partial_bayes",
    "train_sparse_bayes",
]
