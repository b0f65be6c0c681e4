"""Exact and structured empirical NTKs against brute force, on the layer types the project uses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from onnx_run.ntk import NTK_METHODS, empirical_ntk, empirical_ntk_full, kernel_discrepancy
from onnx_run.ntk.arguments import resolve_params
from onnx_run.ntk.factors import cross_kernel
from onnx_run.ntk.structured import kernel_factors

DT = torch.float64


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(DT)
    yield
    torch.set_default_dtype(old)


def brute_force_jacobian(model: nn.Module, x: torch.Tensor, names: list[str], reduce=None) -> torch.Tensor:
    """J[i, c, :] = d out_c(x_i) / d theta, one autograd.grad call per sample and output."""
    params = [dict(model.named_parameters())[n] for n in names]
    frozen = [p for p in params if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        return _brute_force_rows(model, x, params, reduce)
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _brute_force_rows(model, x, params, reduce):
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1])
        out = out.reshape(1, -1) if reduce is None else reduce(out)
        per_c = []
        for c in range(out.shape[1]):
            gs = torch.autograd.grad(out[0, c], params, retain_graph=True, allow_unused=True)
            per_c.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(gs, params)]))
        rows.append(torch.stack(per_c))
    return torch.stack(rows)  # (n, O, P)


def brute_force_ntk(model, x, names, reduce=None) -> torch.Tensor:
    j = brute_force_jacobian(model, x, names, reduce)
    n = x.shape[0]
    k = torch.zeros(n, n)
    for i in range(n):
        for jj in range(n):
            k[i, jj] = (j[i] * j[jj]).sum()  # sum over outputs c and parameters
    return k


def assert_close(a, b, rtol=1e-9):
    scale = b.abs().max().clamp_min(1e-300)
    assert (a - b).abs().max() <= rtol * scale, f"max abs diff {(a - b).abs().max():.3e} vs scale {scale:.3e}"


def all_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------------- models


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.GELU(), nn.Linear(6, 3))


def small_convnet():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4, 5),
        nn.Softplus(),
        nn.Linear(5, 3),
    )


class FFTKernels(nn.Module):
    """An optical-style frontend: a learnable (K, 7, 7) kernel tensor convolved with the input by
    FFT (complex intermediates), then the intensity |.|^2."""

    def __init__(self, k=3, side=7, size=10):
        super().__init__()
        self.kernels = nn.Parameter(0.3 * torch.randn(k, side, side))
        self.size = size
        self.pad = size + side - 1

    def forward(self, x):  # x (B, 1, size, size)
        s = (self.pad, self.pad)
        field = torch.fft.irfft2(torch.fft.rfft2(x, s=s) * torch.fft.rfft2(self.kernels, s=s), s=s)
        c = (self.pad - self.size) // 2
        return torch.abs(field[..., c : c + self.size, c : c + self.size]) ** 2


def fft_model():
    torch.manual_seed(2)
    return nn.Sequential(FFTKernels(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(75, 8), nn.ReLU(), nn.Linear(8, 4))


def bn_model():
    torch.manual_seed(3)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 6),
        nn.BatchNorm1d(6),
        nn.Tanh(),
        nn.Linear(6, 3),
    )
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for bn in (m[1], m[5]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return m.eval()


def gn_model():
    """The segmentation decoder's pattern: convolutions, GroupNorm with non-trivial scale and
    shift, an up-convolution; dense outputs."""
    torch.manual_seed(7)
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(),
        nn.ConvTranspose2d(4, 4, 2, stride=2), nn.GroupNorm(4, 4), nn.Tanh(), nn.Conv2d(4, 2, 1),
    )  # fmt: skip
    with torch.no_grad():
        for gn in (m[1], m[4]):
            gn.weight.uniform_(0.5, 1.5)
            gn.bias.uniform_(-0.3, 0.3)
    return m


# ------------------------------------------------------------------------------------ tests


def test_exact_and_structured_equal_brute_force_double_loop():
    m = mlp()
    x = torch.randn(5, 5)
    ref = brute_force_ntk(m, x, all_names(m))
    assert_close(empirical_ntk(m, x, method="exact"), ref)
    assert_close(empirical_ntk(m, x, method="structured"), ref)


def test_full_ntk_matches_brute_force_and_traces_to_the_trace_ntk():
    m = mlp()
    x = torch.randn(4, 5)
    j = brute_force_jacobian(m, x, all_names(m))  # (n, O, P)
    n, o = j.shape[:2]
    full = empirical_ntk_full(m, x)
    assert full.shape == (n * o, n * o)
    assert_close(full, j.reshape(n * o, -1) @ j.reshape(n * o, -1).T)
    traced = full.reshape(n, o, n, o).diagonal(dim1=1, dim2=3).sum(-1)
    assert_close(traced, empirical_ntk(m, x, method="exact"))
    # an off-diagonal output block is not zero: the full form carries more than the trace
    assert full.reshape(n, o, n, o)[:, 0, :, 1].abs().max() > 1e-6


def test_structured_path_really_uses_layer_factors():
    """Guards the fast path: the MLP's Linear weights must go through the product form."""
    m = mlp()
    fac = kernel_factors(m, torch.randn(3, 5), resolve_params(m, None), None, structured=True)
    assert len(fac.products) == 3
    # features hold only the three bias blocks (n, O * out)
    assert sorted(f.shape[1] for f in fac.features) == sorted([3 * 7, 3 * 6, 3 * 3])


@pytest.mark.parametrize(
    "make, shape",
    [(mlp, (6, 5)), (small_convnet, (5, 2, 8, 8)), (fft_model, (5, 1, 10, 10)), (bn_model, (5, 1, 6, 6)),
     (gn_model, (4, 2, 4, 4))],
    ids=["mlp", "convnet", "fft-kernels", "batchnorm-eval", "groupnorm"],
)
def test_structured_equals_exact(make, shape):
    m = make()
    x = torch.randn(*shape)
    exact = empirical_ntk(m, x, method="exact")
    assert_close(empirical_ntk(m, x, method="structured"), exact)
    assert exact.shape == (shape[0], shape[0])
    assert torch.allclose(exact, exact.T)


@pytest.mark.parametrize("form", ["features", "product"])
def test_both_structured_forms_are_exact(form):
    """Per-sample weight gradients and the position-summed product form give the same kernel."""
    m = small_convnet()
    x = torch.randn(4, 2, 8, 8)
    p = resolve_params(m, None)
    fac = kernel_factors(m, x, p, None, structured=True, force_form=form)
    assert (len(fac.products) > 0) == (form == "product")
    assert_close(cross_kernel(fac, fac), empirical_ntk(m, x, method="exact"))


def test_structured_with_frozen_frontend_and_explicit_subset():
    m = fft_model()
    x = torch.randn(4, 1, 10, 10)
    m[0].requires_grad_(False)  # frontend frozen: default set = backend parameters
    backend = all_names(m)
    assert backend == ["3.weight", "3.bias", "5.weight", "5.bias"]
    ref = brute_force_ntk(m, x, backend)
    assert_close(empirical_ntk(m, x, method="structured"), ref)
    assert_close(empirical_ntk(m, x, method="exact"), ref)
    # an explicit mixed subset: the frozen kernel tensor plus one weight, one bias
    subset = ["0.kernels", "3.weight", "5.bias"]
    assert_close(empirical_ntk(m, x, params=subset, method="structured"), empirical_ntk(m, x, params=subset, method="exact"))
    assert_close(empirical_ntk(m, x, params=subset), brute_force_ntk(m, x, subset))


def test_structured_on_less_common_layers():
    """Grouped, dilated, 'same' and reflect-padded convs, a transposed conv, a Linear on
    sequences (positions), and a layer called twice (must fall back, still exact)."""
    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(2, 4, 3, padding="same", dilation=2, groups=2)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect", stride=2)
            self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2)
            self.seq = nn.Linear(8, 3)  # applied to (B, 2*8, 8): 16 positions
            self.shared = nn.Linear(3, 3)  # used twice
            self.head = nn.Linear(3 * 16, 2)

        def forward(self, x):
            h = torch.tanh(self.c1(x))
            h = torch.relu(self.c2(h))
            h = torch.tanh(self.up(h))  # (B, 2, 8, 8)
            s = torch.tanh(self.seq(h.reshape(h.shape[0], 16, 8)))
            s = self.shared(torch.tanh(self.shared(s)))
            return self.head(s.flatten(1))

    m = Net()
    x = torch.randn(3, 2, 8, 8)
    assert_close(empirical_ntk(m, x, method="structured"), empirical_ntk(m, x, method="exact"))


def test_reduce_projects_segmentation_outputs():
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))  # (B, 2, 4, 4)
    proj = torch.randn(2 * 4 * 4, 5)
    reduce = lambda out: out.flatten(1) @ proj  # noqa: E731
    x = torch.randn(4, 1, 4, 4)
    ref = brute_force_ntk(m, x, all_names(m), reduce=reduce)
    assert_close(empirical_ntk(m, x, reduce=reduce, method="structured"), ref)
    assert_close(empirical_ntk(m, x, reduce=reduce, method="exact"), ref)
    # default reduce flattens every output value (identity projection)
    eye = torch.eye(2 * 4 * 4)
    assert_close(empirical_ntk(m, x), empirical_ntk(m, x, reduce=lambda out: out.flatten(1) @ eye, method="exact"))


def _directional_check(make_loss, params, seed=0, h=1e-5):
    """Autograd gradient vs central differences along random directions (float64)."""
    loss = make_loss()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(2):
        vs = [torch.randn(p.shape, generator=gen) for p in params]
        analytic = sum((g * v).sum() for g, v in zip(grads, vs))
        with torch.no_grad():
            for p, v in zip(params, vs):
                p.add_(h * v)
            up = make_loss()
            for p, v in zip(params, vs):
                p.sub_(2 * h * v)
            down = make_loss()
            for p, v in zip(params, vs):
                p.add_(h * v)
        numeric = (up - down) / (2 * h)
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (float(numeric), float(analytic))


@pytest.mark.parametrize(
    "method, kind, make, shape",
    [
        ("structured", "mse", fft_model, (4, 1, 10, 10)),
        ("structured", "alignment_centered", fft_model, (4, 1, 10, 10)),
        ("exact", "mse", fft_model, (4, 1, 10, 10)),
        ("exact", "alignment_centered", fft_model, (4, 1, 10, 10)),
        ("structured", "mse_normalized", small_convnet, (3, 2, 8, 8)),
        ("exact", "alignment", small_convnet, (3, 2, 8, 8)),
    ],
)
def test_create_graph_gradient_matches_finite_differences(method, kind, make, shape):
    student = make()
    x = torch.randn(*shape)
    n = shape[0]
    torch.manual_seed(9)
    k_teacher = torch.randn(n, n)
    k_teacher = k_teacher @ k_teacher.T
    params = [p for p in student.parameters()]

    def loss():
        k = empirical_ntk(student, x, method=method, create_graph=True)
        return kernel_discrepancy(k, k_teacher, kind=kind)

    _directional_check(loss, params)


def test_create_graph_false_builds_no_graph_and_true_does():
    m = small_convnet()
    x = torch.randn(3, 2, 8, 8)
    for method in NTK_METHODS:
        k = empirical_ntk(m, x, method=method, directions=2, generator=torch.Generator().manual_seed(0))
        assert not k.requires_grad, method
        kg = empirical_ntk(m, x, method=method, directions=2, create_graph=True, generator=torch.Generator().manual_seed(0))
        assert kg.requires_grad, method
        assert torch.allclose(k, kg.detach(), rtol=1e-10, atol=0), method


def test_invalid_arguments_are_rejected_with_clear_errors():
    m = bn_model()
    x = torch.randn(3, 1, 6, 6)
    with pytest.raises(ValueError, match="unknown NTK method 'laplace'"):
        empirical_ntk(m, x, method="laplace")
    with pytest.raises(ValueError, match="unknown parameter names"):
        empirical_ntk(m, x, params=["nope.weight"])
    m.train()
    with pytest.raises(ValueError, match="BatchNorm in training mode"):
        empirical_ntk(m, x)
    m.eval().requires_grad_(False)
    with pytest.raises(ValueError, match="pass params="):
        empirical_ntk(m, x)
    # a frozen model with the parameters named explicitly works
    names = [n for n, _ in m.named_parameters()]
    assert empirical_ntk(m, x, params=names).shape == (3, 3)
    with pytest.raises(ValueError, match=r"reduce must map"):
        empirical_ntk(m, x, params=names, reduce=lambda out: out.sum())
    drop = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train()
    with pytest.raises(ValueError, match="dropout"):
        empirical_ntk(drop, torch.randn(2, 3))


@pytest.mark.parametrize("frozen_frontend", [False, True])
def test_kernel_with_outputs_gives_the_same_loss_gradient_as_two_passes(frozen_frontend):
    """One forward for task loss + NTKD term: outputs and gradients equal the two-pass step."""
    from onnx_run.ntk import empirical_ntk_with_outputs

    m = fft_model()
    m[0].requires_grad_(not frozen_frontend)
    x = torch.randn(4, 1, 10, 10)
    y = torch.tensor([0, 3, 1, 2])
    params = [p for p in m.parameters() if p.requires_grad]
    k_teacher = torch.eye(4) + 0.1
    k, out = empirical_ntk_with_outputs(m, x, create_graph=True)
    one = torch.autograd.grad(F.cross_entropy(out, y) + kernel_discrepancy(k, k_teacher), params)
    k2 = empirical_ntk(m, x, create_graph=True)
    two = torch.autograd.grad(F.cross_entropy(m(x), y) + kernel_discrepancy(k2, k_teacher), params)
    assert_close(out, m(x))
    for a, b in zip(one, two):
        assert_close(a, b)
    k_ng, out_ng = empirical_ntk_with_outputs(m, x)
    assert not k_ng.requires_grad and not out_ng.requires_grad
    with pytest.raises(ValueError, match="exact method"):
        empirical_ntk_with_outputs(m, x, method="jvp")


class BatchScaled(nn.Module):
    """Divides by the largest value in the whole batch: the samples interact, as an optics
    with an automatic exposure over the batch would."""

    def forward(self, x):
        return x / x.abs().amax()


def test_a_model_whose_samples_interact_gets_the_per_sample_kernel():
    """The structured kernel takes one forward of the whole batch only where the probe found
    a batch's outputs equal to those of its samples alone; here it must not, and the kernel is
    still that of each sample on its own (brute force runs the samples one at a time)."""
    import onnx_run.ntk.structured as structured

    torch.manual_seed(6)
    m = nn.Sequential(BatchScaled(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    x = torch.randn(4, 4)
    ref = brute_force_ntk(m, x, all_names(m))
    assert_close(empirical_ntk(m, x, method="structured"), ref)
    probed = structured._probe(m, x, structured._structured_units(m, resolve_params(m, None)), None)
    assert not probed.samplewise
    plain = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    assert structured._probe(plain, x, structured._structured_units(plain, resolve_params(plain, None)), None).samplewise


@pytest.mark.parametrize("make, shape", [(mlp, (5, 5)), (small_convnet, (4, 2, 8, 8))], ids=["mlp", "convnet"])
def test_the_batch_pass_equals_the_per_sample_pass_with_gradients(make, shape, monkeypatch):
    """Kernel, outputs and the gradient of an NTKD-like loss agree between the whole-batch
    pass and the per-sample (vmap) pass it replaces."""
    import dataclasses

    import onnx_run.ntk.structured as structured
    from onnx_run.ntk import empirical_ntk_with_outputs

    m = make()
    x = torch.randn(*shape)
    params = list(m.parameters())

    def step():
        k, out = empirical_ntk_with_outputs(m, x, create_graph=True)
        loss = kernel_discrepancy(k, torch.eye(shape[0]) + 0.2, "alignment_centered") + out.square().mean()
        return k.detach(), out.detach(), torch.autograd.grad(loss, params)

    batch = step()
    probe = structured._probe
    monkeypatch.setattr(structured, "_probe", lambda *a: dataclasses.replace(probe(*a), samplewise=False))
    per_sample = step()
    assert_close(batch[0], per_sample[0])
    assert_close(batch[1], per_sample[1])
    for a, b in zip(batch[2], per_sample[2]):
        assert_close(a, b)


def test_the_probe_runs_once_per_model_and_input_shape():
    """The probe's small forwards (shapes, layers used once, samples independent) happen on
    the first kernel of a model and input shape only: afterwards a kernel costs one forward."""
    calls = []
    m = mlp()
    m.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    x = torch.randn(6, 5)
    empirical_ntk(m, x)
    first = len(calls)
    assert first >= 2  # the probe's forwards, then the kernel's own
    for _ in range(3):
        empirical_ntk(m, x + 1)
    assert len(calls) == first + 3 and calls[-3:] == [6, 6, 6]
    empirical_ntk(m, torch.randn(6, 5, 5).transpose(1, 2)[:, 0])  # same shape: still known
    assert len(calls) == first + 4
    empirical_ntk(m, torch.randn(2, 3, 5))  # a new input shape asks again
    assert len(calls) > first + 5


def test_group_norm_goes_the_structured_way_and_its_gradients_hold():
    """GroupNorm's scale and shift come from its normalised input and output sensitivities
    (no per-sample Jacobian), against brute force; the NTKD gradient through them against
    central differences."""
    m = gn_model()
    x = torch.randn(3, 2, 4, 4)
    import onnx_run.ntk.structured as structured

    params = resolve_params(m, None)
    assert [u.path for u in structured._structured_units(m, params)] == ["0", "1", "3", "4", "6"]
    fac = kernel_factors(m, x, params, None, structured=True)
    assert_close(cross_kernel(fac, fac), brute_force_ntk(m, x, all_names(m)))
    torch.manual_seed(9)
    k_teacher = torch.randn(3, 3)
    k_teacher = k_teacher @ k_teacher.T
    _directional_check(lambda: kernel_discrepancy(empirical_ntk(m, x, create_graph=True), k_teacher,
                                                  kind="alignment_centered"), list(m.parameters()))
