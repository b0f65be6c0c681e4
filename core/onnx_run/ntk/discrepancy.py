"""Discrepancy between a student's and a teacher's NTK on the same batch (the NTKD loss term).

Teacher and student kernels can differ in scale by orders of magnitude (different widths,
parameter counts and output scales), which the paper leaves open. The kinds:

- ``"mse"``: mean((Ks - Kt)^2) on the raw kernels, as in the paper. Scale-sensitive: the
  student is pushed to match the teacher's magnitude too.
- ``"mse_normalized"``: MSE after scaling each kernel to Frobenius norm n (entries O(1)).
  Note mean((n Ks/|Ks| - n Kt/|Kt|)^2) = |Ks/|Ks| - Kt/|Kt||^2 = 2 * alignment: the same
  minimiser as "alignment", twice the value.
- ``"alignment"``: 1 - <Ks, Kt>_F / (|Ks| |Kt|), in [0, 2]; scale-free.
- ``"alignment_centered"``: alignment after centring both kernels, H K H with
  H = I - 11^T/n (centred kernel alignment, Cortes et al. 2012); also ignores a constant
  offset in the kernels (e.g. from biases).
All are differentiable in both arguments.
"""

from __future__ import annotations

import torch
from torch import Tensor

DISCREPANCIES = ("mse", "mse_normalized", "alignment", "alignment_centered")

_TINY = 1e-30


def _check(k_student: Tensor, k_teacher: Tensor) -> None:
    if k_student.dim() != 2 or k_student.shape[0] != k_student.shape[1]:
        raise ValueError(f"k_student must be a square (n, n) kernel, got shape {tuple(k_student.shape)}")
    if k_teacher.shape != k_student.shape:
        raise ValueError(
            f"kernels must have the same shape: student {tuple(k_student.shape)}, "
            f"teacher {tuple(k_teacher.shape)}"
        )


def center_kernel(k: Tensor) -> Tensor:
    """H K H with H = I - 11^T/n: removes row and column means."""
    k = k - k.mean(dim=0, keepdim=True)
    return k - k.mean(dim=1, keepdim=True)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum() / (a.norm() * b.norm()).clamp_min(_TINY)


def kernel_discrepancy(k_student: Tensor, k_teacher: Tensor, kind: str = "alignment") -> Tensor:
    """Scalar discrepancy between two (n, n) kernels; see the module docstring for ``kind``."""
    if kind not in DISCREPANCIES:
        raise ValueError(f"unknown kernel discrepancy kind {kind!r}; choose one of {DISCREPANCIES}")
    _check(k_student, k_teacher)
    k_teacher = k_teacher.to(k_student.dtype)
    if kind == "mse":
        return (k_student - k_teacher).square().mean()
    if kind == "mse_normalized":
        n = k_student.shape[0]
        ks = n * k_student / k_student.norm().clamp_min(_TINY)
        kt = n * k_teacher / k_teacher.norm().clamp_min(_TINY)
        return (ks - kt).square().mean()
    if kind == "alignment":
        return 1 - _cosine(k_student, k_teacher)
    return 1 - _cosine(center_kernel(k_student), center_kernel(k_teacher))
