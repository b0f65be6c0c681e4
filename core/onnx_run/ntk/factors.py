"""Kernel factors: the per-sample pieces whose pairwise contraction is the trace NTK.

The exact methods return factors rather than the (n, n) kernel because factors of separate
chunks (a teacher cache) or of separate processes (torchrun) concatenate into the kernel of
their union, and a fixed random projection of them (FactorSketch) gives tangent features
when the n x n kernel itself is too large.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from onnx_run.precision import float32_region


@dataclass
class ProductBlock:
    """Weight block of a structured layer in product form.

    K_ij = sum_{l, l'} (u_il . u_jl') * sum_c (d_icl . d_jcl'), with u (n, L, K) the layer
    input patches and d (n, O, L, C) the output sensitivities, L positions. For a Linear layer
    on flat features L = 1 and this is (a_i . a_j) * (d_i . d_j).
    """

    u: Tensor
    d: Tensor


@dataclass
class KernelFactors:
    """Per-sample factors of a trace NTK: K(x, x') = cross_kernel(f(x), f(x')).

    ``features`` (n, d): explicit per-sample gradient vectors (Jacobian rows of all outputs
    concatenated), contributing F F'^T. ``products``: structured weight blocks (see
    ProductBlock). Keeping factors instead of the kernel lets a cache combine chunks.
    """

    features: list[Tensor] = field(default_factory=list)
    products: list[ProductBlock] = field(default_factory=list)
    outputs: int = 0  # O; every feature block is laid out (n, O, d) output-major
    model_output: Tensor | None = None  # model(x) from the same forward pass (not chunked)

    def map_rows(self, fn: Callable[[Tensor], Tensor]) -> KernelFactors:
        """The same factors with ``fn`` applied to every per-sample tensor (rows = samples)."""
        return KernelFactors([fn(f) for f in self.features], [ProductBlock(fn(p.u), fn(p.d)) for p in self.products],
                             self.outputs)

    def select(self, idx: Tensor | slice) -> KernelFactors:
        return KernelFactors(
            [f[idx] for f in self.features], [ProductBlock(p.u[idx], p.d[idx]) for p in self.products], self.outputs
        )

    @staticmethod
    def cat(parts: Sequence[KernelFactors]) -> KernelFactors:
        first = parts[0]
        return KernelFactors(
            [torch.cat([p.features[k] for p in parts]) for k in range(len(first.features))],
            [
                ProductBlock(
                    torch.cat([p.products[k].u for p in parts]), torch.cat([p.products[k].d for p in parts])
                )
                for k in range(len(first.products))
            ],
            first.outputs,
        )


@float32_region()
def cross_kernel(f1: KernelFactors, f2: KernelFactors) -> Tensor:
    """K[i, j] between the samples of f1 (rows) and of f2 (columns)."""
    k = None
    if f1.features:
        a = torch.cat(f1.features, dim=1) if len(f1.features) > 1 else f1.features[0]
        b = a if f2 is f1 else (torch.cat(f2.features, dim=1) if len(f2.features) > 1 else f2.features[0])
        k = a @ b.T
    for p, q in zip(f1.products, f2.products):
        n1, o, length, c = p.d.shape
        n2 = q.d.shape[0]
        if length == 1:
            blk = (p.u[:, 0] @ q.u[:, 0].T) * (p.d.reshape(n1, o * c) @ q.d.reshape(n2, o * c).T)
        else:
            uu = torch.einsum("ilk,jmk->ijlm", p.u, q.u)
            dd = torch.einsum("iolc,jomc->ijlm", p.d, q.d)
            blk = (uu * dd).sum(dim=(2, 3))
        k = blk if k is None else k + blk
    if k is None:  # pragma: no cover - resolve_params guarantees at least one parameter
        raise ValueError("empty parameter set")
    return k


class FactorSketch:
    """A fixed random projection of per-sample gradients: phi_i (O * R,) with
    E[phi_i . phi_j] = Theta_ij, from kernel factors.

    Gaussian projection for explicit gradient blocks; for product blocks, where the gradient
    d_c u^T is never formed, a rank-one (Khatri-Rao) projection s1 (x) s2 per direction:
    phi_cr = sum_l (d_cl . s1_r)(u_l . s2_r), cost (C*O + K) * L * R per sample instead of
    C*K*O*R. Drawn lazily from ``generator`` on first use; reuse the object to keep the same
    projection for every chunk.
    """

    def __init__(self, directions: int, generator: torch.Generator):
        self.directions = directions
        self.generator = generator
        self._feature_maps: list[Tensor] | None = None
        self._product_maps: list[tuple[Tensor, Tensor]] | None = None

    def _draw(self, f: KernelFactors) -> None:
        r, g, o = self.directions, self.generator, f.outputs

        def draw(rows: int, like: Tensor) -> Tensor:  # on the generator's device, then moved
            return torch.randn((rows, r), generator=g, dtype=like.dtype, device=g.device).to(like.device)

        self._feature_maps = [draw(t.shape[1] // o, t) for t in f.features]
        self._product_maps = [(draw(p.d.shape[3], p.d), draw(p.u.shape[2], p.u)) for p in f.products]

    @float32_region()
    def __call__(self, f: KernelFactors) -> Tensor:
        if self._feature_maps is None:
            self._draw(f)
        assert self._feature_maps is not None and self._product_maps is not None
        n, o = (f.features[0].shape[0] if f.features else f.products[0].u.shape[0]), f.outputs
        like = (f.features or [f.products[0].u])[0]
        phi = torch.zeros((n, o, self.directions), dtype=like.dtype, device=like.device)
        for t, s in zip(f.features, self._feature_maps):
            phi += t.reshape(n, o, -1) @ s
        for p, (s1, s2) in zip(f.products, self._product_maps):
            phi += torch.einsum("iolr,ilr->ior", p.d @ s1, p.u @ s2)
        return (phi / self.directions**0.5).reshape(n, -1)
