"""Built-in distillation losses: none, kd (Hinton) and ntkd (NTK matching)."""

from onnx_run.distill.losses import KDConfig, KDLoss, NoDistillation, NTKDConfig, NTKDLoss, kd_loss

__all__ = ["KDConfig", "KDLoss", "NTKDConfig", "NTKDLoss", "NoDistillation", "kd_loss"]
