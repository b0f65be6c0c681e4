"""Empirical neural tangent kernels of a batch.

Theta[i, j] = sum_c <dF_c(x_i)/dtheta, dF_c(x_j)/dtheta>: the "trace" NTK, contracted over the
parameters theta and summed over the outputs c, so that a teacher and a student of different sizes
give kernels of the same shape (n, n). Four ways to get it (see docs/ntk.md for measured costs):

- ``"exact"``: per-sample Jacobians with torch.func (vmap over samples of jacrev), then a Gram
  matrix. Reference answer; memory n * O * P.
- ``"structured"``: exact and fast. For nn.Linear / nn.Conv2d / nn.ConvTranspose2d layers the
  Jacobian factorises into the layer input a and the back-propagated output sensitivities d
  (weight gradient = d a^T), so their blocks are built from those two small factors; only the
  remaining parameter tensors (an optical kernel or phase mask: few values) need per-sample
  Jacobians. One vmap(jacrev) pass yields both.
- ``"jvp"``: unbiased estimate from R forward-mode products J z_r with Gaussian directions z_r.
- ``"fd"``: the same estimate with finite differences (F(theta + eps z) - F(theta)) / eps, as in
  NTK-SAP and the NTKD paper; biased by O(eps) and by rounding.

Samples must not interact inside the model (BatchNorm in eval mode, no dropout): the kernel is a
property of a deterministic function applied sample by sample.

Kernels are always computed in float32: under ``torch.autocast`` (``run.precision`` bf16/fp16)
the functions here switch autocast off and cast half-precision inputs to float32, so NTKD
compares the same kernels at every precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap

from onnx_run.precision import float32_region, to_float32

NTK_METHODS = ("exact", "jvp", "fd", "structured")

Reduce = Callable[[Tensor], Tensor]

# Above this many elements, the product form of a structured block (which needs an
# (n, n, L, L) intermediate) is not used even where it would take fewer operations.
_PRODUCT_FORM_MAX_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------------
# argument handling


def flatten_outputs(out: Tensor) -> Tensor:
    """Default ``reduce``: every output value of a sample is one output c of the NTK."""
    return out.reshape(out.shape[0], -1)


def _reduced(out: Tensor, reduce: Reduce | None) -> Tensor:
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


# --------------------------------------------------------------------------------------------
# kernel factors: the per-sample pieces whose pairwise contraction is the kernel


@dataclass
class _ProductBlock:
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
    _ProductBlock). Keeping factors instead of the kernel lets a cache combine chunks.
    """

    features: list[Tensor] = field(default_factory=list)
    products: list[_ProductBlock] = field(default_factory=list)
    outputs: int = 0  # O; every feature block is laid out (n, O, d) output-major
    model_output: Tensor | None = None  # model(x) from the same forward pass (not chunked)

    def map_rows(self, fn: Callable[[Tensor], Tensor]) -> KernelFactors:
        """The same factors with ``fn`` applied to every per-sample tensor (rows = samples)."""
        return KernelFactors([fn(f) for f in self.features], [_ProductBlock(fn(p.u), fn(p.d)) for p in self.products],
                             self.outputs)

    def select(self, idx: Tensor | slice) -> KernelFactors:
        return KernelFactors(
            [f[idx] for f in self.features], [_ProductBlock(p.u[idx], p.d[idx]) for p in self.products], self.outputs
        )

    @staticmethod
    def cat(parts: Sequence[KernelFactors]) -> KernelFactors:
        first = parts[0]
        return KernelFactors(
            [torch.cat([p.features[k] for p in parts]) for k in range(len(first.features))],
            [
                _ProductBlock(
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


# --------------------------------------------------------------------------------------------
# structured layers


@dataclass
class _Unit:
    """A layer whose weight gradient is (output sensitivity) x (input patches)."""

    path: str
    module: nn.Module
    weight: str | None  # full parameter name if the weight is in the kernel's parameter set
    bias: str | None


_STRUCTURED_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def _structured_units(model: nn.Module, chosen: dict[str, Tensor]) -> list[_Unit]:
    """Layers of the parameter set that can use the structured form.

    Only stock layers (their forward not overridden) whose parameters belong to them alone;
    anything else (tied weights, custom layers) goes through per-sample Jacobians, which is
    always exact.
    """
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    units = []
    for path, m in model.named_modules():
        base = next((t for t in _STRUCTURED_TYPES if type(m).forward is t.forward), None)
        if base is None or not isinstance(m, base):
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not _conv_supported(m):
            continue
        pre = f"{path}." if path else ""
        w = f"{pre}weight" if f"{pre}weight" in chosen else None
        b = f"{pre}bias" if m.bias is not None and f"{pre}bias" in chosen else None
        if w is None and b is None:
            continue
        if any(owners.get(id(t), 0) != 1 for t in (m.weight, m.bias) if t is not None):
            continue
        units.append(_Unit(path, m, w, b))
    return units


def _conv_supported(m: nn.Module) -> bool:
    if isinstance(m, nn.ConvTranspose2d):
        # output_padding < stride keeps one output patch per input position
        return m.padding_mode == "zeros" and all(op < s for op, s in zip(m.output_padding, m.stride))
    if isinstance(m.padding, str):
        return m.padding == "valid" or all(d * (k - 1) % 2 == 0 for d, k in zip(m.dilation, m.kernel_size))
    return True


def _conv_padding(m: nn.Conv2d) -> tuple[int, int]:
    if m.padding_mode != "zeros":
        return (0, 0)  # the forward pads explicitly; we pad the captured input the same way
    if m.padding == "valid":
        return (0, 0)
    if m.padding == "same":
        return tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))  # type: ignore[return-value]
    return tuple(m.padding)  # type: ignore[return-value]


def _unit_factors(
    unit: _Unit, a: Tensor, d: Tensor, cost_rows: int, cost_pairs: int, force_form: str | None
) -> tuple[list[Tensor], list[_ProductBlock]]:
    """Factors of one structured layer from its per-sample input a (n, *in) and output
    sensitivities d (n, O, *out).

    The weight gradient of output c is G_c = sum_l d_cl u_l^T over the L positions (u: input
    patch). Two exact ways to contract it, whichever takes fewer operations for this shape:
    "features" forms G explicitly (n * O * C * K * L, then a Gram of n x O*C*K), "product"
    keeps (u, d) and contracts pairs, n^2 * L^2 * (K + O*C): the clear winner for a Linear
    layer on flat features (L = 1), rarely for a convolution.
    """
    m = unit.module
    n, o = d.shape[:2]
    feats: list[Tensor] = []
    prods: list[_ProductBlock] = []
    if unit.weight is not None:
        if isinstance(m, nn.ConvTranspose2d):
            feats.append(_conv_transpose_weight_features(m, a, d))
        else:
            patches, sens = _patches_and_sensitivities(m, a, d)  # (n, G, K/G, L), (n, O, G, C/G, L)
            groups, k_g, length = patches.shape[1:]
            c_out = sens.shape[2] * sens.shape[3]
            cost_features = cost_rows * o * c_out * k_g * length + cost_pairs * o * c_out * k_g
            cost_product = cost_pairs * length * length * (k_g * groups + o * c_out)
            form = force_form
            if form is None:
                small = cost_pairs * length * length <= _PRODUCT_FORM_MAX_ELEMENTS
                form = "product" if small and cost_product < cost_features else "features"
            if form == "product" and groups == 1:
                prods.append(_ProductBlock(patches[:, 0].transpose(1, 2), sens[:, :, 0].transpose(2, 3)))
            else:
                feats.append(torch.einsum("iogcl,igkl->iogck", sens, patches).reshape(n, -1))
    if unit.bias is not None:
        feats.append(_bias_features(m, d))
    return feats, prods


def _patches_and_sensitivities(m: nn.Module, a: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
    """Input patches (n, G, K/G, L) and output sensitivities (n, O, G, C/G, L) of a Linear
    (positions = any extra leading dims of its input) or Conv2d layer."""
    n, o = d.shape[:2]
    if isinstance(m, nn.Linear):
        patches = a.reshape(n, -1, m.in_features).transpose(1, 2).unsqueeze(1)
        sens = d.reshape(n, o, -1, m.out_features).transpose(2, 3).unsqueeze(2)
        return patches, sens
    g = m.groups
    if m.padding_mode != "zeros":
        a = F.pad(a, m._reversed_padding_repeated_twice, mode=m.padding_mode)
    cols = _im2col(a, m.kernel_size, m.dilation, _conv_padding(m), m.stride)  # (n, Cin*kh*kw, L)
    length = cols.shape[-1]
    sens = d.reshape(n, o, g, m.out_channels // g, -1)
    if sens.shape[-1] != length:
        raise RuntimeError(f"internal: {length} patches but {sens.shape[-1]} output positions in {m}")
    return cols.reshape(n, g, -1, length), sens


def _conv_transpose_weight_features(m: nn.ConvTranspose2d, a: Tensor, d: Tensor) -> Tensor:
    """Per-sample weight gradients of a transposed convolution, (n, O * weight.numel()).

    It is the adjoint of a convolution, so the roles swap: grad W[ci, co, kh, kw] =
    sum_l a[ci, l] * patches(d)[(co, kh, kw), l], patches taken with the layer's geometry.
    """
    n, o = d.shape[:2]
    g = m.groups
    cols = _im2col(d.reshape(n * o, *d.shape[2:]), m.kernel_size, m.dilation, m.padding, m.stride)
    length = a.shape[-2] * a.shape[-1]
    if cols.shape[-1] != length:
        raise RuntimeError(f"internal: {cols.shape[-1]} patches but {length} input positions in {m}")
    cols = cols.reshape(n, o, g, -1, length)  # (n, O, G, Cout/G*kh*kw, L)
    a_g = a.reshape(n, g, -1, length)  # (n, G, Cin/G, L)
    return torch.einsum("igkl,iogcl->iogkc", a_g, cols).reshape(n, -1)


def _im2col(a: Tensor, kernel_size, dilation, padding, stride) -> Tensor:
    """Patches (n, C*kh*kw, L) as F.unfold gives them, built from strided views (several
    times faster than F.unfold on CPU for few channels)."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel_size, dilation, padding, stride
    if ph or pw:
        a = F.pad(a, (pw, pw, ph, ph))
    v = a.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)  # (n, C, oh, ow, span, span)
    if dh > 1 or dw > 1:
        v = v[..., ::dh, ::dw]
    n, c, oh, ow = v.shape[:4]
    return v.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, oh * ow)


def _bias_features(m: nn.Module, d: Tensor) -> Tensor:
    """Bias gradient = output sensitivity summed over positions: (n, O * C)."""
    n, o = d.shape[:2]
    if isinstance(m, nn.Linear):
        return d.reshape(n, o, -1, m.out_features).sum(2).reshape(n, -1)
    return d.reshape(n, o, d.shape[2], -1).sum(-1).reshape(n, -1)


class _Taps:
    """Forward hooks on structured layers: record each layer's input and add a zero
    perturbation delta to its output, so that d(outputs)/d(delta) is the layer's output
    sensitivity. Also counts calls, so a layer used twice is left to the generic path."""

    def __init__(self, units: Sequence[_Unit]):
        self.units = {u.path: u for u in units}
        self.deltas: dict[str, Tensor] | None = None
        self.inputs: dict[str, Tensor] = {}
        self.out_meta: dict[str, tuple[torch.Size, torch.dtype]] = {}
        self.calls: dict[str, int] = {p: 0 for p in self.units}
        self.handles = []

    def __enter__(self) -> _Taps:
        for path, u in self.units.items():
            self.handles.append(u.module.register_forward_hook(self._hook(path)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _hook(self, path: str):
        def hook(module, args, output):
            self.calls[path] += 1
            self.inputs[path] = args[0]
            self.out_meta[path] = (output.shape, output.dtype)
            if self.deltas is not None:
                return output + self.deltas[path]
            return None

        return hook


@float32_region()
def kernel_factors(
    model: nn.Module,
    x: Tensor,
    params: dict[str, Tensor],
    reduce: Reduce | None,
    *,
    structured: bool,
    cost_rows: int | None = None,
    cost_pairs: int | None = None,
    force_form: str | None = None,
) -> KernelFactors:
    """Per-sample kernel factors of ``model`` on ``x`` w.r.t. ``params`` (name -> tensor).

    Everything is computed by one vmap-over-samples of jacrev w.r.t. (the non-structured
    parameters, the zero perturbations of structured layer outputs); the layer inputs come
    back as auxiliary outputs. Differentiable w.r.t. the parameters when grad mode is on.
    ``cost_rows`` / ``cost_pairs`` size the choice of form per layer (default: this batch and
    its n x n kernel); a cache passes fixed values so every chunk gets the same forms.
    ``force_form`` ("features" or "product") overrides that choice (tests).
    Float32 under autocast, like every kernel here.
    """
    x = to_float32(x)
    n = x.shape[0]
    cost_rows = n if cost_rows is None else cost_rows
    cost_pairs = cost_rows * cost_rows if cost_pairs is None else cost_pairs
    units = _structured_units(model, params) if structured else []
    if units:
        with _Taps(units) as probe, torch.no_grad():
            model(x[:1])
        for u in list(units):
            if probe.calls[u.path] != 1:
                units.remove(u)  # reused layer: its gradient is a sum over uses; go generic
        meta = probe.out_meta
    else:
        meta = {}
    structured_names = {nm for u in units for nm in (u.weight, u.bias) if nm is not None}
    generic = {k: v for k, v in params.items() if k not in structured_names}
    taps = _Taps(units)
    deltas0 = {
        u.path: torch.zeros((n, *meta[u.path][0][1:]), dtype=meta[u.path][1], device=x.device) for u in units
    }

    def per_sample(gen_params: dict[str, Tensor], deltas: dict[str, Tensor], xi: Tensor):
        taps.deltas = {k: v.unsqueeze(0) for k, v in deltas.items()}
        taps.inputs = {}
        try:
            out = functional_call(model, gen_params, (xi.unsqueeze(0),))
        finally:
            taps.deltas = None
        inputs = {k: v[0] for k, v in taps.inputs.items()}
        taps.inputs = {}
        return _reduced(out, reduce)[0], (inputs, out[0])

    argnums = (0, 1) if generic else 1
    with taps:
        jac, (acts, model_output) = vmap(jacrev(per_sample, argnums=argnums, has_aux=True), in_dims=(None, 0, 0))(
            generic, deltas0, x
        )
    j_gen, j_delta = jac if generic else ({}, jac)
    outputs = next(iter(j_gen.values() if generic else j_delta.values())).shape[1]
    feats: list[Tensor] = [j.reshape(n, -1) for j in j_gen.values()]
    prods: list[_ProductBlock] = []
    for u in units:
        f, p = _unit_factors(u, acts[u.path], j_delta[u.path], cost_rows, cost_pairs, force_form)
        feats += f
        prods += p
    return KernelFactors(feats, prods, outputs, model_output)


# --------------------------------------------------------------------------------------------
# estimators


def _directions(params: dict[str, Tensor], r: int, generator: torch.Generator | None) -> list[Tensor]:
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
        return _reduced(out, reduce)

    def along(*tangent):
        return jvp(f, primals, tangent)[1]

    jz = vmap(along, chunk_size=chunk)(*directions)  # (R, n, O)
    return jz.transpose(0, 1)


def _fd_features(
    model: nn.Module,
    x: Tensor,
    params: dict[str, Tensor],
    reduce: Reduce | None,
    directions: Sequence[Tensor],
    eps: float,
    chunk: int = 64,
) -> Tensor:
    names = list(params)
    base = _reduced(functional_call(model, params, (x,)), reduce)

    def shifted(*z):
        moved = {k: p + eps * dz for k, p, dz in zip(names, params.values(), z)}
        return (_reduced(functional_call(model, moved, (x,)), reduce) - base) / eps

    g = vmap(shifted, chunk_size=chunk)(*directions)  # (R, n, O)
    return g.transpose(0, 1)


# --------------------------------------------------------------------------------------------
# public API


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
    if method in ("exact", "structured"):
        fac = ntk_factors(model, x, params=params, reduce=reduce, method=method, create_graph=create_graph)
        return cross_kernel(fac, fac)
    if directions < 1:
        raise ValueError(f"directions must be >= 1, got {directions}")
    x, chosen = _batch_and_params(model, x, params, create_graph)
    with torch.enable_grad() if create_graph else torch.no_grad():
        z = _directions(chosen, directions, generator)
        if method == "jvp":
            g = tangent_features(model, x, chosen, reduce, z)
        else:
            g = _fd_features(model, x, chosen, reduce, z, eps)
        g = g.reshape(g.shape[0], -1)
        return (g @ g.T) / directions


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
    if method not in ("structured", "exact"):
        raise ValueError(f"kernel factors need an exact method ('structured' or 'exact'), got {method!r}")
    x, chosen = _batch_and_params(model, x, params, create_graph)
    with torch.enable_grad() if create_graph else torch.no_grad():
        return kernel_factors(model, x, chosen, reduce, structured=method == "structured")


def _batch_and_params(model: nn.Module, x: Tensor, params: Sequence[str] | None,
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
        return _reduced(functional_call(model, p, (xi.unsqueeze(0),)), reduce)[0]

    jac = vmap(jacrev(per_sample), in_dims=(None, 0))(chosen, x)
    o = next(iter(jac.values())).shape[1]
    j = torch.cat([v.reshape(n * o, -1) for v in jac.values()], dim=1)
    return j @ j.T
