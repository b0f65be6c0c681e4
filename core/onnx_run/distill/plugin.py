"""Registers the built-in distillation losses.

Factories and configs are named as ``"module:attribute"``: listing them imports nothing heavy.
"""

from onnx_run.hookspecs import hookimpl

_LOSSES = "onnx_run.distill.losses"


@hookimpl
def register_distillation_losses(register):
    register("none", f"{_LOSSES}:NoDistillation", description="task loss only (no teacher)")
    register("kd", f"{_LOSSES}:KDLoss", config="onnx_run.distill.settings:KDConfig",
             description="Hinton KD: alpha*T^2*KL(teacher||student) + (1-alpha)*task loss")
    register("ntkd", f"{_LOSSES}:NTKDLoss", config="onnx_run.distill.settings:NTKDConfig",
             description="Neural Tangent KD: alpha*task loss + beta*D(student NTK, teacher NTK)")
