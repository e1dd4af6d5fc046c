"""Export that keeps the stochasticity (seed 004): noise as explicit inputs, ONNX and ``torch.export``."""

from monai_bayes.export.runtime import ArtefactNoise, ExportedNetwork
from monai_bayes.export.stochastic import NoiseInputNetwork, export_onnx, export_program, load_program, run_onnx

__all__ = [
    "ArtefactNoise",
    "ExportedNetwork",
    "NoiseInputNetwork",
    "export_onnx",
    "export_program",
    "load_program",
    "run_onnx",
]
