"""What a kernel is taken of: the batch, the parameters theta and the outputs F_c.

Every NTK method checks its arguments the same way, so the checks live here once: the
parameter set (by name), the map from model outputs to the (B, O) outputs F_c (``reduce``),
and the rejection of layers that couple samples or are random.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from onnx_run.precision import to_float32

Reduce = Callable[[Tensor], Tensor]


def flatten_outputs(out: Tensor) -> Tensor:
    """Default ``reduce``: every output value of a sample is one output c of the NTK."""
    return out.reshape(out.shape[0], -1)


def reduced_outputs(out: Tensor, reduce: Reduce | None) -> Tensor:
    """The outputs F (B, O) of a model output (B, ...): ``reduce`` applied and checked."""
    r = flatten_outputs(out) if reduce is None else reduce(out)
    if r.dim() != 2 or r.shape[0] != out.shape[0]:
        raise ValueError(
            f"reduce must map the model output (B, ...) to (B, O); it gave shape {tuple(r.shape)} "
            f"for an output of shape {tuple(out.shape)}"
        )
    if r.is_complex():
        raise ValueError(
            "the NTK needs a real output; the model (after reduce) returned a complex tensor: "
            "reduce it to intensities first, e.g. reduce=lambda out: out.abs().square().flatten(1)"
        )
    return r


def resolve_params(model: nn.Module, params: Sequence[str] | None) -> dict[str, Tensor]:
    """The parameters theta of the kernel, by name, in model order.

    Default: every parameter with requires_grad. A frozen model (teacher) has none, so its
    parameters must be named explicitly (TeacherKernelCache does that for you).
    """
    named = dict(model.named_parameters())
    if params is None:
        chosen = [n for n, p in named.items() if p.requires_grad]
        if not chosen:
            raise ValueError(
                "no parameter of the model requires grad (a frozen model?): pass params=[names] "
                "to say which parameters the NTK is taken with respect to"
            )
    else:
        if isinstance(params, str):
            raise ValueError(f"params must be a sequence of parameter names, not the string {params!r}")
        chosen = list(dict.fromkeys(params))
        unknown = [n for n in chosen if n not in named]
        if unknown:
            some = ", ".join(list(named)[:8]) + (", ..." if len(named) > 8 else "")
            raise ValueError(f"unknown parameter names {unknown}; the model has: {some}")
        if not chosen:
            raise ValueError("params is empty: the NTK needs at least one parameter")
    out = {n: named[n] for n in chosen}
    cplx = [n for n, p in out.items() if p.is_complex()]
    if cplx:
        raise ValueError(
            f"complex parameters {cplx} are not supported: store them as real tensors "
            "(e.g. a phase, or torch.view_as_real) so that the tangent space is real"
        )
    return out


def check_samplewise(model: nn.Module) -> None:
    """Reject layers that couple the samples of a batch or are random.

    The per-sample kernel only exists for a deterministic sample-by-sample map; a BatchNorm
    in training mode or an active dropout would make it depend on the rest of the batch or on
    chance (and vmap over samples cannot run them).
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise ValueError(
                f"module {name or type(m).__name__} is a BatchNorm in training mode, which couples "
                "the samples of the batch; call model.eval() (or that module's .eval()) before "
                "taking the NTK"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise ValueError(
                f"module {name or type(m).__name__} is an active dropout, so the model is random; "
                "call .eval() on it before taking the NTK"
            )


def batch_and_params(model: nn.Module, x: Tensor, params: Sequence[str] | None,
                     create_graph: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """The checked float32 batch and the chosen parameters (detached unless ``create_graph``)."""
    x = to_float32(x)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    chosen = resolve_params(model, params)
    check_samplewise(model)
    if not create_graph:
        chosen = {k: v.detach() for k, v in chosen.items()}
    return x, chosen
