"""Export that keeps the stochasticity (seed 004): noise as explicit inputs, ONNX and ``torch.export``."""

from monai_bayes.export.stochastic import NoiseInputNetwork, export_onnx, export_program, load_program, run_onnx

__all__ = ["NoiseInputNetwork", "export_onnx", "export_program", "load_program", "run_onnx"]
