"""The "structured" exact kernel: Linear / Conv2d / ConvTranspose2d / GroupNorm blocks from two small factors.

For these layers the weight gradient of output c is d_c u^T (output sensitivities times input
patches), so their kernel blocks come from the layer inputs and the back-propagated
sensitivities without ever forming the per-sample weight gradients of large layers; only the
remaining parameter tensors (an optical kernel or phase mask: few values) need per-sample
Jacobians. One vmap(jacrev) pass yields both; when no parameter needs a per-sample Jacobian
and the samples of a batch do not interact (checked once per model), one forward of the whole
batch and O pull-backs do. Anything it cannot prove safe (tied weights, custom forwards, layers
used twice, unsupported conv geometry) goes the generic Jacobian way, so the result is always
exact. (GroupNorm fits the same form: its scale's gradient is the output sensitivity times the
normalised input, channel by channel.)
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vjp, vmap

from onnx_run.ntk.arguments import Reduce, reduced_outputs
from onnx_run.ntk.exact import jacobian_factors
from onnx_run.ntk.factors import KernelFactors, ProductBlock
from onnx_run.precision import float32_region, to_float32

# Above this many elements, the product form of a structured block (which needs an
# (n, n, L, L) intermediate) is not used even where it would take fewer operations.
_PRODUCT_FORM_MAX_ELEMENTS = 1 << 25


@dataclass
class _Unit:
    """A layer whose weight gradient is (output sensitivity) x (input patches)."""

    path: str
    module: nn.Module
    weight: str | None  # full parameter name if the weight is in the kernel's parameter set
    bias: str | None


_STRUCTURED_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.GroupNorm)


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
) -> tuple[list[Tensor], list[ProductBlock]]:
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
    prods: list[ProductBlock] = []
    if unit.weight is not None:
        if isinstance(m, nn.GroupNorm):
            feats.append(_group_norm_weight_features(m, a, d))
        elif isinstance(m, nn.ConvTranspose2d):
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
                prods.append(ProductBlock(patches[:, 0].transpose(1, 2), sens[:, :, 0].transpose(2, 3)))
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


def _group_norm_weight_features(m: nn.GroupNorm, a: Tensor, d: Tensor) -> Tensor:
    """Per-sample gradients of a GroupNorm's scale, (n, O * C): each channel's output
    sensitivity times its normalised input, summed over positions (the output is
    scale * normalised + shift, channel by channel)."""
    n, o = d.shape[:2]
    normalised = F.group_norm(a, m.num_groups, None, None, m.eps).reshape(n, 1, m.num_channels, -1)
    return (d.reshape(n, o, m.num_channels, -1) * normalised).sum(-1).reshape(n, -1)


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


@dataclass
class _Probed:
    """What one small forward tells about a model: the output (shape, dtype) of each layer of
    the parameter set called exactly once (a reused layer's gradient is a sum over uses: it
    goes the generic way), and whether a batch's outputs are those of its samples alone."""

    meta: dict[str, tuple[torch.Size, torch.dtype]]
    samplewise: bool


#: per model, the probe's answer for each (input shape, dtype, device, mode, layers, reduce):
#: a forward of one sample costs about as much as a whole batch's where the optics compute
#: their kernels from a large mask (the 4f), and the answer depends on shapes and modules,
#: never on parameter values
_PROBES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe(model: nn.Module, x: Tensor, units: Sequence[_Unit], reduce: Reduce | None) -> _Probed:
    """The probe's answer for this model and input shape, asked once."""
    key = (tuple(x.shape[1:]), x.dtype, x.device, model.training, tuple((u.path, id(u.module)) for u in units),
           id(getattr(reduce, "__func__", reduce)))
    known = _PROBES.setdefault(model, {})
    if key not in known:
        with _Taps(units) as probe, torch.no_grad():
            alone = [reduced_outputs(model(x[i : i + 1]), reduce) for i in range(min(2, x.shape[0]))]
            calls = dict(probe.calls)
            together = reduced_outputs(model(x[:2]), reduce) if x.shape[0] >= 2 else None
        # values cannot be read on the meta device (device-placement tests): take the safe path
        samplewise = together is not None and x.device.type != "meta" and bool(
            torch.allclose(together, torch.cat(alone), rtol=1e-4, atol=1e-6 * float(together.abs().max())))
        known.clear()  # one entry per model: shapes change rarely, modules never pile up
        known[key] = _Probed({u.path: probe.out_meta[u.path] for u in units if calls[u.path] == len(alone)},
                             samplewise)
    return known[key]


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
    parameters, the zero perturbations of structured layer outputs), or, when every parameter
    is in a structured layer and the probe found the samples independent, by one forward of
    the batch and O pull-backs (``_batch_sensitivities``); the layer inputs come back as
    auxiliary outputs. Differentiable w.r.t. the parameters when grad mode is on.
    ``cost_rows`` / ``cost_pairs`` size the choice of form per layer (default: this batch and
    its n x n kernel); a cache passes fixed values so every chunk gets the same forms.
    ``force_form`` ("features" or "product") overrides that choice (tests).
    ``structured=False``: the plain per-sample Jacobians of method "exact" (exact.py).
    Float32 under autocast, like every kernel here.
    """
    if not structured:
        return jacobian_factors(model, x, params, reduce)
    x = to_float32(x)
    n = x.shape[0]
    cost_rows = n if cost_rows is None else cost_rows
    cost_pairs = cost_rows * cost_rows if cost_pairs is None else cost_pairs
    units = _structured_units(model, params)
    probed = _probe(model, x, units, reduce) if units else _Probed({}, False)
    meta = probed.meta
    units = [u for u in units if u.path in meta]
    structured_names = {nm for u in units for nm in (u.weight, u.bias) if nm is not None}
    generic = {k: v for k, v in params.items() if k not in structured_names}
    taps = _Taps(units)
    deltas0 = {
        u.path: torch.zeros((n, *meta[u.path][0][1:]), dtype=meta[u.path][1], device=x.device) for u in units
    }
    if units and not generic and probed.samplewise:
        j_delta, acts, model_output = _batch_sensitivities(model, x, taps, deltas0, reduce)
        return _assemble(units, {}, j_delta, acts, model_output, cost_rows, cost_pairs, force_form)

    def per_sample(gen_params: dict[str, Tensor], deltas: dict[str, Tensor], xi: Tensor):
        taps.deltas = {k: v.unsqueeze(0) for k, v in deltas.items()}
        taps.inputs = {}
        try:
            out = functional_call(model, gen_params, (xi.unsqueeze(0),))
        finally:
            taps.deltas = None
        inputs = {k: v[0] for k, v in taps.inputs.items()}
        taps.inputs = {}
        return reduced_outputs(out, reduce)[0], (inputs, out[0])

    argnums = (0, 1) if generic else 1
    with taps:
        jac, (acts, model_output) = vmap(jacrev(per_sample, argnums=argnums, has_aux=True), in_dims=(None, 0, 0))(
            generic, deltas0, x
        )
    j_gen, j_delta = jac if generic else ({}, jac)
    return _assemble(units, j_gen, j_delta, acts, model_output, cost_rows, cost_pairs, force_form)


def _batch_sensitivities(model: nn.Module, x: Tensor, taps: _Taps, deltas0: dict[str, Tensor],
                         reduce: Reduce | None) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """(output sensitivities (n, O, *out) per layer, layer inputs, model(x)) from one forward of
    the whole batch and O pull-backs vmapped over the outputs: the same numbers as the
    per-sample pass when the samples do not interact (checked once by the probe), without
    running every layer under vmap (the 4f NTKD training step 1.42x a plain one, was 1.73x:
    bench_presets)."""

    def batch(deltas: dict[str, Tensor]):
        taps.deltas = deltas
        taps.inputs = {}
        try:
            out = model(x)
        finally:
            taps.deltas = None
        inputs, taps.inputs = taps.inputs, {}
        return reduced_outputs(out, reduce), (inputs, out)

    with taps:
        outputs, pull, (acts, model_output) = vjp(batch, deltas0, has_aux=True)
    o = outputs.shape[1]
    basis = torch.eye(o, dtype=outputs.dtype, device=outputs.device).unsqueeze(1).expand(o, *outputs.shape)
    (sens,) = vmap(pull)(basis)  # each (O, n, *out)
    return {k: v.movedim(0, 1) for k, v in sens.items()}, acts, model_output


def _assemble(units: Sequence[_Unit], j_gen: dict[str, Tensor], j_delta: dict[str, Tensor], acts: dict[str, Tensor],
              model_output: Tensor, cost_rows: int, cost_pairs: int, force_form: str | None) -> KernelFactors:
    """KernelFactors from the per-sample Jacobians of the generic parameters (n, O, ...) and
    the structured layers' inputs and output sensitivities."""
    first = next(iter(j_gen.values() if j_gen else j_delta.values()))
    n, outputs = first.shape[:2]
    feats: list[Tensor] = [j.reshape(n, -1) for j in j_gen.values()]
    prods: list[ProductBlock] = []
    for u in units:
        f, p = _unit_factors(u, acts[u.path], j_delta[u.path], cost_rows, cost_pairs, force_form)
        feats += f
        prods += p
    return KernelFactors(feats, prods, outputs, model_output)

