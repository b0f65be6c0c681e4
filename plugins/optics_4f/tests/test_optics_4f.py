"""The 4f frontend: shapes, kernels vs forward, PSF vs the diffraction integral, gradients,
export, layout numbers, quantised phase levels, coherent and crosstalk modes, noise."""

from __future__ import annotations

import importlib.metadata
import json
import math
import warnings
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from numpy.polynomial.legendre import leggauss

from onnx_run.components import Layout, OpticalFrontend
from onnx_run.errors import UserError
from onnx_run.physics import PhysicsWarning, incoherent_conv, phase_levels

from onnx_run_optics_4f import Frontend4f, Optics4fConfig, layout_for
from onnx_run_optics_4f import plugin as plugin_module

# a small, fast system: 16 x 16 mask, period of 12 sensor pixels, 4 x 4 input, 3 x 3 kernels
LAM, F, P, M = 500e-9, 10e-3, 10e-6, 16
S = LAM * F / P / 12


def small(**kw) -> Optics4fConfig:
    base = dict(wavelength_nm=LAM * 1e9, focal_length_mm=F * 1e3, slm_pitch_um=P * 1e6, slm_pixels=M,
                sensor_pitch_um=S * 1e6, input_size_px=4, kernel_size=3, num_kernels=2, signed=True,
                phase_bits=0, seed=3)
    base.update(kw)
    return Optics4fConfig(**base)


@pytest.fixture(scope="module")
def default_frontend() -> Frontend4f:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PhysicsWarning)  # the defaults are a consistent chain
        return Frontend4f(Optics4fConfig())


def test_plugin_registers_4f_with_its_config():
    got = {}

    def register(name, factory, config=None, description=""):
        got[name] = (factory, config, description)

    plugin_module.register_optics(register=register)
    factory, config, description = got["4f"]
    assert factory == "onnx_run_optics_4f.frontend:Frontend4f" and description  # imported on first use
    assert config == "onnx_run_optics_4f.config:Optics4fConfig"
    from onnx_run.plugins import registry

    comp = registry()["optics"]["4f"]
    assert comp.factory is Frontend4f and comp.config is Optics4fConfig
    eps = [ep for ep in importlib.metadata.entry_points(group="onnx_run") if ep.name == "4f"]
    assert eps and eps[0].load() is plugin_module


def test_defaults_shapes_and_non_negative_capture(default_frontend):
    fe = default_frontend
    assert isinstance(fe, OpticalFrontend)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    cap = fe.capture(x)
    assert cap.shape == (4, 16, 28, 28) and bool((cap >= 0).all())
    out = fe(x)
    assert out.shape == (4, 8, 28, 28)
    assert torch.allclose(out, cap[:, :8] - cap[:, 8:], atol=1e-5 * float(cap.detach().max()))
    assert bool((out < 0).any()) and bool((out > 0).any())  # signed features
    assert fe.feature_shape() == (8, 28, 28)
    assert fe.num_kernels == 8
    # O(1) outputs for O(1) inputs (fixed gain = number of tiles)
    assert 0.01 < float(out.detach().abs().mean()) < 10


def _check_kernels_match_forward(fe: Frontend4f) -> None:
    n = fe.input_size[0]
    x = torch.rand(3, fe.in_channels, n, n, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = fe(x)
        kernels = fe.kernels()
        ref = fe.gain * incoherent_conv(x, kernels, mode="same", method="fft")
    k = fe.config.kernel_size
    assert kernels.shape == (fe.config.num_kernels, fe.in_channels, k, k)
    assert torch.allclose(out, ref, atol=1e-5 * float(ref.abs().max()))
    assert torch.allclose(fe.kernels(include_gain=True), fe.gain * kernels)


def test_kernels_are_what_forward_applies(default_frontend):
    _check_kernels_match_forward(default_frontend)


@pytest.mark.parametrize("kw", [dict(signed=False), dict(channels=3), dict(mask="complex"), dict(mask="amplitude"),
                                dict(phase_bits=2, phase_range_pi=1.5)])
def test_kernels_are_what_forward_applies_in_every_variant(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhysicsWarning)
        fe = Frontend4f(small(**kw))
    _check_kernels_match_forward(fe)


def _brute_force_psf(fe: Frontend4f, centre_px: tuple[int, int], coherent: bool) -> np.ndarray:
    """The 4f PSF from the diffraction integral, independent of the frontend's DFT machinery.

    Read-out frame field of a pixelated mask t (unit power over the mask):
    U(z) = p / (lambda f M) sinc(p zy / lambda f) sinc(p zx / lambda f) sum t_mn exp(2 pi i u.z / lambda f).
    Incoherent: integrate |U|^2 against the display-pixel/sensor-pixel overlap tent (Gauss-Legendre).
    Coherent: U at the pixel centre times the pixel side.
    """
    t = fe.transmission().detach().to(torch.complex128).numpy()[0]
    u = (np.arange(M) - M // 2) * P

    def field(zy, zx):
        ey = np.exp(2j * np.pi * np.outer(zy, u) / (LAM * F))
        ex = np.exp(2j * np.pi * np.outer(zx, u) / (LAM * F))
        env = np.sinc(P * zy / (LAM * F))[:, None] * np.sinc(P * zx / (LAM * F))[None, :]
        return P / (LAM * F * M) * env * (ey @ t @ ex.T)

    xg, wg = leggauss(40)

    def nodes(c):
        z = np.concatenate([c - S + (xg + 1) / 2 * S, c + (xg + 1) / 2 * S])
        w = np.concatenate([wg, wg]) * S / 2 * (1 - np.abs(z - c) / S)
        return z, w

    out = np.zeros((3, 3), dtype=complex if coherent else float)
    for i, dy in enumerate((-1, 0, 1)):
        for j, dx in enumerate((-1, 0, 1)):
            yc, xc = (centre_px[0] + dy) * S, (centre_px[1] + dx) * S
            if coherent:
                out[i, j] = field(np.array([yc]), np.array([xc]))[0, 0] * S
            else:
                zy, wy = nodes(yc)
                zx, wx = nodes(xc)
                out[i, j] = (wy[:, None] * wx[None, :] * np.abs(field(zy, zx)) ** 2).sum()
    return out


@pytest.mark.parametrize("coherent", [False, True])
def test_psf_matches_the_diffraction_integral(coherent):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhysicsWarning)
        fe = Frontend4f(small(coherent=coherent, init="random")).double()
    tiles = fe.psf_tiles().detach().numpy()
    for t in range(fe.geometry.tiles):
        expected = _brute_force_psf(fe, fe.geometry.tile_centre(t), coherent)
        got = tiles[t, 0]
        if coherent:  # a global phase is not observable
            got = got * np.exp(-1j * np.angle(got[1, 1])) * np.exp(1j * np.angle(expected[1, 1]))
        assert np.abs(got - expected).max() < 1e-6 * np.abs(expected).max()


def test_gradients_reach_the_mask():
    for mask in ("phase", "amplitude", "complex"):
        fe = Frontend4f(Optics4fConfig(mask=mask, phase_bits=4, init="random"))
        x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
        fe(x).pow(2).mean().backward()
        for p in fe.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().max()) > 0


def test_export_writes_readable_files(default_frontend, tmp_path):
    import matplotlib.image

    paths = default_frontend.export(tmp_path / "design")
    names = {p.name for p in paths}
    assert {"mask.npy", "mask_phase.png", "kernels.npy", "layout.json", "slm_levels.npy"} <= names
    assert all(p.exists() for p in paths)
    mask = np.load(tmp_path / "design" / "mask.npy")
    assert mask.shape == (216, 216) and np.iscomplexobj(mask)
    assert np.allclose(np.abs(mask), 1, atol=1e-5)
    kernels = np.load(tmp_path / "design" / "kernels.npy")
    assert np.allclose(kernels, default_frontend.kernels().detach().numpy())
    levels = np.load(tmp_path / "design" / "slm_levels.npy")
    assert levels.dtype == np.uint8 and levels.shape == (216, 216)
    assert np.allclose(np.exp(1j * levels * 2 * np.pi / 256), mask, atol=1e-5)
    img = matplotlib.image.imread(tmp_path / "design" / "mask_phase.png")
    assert img.ndim == 3 and img.shape[0] > 100
    layout = json.loads((tmp_path / "design" / "layout.json").read_text())
    assert layout["num_kernels"] == 8 and layout["details"]["tiles"] == 16


def test_layout_numbers_of_the_defaults(default_frontend):
    lay = default_frontend.layout()
    assert isinstance(lay, Layout)
    assert lay == Frontend4f.layout_for(Optics4fConfig()) == layout_for(Optics4fConfig())
    assert (lay.num_kernels, lay.rows, lay.cols, lay.kernel_size_px) == (8, 4, 4, 7)
    d = lay.details
    assert d["tile_pitch_px"] == 28 + 7 - 1
    assert d["field_of_view_mm"][0] == pytest.approx(532e-9 * 15e-3 / 8e-6 * 1e3)  # lambda f / p
    assert d["field_of_view_px"][0] == pytest.approx(532e-9 * 15e-3 / (8e-6 * 5.86e-6), abs=1e-3)
    assert d["sensor_region_px"] == [136, 136]
    assert d["sensor_region_mm"][0] == pytest.approx(136 * 5.86e-3)
    assert d["mask_size_mm"] == pytest.approx(216 * 8e-3)
    assert d["max_tiles"] == 25 and d["max_kernels"] == 12  # floor(170.2 / 34) = 5 per axis
    assert d["mask_resolution_um"][0] <= d["sensor_pitch_um"]  # the mask resolves a sensor pixel
    assert d["tile_centres_px"][0] == [-51, -51] and d["tile_centres_px"][-1] == [51, 51]


def test_a_broken_sampling_chain_warns():
    with pytest.warns(PhysicsWarning, match="coarser than the 5.86 um sensor pixel"):
        Frontend4f(Optics4fConfig(slm_pixels=128, init="random"))
    with pytest.warns(PhysicsWarning, match="grating orders repeat the PSF"):
        Frontend4f(Optics4fConfig(channels=3, focal_length_mm=13.0, init="random"))


def test_layout_errors_say_what_fits():
    with pytest.raises(UserError, match="smallest size that fits one kernel"):
        Frontend4f.layout_for(Optics4fConfig(focal_length_mm=2.0))
    with pytest.raises(UserError, match="at most num_kernels = 12"):
        Frontend4f.layout_for(Optics4fConfig(num_kernels=13))
    assert Frontend4f.layout_for(Optics4fConfig(num_kernels=12)).rows == 5
    assert Frontend4f.layout_for(Optics4fConfig(num_kernels=25, signed=False)).num_kernels == 25


@pytest.mark.parametrize("bits, range_pi", [(3, 2.0), (2, 1.5), (1, 2.0)])
def test_quantised_phase_takes_exactly_2_to_the_bits_levels(bits, range_pi):
    fe = Frontend4f(Optics4fConfig(phase_bits=bits, phase_range_pi=range_pi, init="random"))
    phase = fe.phase().detach().double()
    values = torch.unique(phase)
    assert values.numel() == 2**bits
    allowed = phase_levels(range_pi * math.pi, bits)
    assert torch.allclose(values, allowed, atol=1e-5)


def test_continuous_phase_is_not_quantised():
    fe = Frontend4f(Optics4fConfig(phase_bits=0, init="random"))
    assert torch.unique(fe.phase().detach()).numel() > 1000


def test_coherent_mode_single_pixel_response_and_nonlinearity():
    fe = Frontend4f(Optics4fConfig(coherent=True))
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 14] = 1.0
    with torch.no_grad():
        cap = fe.capture(x)
        tiles = fe.psf_tiles()
    assert tiles.is_complex()
    intensity = tiles.abs() ** 2 * fe.gain
    assert torch.allclose(cap[0, :, 14 - 3: 14 + 4, 14 - 3: 14 + 4], intensity[:, 0], atol=1e-6 * float(intensity.max()))
    # amplitudes add before |.|^2: two pixels are not the sum of their responses
    x2 = x.clone()
    x2[0, 0, 14, 15] = 1.0
    y = x.clone() * 0
    y[0, 0, 14, 15] = 1.0
    with torch.no_grad():
        assert not torch.allclose(fe.capture(x2), fe.capture(x) + fe.capture(y), atol=1e-3)


def test_crosstalk_mode_adds_stray_light_only():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    win = Frontend4f(Optics4fConfig(signed=False, num_kernels=4, init="random"))
    full = Frontend4f(Optics4fConfig(signed=False, num_kernels=4, crosstalk=True, init="random"))
    with torch.no_grad():
        a, b = win.capture(x), full.capture(x)
    assert torch.allclose(win.kernels(), full.kernels())
    assert bool((b >= a - 1e-5).all())  # the PSF is non-negative: more of it only adds light
    assert float((b - a).mean()) > 1e-3 * float(a.mean())
    # with a single lit centre pixel the crops still hold the tile windows exactly
    delta = torch.zeros(1, 1, 28, 28)
    delta[0, 0, 14, 14] = 1.0
    with torch.no_grad():
        ca, cb = win.capture(delta), full.capture(delta)
    assert torch.allclose(ca[..., 11:18, 11:18], cb[..., 11:18, 11:18], atol=1e-6)


def test_noise_preserves_the_mean_and_is_off_by_default():
    torch.manual_seed(0)
    cfg = small(signed=False, num_kernels=1, noise=True, electrons_per_unit=200.0, read_noise_e=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhysicsWarning)
        noisy = Frontend4f(cfg)
        clean = Frontend4f(attrs.evolve(cfg, noise=False))
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(5)).expand(20000, 1, 4, 4)
    with torch.no_grad():
        ref = clean(x[:1])[0]
        samples = noisy(x)
    assert torch.equal(clean(x[:2])[0], clean(x[:2])[1])
    mean, var = samples.mean(0), samples.var(0)
    assert torch.allclose(mean, ref, atol=5 * float(var.max().sqrt()) / math.sqrt(20000))
    expected_var = (ref * 200.0 + 3.0**2) / 200.0**2
    assert torch.allclose(var, expected_var, rtol=0.08)


def test_rgb_uses_three_laser_lines_and_scales_the_psf_with_wavelength():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PhysicsWarning)  # the default chain holds at 450 and 635 nm
        fe = Frontend4f(Optics4fConfig(channels=3))
    assert [round(v) for v in fe.layout().details["wavelengths_nm"]] == [635, 532, 450]
    k = fe.kernels().detach()
    assert k.shape == (8, 3, 7, 7)
    assert not torch.allclose(k[:, 0], k[:, 2], atol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, 3, 28, 28\)"):
        fe(torch.rand(2, 1, 28, 28))


def test_config_validation_names_the_key():
    for bad, key in [(dict(kernel_size=6), "kernel_size"), (dict(mask="hologram"), "mask"),
                     (dict(focal_length_mm=-1.0), "focal_length_mm"), (dict(channels=2), "channels"),
                     (dict(phase_bits=-1), "phase_bits")]:
        with pytest.raises((ValueError, TypeError), match=key):
            Optics4fConfig(**bad)


def test_seeded_initialisation_is_reproducible():
    a = Frontend4f(small()).kernels()
    b = Frontend4f(small()).kernels()
    c = Frontend4f(small(seed=4)).kernels()
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_gerchberg_saxton_start_puts_light_into_the_tiles():
    gs = Frontend4f(Optics4fConfig()).psf_tiles().detach().sum()
    rnd = Frontend4f(Optics4fConfig(init="random")).psf_tiles().detach().sum()
    assert float(gs) > 5 * float(rnd)


@pytest.mark.parametrize("kw", [dict(), dict(coherent=True), dict(crosstalk=True), dict(mask="complex")])
def test_gradcheck_through_the_whole_frontend(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhysicsWarning)
        fe = Frontend4f(small(slm_pixels=8, init="random", **kw)).double()
    x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    names = [n for n, _ in fe.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in fe.named_parameters())

    def run(*ps):
        return torch.func.functional_call(fe, dict(zip(names, ps)), (x,))

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny ops: intra-op threads only add synchronisation
    try:
        assert torch.autograd.gradcheck(run, params)
    finally:
        torch.set_num_threads(before)


def test_perturb_kernels_makes_a_frozen_device_with_psf_errors():
    fe = Frontend4f(Optics4fConfig(signed=False, num_kernels=4, init="random"))
    device = fe.perturb_kernels(0.1, torch.Generator().manual_seed(7))
    again = fe.perturb_kernels(0.1, torch.Generator().manual_seed(7))
    assert all(not p.requires_grad for p in device.parameters())
    designed, fabricated = fe.psf_tiles().detach(), device.psf_tiles().detach()
    ratio = fabricated / designed
    assert 0.05 < float(ratio.std()) < 0.15 and abs(float(ratio.mean()) - 1) < 0.02
    assert torch.equal(fabricated, again.psf_tiles())
    assert torch.equal(fe.psf_tiles().detach(), designed)  # the design is untouched
    _check_kernels_match_forward(device)
    ct = Frontend4f(Optics4fConfig(signed=False, num_kernels=4, crosstalk=True, init="random")).perturb_kernels(
        0.1, torch.Generator().manual_seed(7))
    assert ct._psf_error_region is not None
    assert ct(torch.rand(1, 1, 28, 28)).shape == (1, 4, 28, 28)


def test_torch_func_ntk_transforms_run_through_the_frontend():
    """The core's NTK engine differentiates with torch.func: vmap(jacrev) and jvp."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhysicsWarning)
        fe = Frontend4f(small(phase_bits=3))
    params = {n: p.detach() for n, p in fe.named_parameters()}
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(8))

    def f(p, xi):
        return torch.func.functional_call(fe, p, (xi[None],)).sum()

    jac = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, x)
    assert jac["phase_raw"].shape == (3, M, M) and float(jac["phase_raw"].abs().sum()) > 0
    tangent = {n: torch.randn_like(p) for n, p in params.items()}
    _, jz = torch.func.jvp(lambda p: torch.func.functional_call(fe, p, (x,)), (params,), (tangent,))
    assert jz.shape == (3, 2, 4, 4)
    # forward-mode agrees with reverse mode
    assert torch.allclose(jz.sum((1, 2, 3)), (jac["phase_raw"] * tangent["phase_raw"]).sum((1, 2)), atol=1e-4)


def test_phase_quantisation_error_model_rounds_the_mask_to_its_levels():
    from onnx_run.fabrication.device import build_error_models, fabricate

    torch.manual_seed(0)
    fe = Frontend4f(small())  # continuous phase design
    x = torch.rand(2, 1, 4, 4)
    design = fe.phase().detach()
    for bits in (2, 4):
        step = 2 * math.pi / 2**bits
        device = fabricate(fe, build_error_models([{"name": "phase-quantisation", "bits": bits}]), seed=0)
        phase = device.frontend.phase().detach()
        on_level = torch.remainder(phase + step / 2, step) - step / 2  # distance to the nearest level
        assert float(on_level.abs().max()) < 1e-4
        assert len(torch.unique(torch.round(phase / step).remainder(2**bits))) == 2**bits
        wrapped = torch.remainder(phase - design + math.pi, 2 * math.pi) - math.pi
        assert float(wrapped.abs().max()) <= step / 2 + 1e-4  # rounded to the nearest level
        assert not torch.allclose(device(x), fe(x), atol=1e-6)
    with pytest.raises(UserError, match="bits: must be >= 1"):
        build_error_models([{"name": "phase-quantisation", "bits": 0}])
    amplitude_only = Frontend4f(small(mask="amplitude"))  # no phase to quantise: one line, not a silent no-op
    with pytest.raises(UserError, match="phase-quantisation|PhaseQuantisation.*no phase levels"):
        fabricate(amplitude_only, build_error_models([{"name": "phase-quantisation"}]), seed=0)


def test_mask_preview_has_y_up_in_millimetres(default_frontend, tmp_path, monkeypatch):
    """The mask preview's axes are physical (mm) with y increasing upwards, and array row i
    (y = (i - N/2) pitch) is drawn at that y."""
    import onnx_run_optics_4f.frontend as module

    saved = {}
    original = module.save_figure
    monkeypatch.setattr(module, "save_figure", lambda fig, path, **kw: (saved.__setitem__(Path(path).name, fig),
                                                                        original(fig, path, **kw)))
    default_frontend.export(tmp_path / "design")
    ax = saved["mask_phase.png"].axes[0]
    bottom, top = ax.get_ylim()
    assert bottom < 0 < top and ax.get_ylabel() == "y (mm)" and ax.get_xlabel() == "x (mm)"
    image = ax.images[0]
    assert image.origin == "lower" and image.get_extent()[2] < image.get_extent()[3]
    assert len(saved["mask_phase.png"].axes) == 2  # the colour bar
