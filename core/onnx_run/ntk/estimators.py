"""Random-direction estimates of the trace NTK: K ~ (1/R) sum_r (J z_r)(J z_r)^T.

For models where no exact kernel fits: only R Jacobian-vector products J z_r with Gaussian
parameter directions z_r are needed, never a Jacobian. "jvp" gets them by forward-mode AD
(unbiased); "fd" by finite differences (F(theta + eps z) - F(theta)) / eps, as in NTK-SAP and
the NTKD paper (biased by O(eps) and by rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from onnx_run.ntk.arguments import Reduce, reduced_outputs

ESTIMATORS = ("jvp", "fd")


def random_directions(params: dict[str, Tensor], r: int, generator: torch.Generator | None) -> list[Tensor]:
    """R Gaussian directions z_r in parameter space, one (R, *shape) tensor per parameter."""
    return [
        torch.randn((r, *p.shape), generator=generator, dtype=p.dtype, device=p.device)
        for p in params.values()
    ]


def tangent_features(
    model: nn.Module,
    x: Tensor,
    params: dict[str, Tensor],
    reduce: Reduce | None,
    directions: Sequence[Tensor],
    *,
    chunk: int = 64,
) -> Tensor:
    """J z_r for every sample and direction, by forward-mode AD: (n, R, O).

    One batched forward per direction (vmap over directions, ``chunk`` at a time: memory
    chunk x activations), so the cost is about R forward passes with dual numbers.
    Differentiable when grad mode is on.
    """
    names = list(params)
    primals = tuple(params.values())

    def f(*vals):
        out = functional_call(model, dict(zip(names, vals)), (x,))
        return reduced_outputs(out, reduce)

    def along(*tangent):
        return jvp(f, primals, tangent)[1]

    jz = vmap(along, chunk_size=chunk)(*directions)  # (R, n, O)
    return jz.transpose(0, 1)


def fd_features(
    model: nn.Module,
    x: Tensor,
    params: dict[str, Tensor],
    reduce: Reduce | None,
    directions: Sequence[Tensor],
    eps: float,
    chunk: int = 64,
) -> Tensor:
    """(F(theta + eps z_r) - F(theta)) / eps for every sample and direction: (n, R, O)."""
    names = list(params)
    base = reduced_outputs(functional_call(model, params, (x,)), reduce)

    def shifted(*z):
        moved = {k: p + eps * dz for k, p, dz in zip(names, params.values(), z)}
        return (reduced_outputs(functional_call(model, moved, (x,)), reduce) - base) / eps

    g = vmap(shifted, chunk_size=chunk)(*directions)  # (R, n, O)
    return g.transpose(0, 1)


def estimated_kernel(
    model: nn.Module,
    x: Tensor,
    params: dict[str, Tensor],
    reduce: Reduce | None,
    *,
    method: str,
    directions: int,
    eps: float,
    generator: torch.Generator | None,
) -> Tensor:
    """The (n, n) estimate (1/R) G G^T from R = ``directions`` random directions; ``method`` is
    "jvp" or "fd" (``eps`` its step). Differentiable when grad mode is on."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown NTK estimator {method!r}; choose one of {ESTIMATORS}")
    z = random_directions(params, directions, generator)
    if method == "jvp":
        g = tangent_features(model, x, params, reduce, z)
    else:
        g = fd_features(model, x, params, reduce, z, eps)
    g = g.reshape(g.shape[0], -1)
    return (g @ g.T) / directions
