"""The exact kernel from per-sample Jacobians (torch.func: vmap over samples of jacrev).

The reference answer every other method is tested against: no assumption about the layers,
memory n * O * P (the Jacobian of every output w.r.t. every parameter, per sample). Method
"exact" of empirical_ntk, and empirical_ntk_full (the kernel with its output indices).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from onnx_run.ntk.arguments import Reduce, check_samplewise, reduced_outputs, resolve_params
from onnx_run.ntk.factors import KernelFactors
from onnx_run.precision import float32_region, to_float32


@float32_region()
def jacobian_factors(model: nn.Module, x: Tensor, params: dict[str, Tensor], reduce: Reduce | None) -> KernelFactors:
    """Kernel factors that are the per-sample Jacobian rows (n, O * numel) of every parameter
    tensor in ``params`` (name -> tensor), with model(x) from the same pass.

    Differentiable w.r.t. the parameters when grad mode is on. Float32 under autocast.
    """
    x = to_float32(x)
    n = x.shape[0]

    def per_sample(p: dict[str, Tensor], xi: Tensor):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return reduced_outputs(out, reduce)[0], out[0]

    jac, model_output = vmap(jacrev(per_sample, has_aux=True), in_dims=(None, 0))(params, x)
    outputs = next(iter(jac.values())).shape[1]
    return KernelFactors([j.reshape(n, -1) for j in jac.values()], [], outputs, model_output)


@float32_region()
def empirical_ntk_full(
    model: nn.Module, x: Tensor, *, params: Sequence[str] | None = None, reduce: Reduce | None = None
) -> Tensor:
    """Full NTK with output indices, (n*O, n*O), row (i, c) at i*O + c.

    Exact (per-sample Jacobians), for small cases and tests. Its diagonal output blocks summed,
    K.reshape(n, O, n, O).diagonal(dim1=1, dim2=3).sum(-1), give the trace NTK. Differentiable
    when grad mode is on and the parameters require grad.
    """
    chosen = resolve_params(model, params)
    check_samplewise(model)
    x = to_float32(x)
    n = x.shape[0]

    def per_sample(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return reduced_outputs(functional_call(model, p, (xi.unsqueeze(0),)), reduce)[0]

    jac = vmap(jacrev(per_sample), in_dims=(None, 0))(chosen, x)
    o = next(iter(jac.values())).shape[1]
    j = torch.cat([v.reshape(n * o, -1) for v in jac.values()], dim=1)
    return j @ j.T
