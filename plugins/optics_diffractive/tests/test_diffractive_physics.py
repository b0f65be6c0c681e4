"""Physics of the stack: free space, quantisation, gradients, energy bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from onnx_run.physics import Grid, angular_spectrum



def test_zero_phase_layer_is_free_space(make_stack, images):
    """One layer of zero phase: the field on the sensor is the input propagated by the two gaps
    with the library's angular spectrum (the layer only crops to its window)."""
    f = make_stack(num_layers=1, init="zero", distances_mm=[4.0, 5.0])
    g = f.grid
    u0 = f.input_field(images)
    expected = angular_spectrum(angular_spectrum(u0, g, 4e-3), g, 5e-3)
    got = f.output_field(images)
    assert torch.allclose(got, expected, atol=1e-5 * expected.abs().max())
    feats = f(images)
    direct = f.read_regions(expected.abs().square().sum(1)) * f.gain
    assert torch.allclose(feats, direct, rtol=1e-4, atol=1e-7)


def test_zero_phase_layer_matches_one_long_gap_in_a_wide_window(make_stack):
    """In a window much wider than the beam, a flat layer is invisible: z1 then z2 = z1 + z2."""
    f = make_stack(num_layers=1, init="zero", num_neurons=64, distances_mm=[3.0, 3.0], object_size_neurons=12,
                   num_kernels=1, kernel_size=4)
    x = torch.zeros(1, 1, 12, 12)
    x[..., 4:8, 4:8] = 1.0
    u0 = f.input_field(x)
    one = angular_spectrum(u0, f.grid, 6e-3)
    two = f.output_field(x)
    err = (two - one).abs().square().sum() / one.abs().square().sum()
    assert err < 1e-3


def test_phase_quantisation_levels_are_exact(make_stack):
    f = make_stack(phase_bits=2)
    phases = f.phases().detach().double()
    levels = torch.tensor([0, 0.5, 1.0, 1.5], dtype=torch.float64) * math.pi
    d = (phases.unsqueeze(-1) - levels.to(torch.float32).double()).abs().min(-1).values
    assert float(d.max()) == 0.0
    assert len(torch.unique(phases)) == 4
    g = make_stack(phase_bits=3, phase_range_pi=1.5)  # limited range: 8 levels including both ends
    lv = torch.arange(8, dtype=torch.float64) * 1.5 * math.pi / 7
    p = g.phases().detach().double()
    assert float((p.unsqueeze(-1) - lv).abs().min(-1).values.max()) < 1e-6
    assert float(p.max()) <= 1.5 * math.pi + 1e-6


def test_realise_rounds_to_bit_depth_exactly(make_stack, images):
    f = make_stack(realise_phase_bits=3)
    real, report = f.realise(progress=False)
    levels = torch.arange(8, dtype=torch.float64) * 2 * math.pi / 8
    p = real.phases().detach().double()
    assert float((p.unsqueeze(-1) - levels).abs().min(-1).values.max()) < 1e-6
    assert not report["exact"] and 0 < report["max_phase_change_rad"] <= math.pi / 8 + 1e-5
    # same bits as training: realisation is exact and changes nothing
    q = make_stack(phase_bits=3)
    rq, rep = q.realise(progress=False)
    assert rep["exact"]
    assert torch.allclose(rq(images), q(images))
    # the pipeline stores state dicts: loading one gives the same realised stack
    again = f.load_realised(real.state_dict())
    assert torch.equal(again(images), real(images))


@pytest.mark.filterwarnings("ignore:pitch .* is below lambda/2")  # the R channel at 400 um
@pytest.mark.parametrize("kw", [{}, {"phase_bits": 2}, {"modulation": "complex"}, {"channels": 3}])
def test_gradients_reach_every_layer(make_stack, kw):
    f = make_stack(**kw)
    x = torch.rand(2, f.in_channels, 12, 12)
    target = torch.rand(2, *f.feature_shape())
    ((f(x) - target) ** 2).mean().backward()
    grad = f.phase_raw.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert all(float(grad[l].abs().max()) > 0 for l in range(grad.shape[0]))
    if kw.get("modulation") == "complex":
        assert float(f.amplitude_raw.grad.abs().max()) > 0


def test_phase_gradient_matches_finite_differences(make_stack):
    f = make_stack(num_neurons=8, object_size_neurons=4, input_size_px=4, num_kernels=1, kernel_size=2, num_layers=2)
    x = torch.rand(1, 1, 4, 4)

    def fn(raw):
        return torch.func.functional_call(f, {"phase_raw": raw}, (x,)).sum()

    raw = f.phase_raw.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(raw), raw)
    eps = 1e-2
    for idx in [(0, 3, 3), (1, 4, 2), (1, 2, 5)]:
        r1, r2 = raw.detach().clone(), raw.detach().clone()
        r1[idx] += eps
        r2[idx] -= eps
        fd = (fn(r1) - fn(r2)) / (2 * eps)
        assert abs(float(fd) - float(g[idx])) <= 2e-2 * abs(float(g[idx])) + 1e-5


def test_energy_bookkeeping_phase_only(make_stack, images):
    f = make_stack(num_layers=3)
    b = f.power_budget(images)
    lost = sum(b["filtered"]) + sum(b["escaped"]) + sum(b["absorbed"])
    assert b["input"] == pytest.approx(lost + b["output"], rel=1e-4)
    assert max(abs(a) for a in b["absorbed"]) < 1e-4 * b["input"]  # phase-only layers conserve energy
    assert 0 < b["output"] < b["input"]
    assert float(f(images).detach().sum()) / f.gain == pytest.approx(b["readout"], rel=1e-4)
    assert b["readout"] <= b["output"] * (1 + 1e-6)


def test_complex_layers_absorb(make_stack, images):
    f = make_stack(modulation="complex", amplitude_min=0.2)
    with torch.no_grad():
        f.amplitude_raw.normal_()
    b = f.power_budget(images)
    assert all(a > 0.01 * b["input"] for a in b["absorbed"])
    lost = sum(b["filtered"]) + sum(b["escaped"]) + sum(b["absorbed"])
    assert b["input"] == pytest.approx(lost + b["output"], rel=1e-4)


def test_escaped_light_matches_a_wider_window(make_stack, images):
    """What the budget calls 'escaped' is the light a 4x wider window sees outside the layer."""
    f = make_stack(num_layers=1, band_limit=False, distances_mm=[3.0, 3.0])
    b = f.power_budget(images)
    u = f.input_field(images)
    n = u.shape[-1]
    big = torch.nn.functional.pad(u, (n + n // 2, n + n // 2, n + n // 2, n + n // 2))
    gbig = Grid(big.shape[-1], f.grid.pitch_m, f.grid.wavelengths_m)
    out = angular_spectrum(big, gbig, 3e-3, pad_factor=2.0, band_limit=False)
    inside = out[..., n + n // 2: n + n // 2 + n, n + n // 2: n + n // 2 + n]
    total, kept = float(out.abs().square().sum()), float(inside.abs().square().sum())
    assert b["escaped"][0] == pytest.approx(total - kept, rel=0.02)
    assert b["input"] - b["filtered"][0] == pytest.approx(total, rel=5e-3)


@pytest.mark.filterwarnings("ignore:pitch .* is below lambda/2")
def test_three_wavelengths_see_scaled_phases(make_stack):
    f = make_stack(channels=3)
    t = f.transmissions().detach()
    phi = f.phases().detach()
    assert t.shape[1] == 3
    # the G channel carries the design phase, R less (longer wavelength), B more
    ang = torch.angle(t[:, 1]) - phi
    assert float(((ang + math.pi) % (2 * math.pi) - math.pi).abs().max()) < 1e-4
    assert f(torch.rand(2, 3, 12, 12)).shape == (2, 4, 3, 3)
    assert f.kernels().shape == (4, 3, 3, 3)
