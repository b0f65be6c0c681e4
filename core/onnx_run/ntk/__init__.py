"""Empirical neural tangent kernels for NTK knowledge distillation and accuracy estimates.

- empirical_ntk: the (n, n) trace NTK of a batch ("structured" exact fast path by default).
- empirical_ntk_full: the (n*O, n*O) NTK with output indices (small cases).
- empirical_ntk_with_outputs: the trace NTK and model(x) from one forward pass (training step).
- ntk_factors: the per-sample factors behind an exact kernel (they gather across processes).
- kernel_discrepancy: the NTKD loss term between student and teacher kernels.
- kernel_ridge_regression / feature_ridge_regression (feature_ridge_weights) / select_ridge: NTK regression for the
  pre-training estimate (dual, and primal from tangent features).
- TeacherKernelCache: the frozen teacher's kernel, precomputed once per dataset.
Methods, costs and when to use which: docs/ntk.md. Where the code lives: kernels.py (the entry
points above, over NTK_METHODS), one module per method (exact.py, structured.py, estimators.py
for "jvp"/"fd"), factors.py (KernelFactors, cross_kernel, FactorSketch) and arguments.py (the
checks every method shares).
"""

from onnx_run.ntk.discrepancy import DISCREPANCIES, kernel_discrepancy
from onnx_run.ntk.kernels import (NTK_METHODS, empirical_ntk, empirical_ntk_full, empirical_ntk_with_outputs,
                                  ntk_factors)
from onnx_run.ntk.regression import (
    feature_ridge_regression,
    feature_ridge_weights,
    kernel_ridge_regression,
    select_ridge,
)
from onnx_run.ntk.teacher_cache import TeacherKernelCache

__all__ = [
    "DISCREPANCIES",
    "NTK_METHODS",
    "TeacherKernelCache",
    "empirical_ntk",
    "empirical_ntk_full",
    "empirical_ntk_with_outputs",
    "kernel_discrepancy",
    "feature_ridge_regression",
    "feature_ridge_weights",
    "kernel_ridge_regression",
    "ntk_factors",
    "select_ridge",
]
