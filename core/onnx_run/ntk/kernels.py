"""Empirical neural tangent kernels of a batch: the entry points over every method.

Theta[i, j] = sum_c <dF_c(x_i)/dtheta, dF_c(x_j)/dtheta>: the "trace" NTK, contracted over the
parameters theta and summed over the outputs c, so that a teacher and a student of different sizes
give kernels of the same shape (n, n). Four ways to get it (see docs/ntk.md for measured costs),
one module each:

- ``"exact"`` (exact.py): per-sample Jacobians with torch.func (vmap over samples of jacrev),
  then a Gram matrix. Reference answer; memory n * O * P.
- ``"structured"`` (structured.py): exact and fast. For nn.Linear / nn.Conv2d /
  nn.ConvTranspose2d / nn.GroupNorm layers the Jacobian factorises into the layer input a and the
  back-propagated output sensitivities d (weight gradient = d a^T), so their blocks are built
  from those two small factors; only the remaining parameter tensors (an optical kernel or phase
  mask: few values) need per-sample Jacobians. One vmap(jacrev) pass yields both (one
  forward of the whole batch where nothing needs a per-sample Jacobian).
- ``"jvp"`` (estimators.py): unbiased estimate from R forward-mode products J z_r with Gaussian
  directions z_r.
- ``"fd"`` (estimators.py): the same estimate with finite differences
  (F(theta + eps z) - F(theta)) / eps, as in NTK-SAP and the NTKD paper; biased by O(eps) and by
  rounding.

The exact methods produce kernel factors (factors.py) whose contraction is the kernel; argument
checks shared by all methods are in arguments.py. The names those modules define that other code
used to import from here are re-exported, so ``from onnx_run.ntk.kernels import ...`` keeps
working.

Samples must not interact inside the model (BatchNorm in eval mode, no dropout): the kernel is a
property of a deterministic function applied sample by sample.

Kernels are always computed in float32: under ``torch.autocast`` (``run.precision`` bf16/fp16)
the functions here switch autocast off and cast half-precision inputs to float32, so NTKD
compares the same kernels at every precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from onnx_run.ntk.arguments import (Reduce, batch_and_params, check_samplewise, flatten_outputs, reduced_outputs,
                                    resolve_params)
from onnx_run.ntk.estimators import estimated_kernel, fd_features, random_directions, tangent_features
from onnx_run.ntk.exact import empirical_ntk_full, jacobian_factors
from onnx_run.ntk.factors import FactorSketch, KernelFactors, ProductBlock, cross_kernel
from onnx_run.ntk.structured import kernel_factors
from onnx_run.precision import float32_region

NTK_METHODS = ("exact", "jvp", "fd", "structured")

_EXACT_METHODS = ("structured", "exact")


@float32_region()
def empirical_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    params: Sequence[str] | None = None,
    reduce: Reduce | None = None,
    method: str = "structured",
    directions: int = 16,
    eps: float = 1e-3,
    create_graph: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Trace NTK of a batch, (n, n): Theta_ij = sum_c <dF_c(x_i)/dtheta, dF_c(x_j)/dtheta>.

    ``params``: names from model.named_parameters() (default: those with requires_grad).
    ``reduce``: maps model(x) (B, ...) to (B, O) before differentiation (default: flatten).
    ``method``: one of NTK_METHODS; "exact" and "structured" are exact, "jvp"/"fd" average over
    ``directions`` random Gaussian parameter directions (``generator`` for reproducibility;
    ``eps`` is the fd step). ``create_graph=True`` keeps the kernel differentiable w.r.t. the
    parameters (student in a loss); otherwise it is computed without any graph (teacher).
    """
    if method not in NTK_METHODS:
        raise ValueError(f"unknown NTK method {method!r}; choose one of {NTK_METHODS}")
    if method in _EXACT_METHODS:
        fac = ntk_factors(model, x, params=params, reduce=reduce, method=method, create_graph=create_graph)
        return cross_kernel(fac, fac)
    if directions < 1:
        raise ValueError(f"directions must be >= 1, got {directions}")
    x, chosen = batch_and_params(model, x, params, create_graph)
    with torch.enable_grad() if create_graph else torch.no_grad():
        return estimated_kernel(model, x, chosen, reduce, method=method, directions=directions, eps=eps,
                                generator=generator)


@float32_region()
def empirical_ntk_with_outputs(
    model: nn.Module,
    x: Tensor,
    *,
    params: Sequence[str] | None = None,
    reduce: Reduce | None = None,
    method: str = "structured",
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """(trace NTK (n, n), model(x)) from one forward pass.

    A training step that needs both the task loss and the NTKD term would otherwise run the
    model forward twice; here the outputs come out of the kernel's own per-sample pass. With
    ``create_graph=True`` both are differentiable w.r.t. the parameters. Exact methods only
    ("structured", "exact"); other arguments as in empirical_ntk.
    """
    fac = ntk_factors(model, x, params=params, reduce=reduce, method=method, create_graph=create_graph)
    assert fac.model_output is not None
    return cross_kernel(fac, fac), fac.model_output


def ntk_factors(
    model: nn.Module,
    x: Tensor,
    *,
    params: Sequence[str] | None = None,
    reduce: Reduce | None = None,
    method: str = "structured",
    create_graph: bool = False,
) -> KernelFactors:
    """Per-sample factors of the trace NTK of a batch, with model(x) in ``model_output``:
    ``cross_kernel(f, f)`` is the kernel. Factors of different batches (or of several
    processes' batches, gathered) combine into the kernel of their union. Exact methods only
    ("structured", "exact"); other arguments as in empirical_ntk."""
    if method not in _EXACT_METHODS:
        raise ValueError(f"kernel factors need an exact method ('structured' or 'exact'), got {method!r}")
    x, chosen = batch_and_params(model, x, params, create_graph)
    with torch.enable_grad() if create_graph else torch.no_grad():
        if method == "structured":
            return kernel_factors(model, x, chosen, reduce, structured=True)
        return jacobian_factors(model, x, chosen, reduce)


__all__ = [
    "NTK_METHODS",
    "FactorSketch",
    "KernelFactors",
    "ProductBlock",
    "Reduce",
    "batch_and_params",
    "check_samplewise",
    "cross_kernel",
    "empirical_ntk",
    "empirical_ntk_full",
    "empirical_ntk_with_outputs",
    "fd_features",
    "flatten_outputs",
    "kernel_factors",
    "ntk_factors",
    "random_directions",
    "reduced_outputs",
    "resolve_params",
    "tangent_features",
]
