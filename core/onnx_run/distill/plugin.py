"""Registers the built-in distillation losses."""

from onnx_run.distill.losses import KDConfig, KDLoss, NoDistillation, NTKDConfig, NTKDLoss
from onnx_run.hookspecs import hookimpl


@hookimpl
def register_distillation_losses(register):
    register("none", NoDistillation, description="task loss only (no teacher)")
    register("kd", KDLoss, config=KDConfig,
             description="Hinton KD: alpha*T^2*KL(teacher||student) + (1-alpha)*task loss")
    register("ntkd", NTKDLoss, config=NTKDConfig,
             description="Neural Tangent KD: alpha*task loss + beta*D(student NTK, teacher NTK)")
