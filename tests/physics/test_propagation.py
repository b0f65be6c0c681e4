"""Free-space propagation against closed forms: Fresnel integrals, Airy zero, Parseval,
reversibility, linear (not circular) convolution, the band limit, Rayleigh-Sommerfeld."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import fresnel as fresnel_integrals

from onnx_run.physics import (Grid, PhysicsWarning, centred_coords, circular_aperture, clear_cache,
                              propagate, propagation_report, rayleigh_sommerfeld, square_aperture,
                              thin_lens, transfer_function)


@pytest.fixture(autouse=True)
def _physics_warnings_are_errors():
    """Every test here stays in the valid range unless it says otherwise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PhysicsWarning)
        yield


def gaussian(grid: Grid, waist_m: float, centre_m=(0.0, 0.0)) -> torch.Tensor:
    y, x = grid.coords(dtype=torch.float64)
    return torch.exp(-((y - centre_m[0]) ** 2 + (x - centre_m[1]) ** 2) / waist_m**2).to(torch.complex128)


def energy(u: torch.Tensor) -> float:
    return float((u.abs() ** 2).sum())


def square_fresnel_analytic(x: np.ndarray, width: float, lam: float, z: float) -> np.ndarray:
    """Intensity of a unit plane wave through a square of side ``width`` at distance z (paraxial)."""
    s = math.sqrt(2 / (lam * z))

    def one_axis(v: np.ndarray) -> np.ndarray:
        s1, c1 = fresnel_integrals(s * (-width / 2 - v))
        s2, c2 = fresnel_integrals(s * (width / 2 - v))
        return (c2 - c1) + 1j * (s2 - s1)

    a = one_axis(x)
    return np.abs(np.outer(a, a) / 2j) ** 2


@pytest.mark.parametrize("method", ["angular_spectrum", "fresnel"])
def test_square_aperture_matches_fresnel_integrals(method):
    lam, n, dx, width, z = 0.5e-6, 256, 8e-6, 1e-3, 0.1  # Fresnel number 5
    grid = Grid(n, dx, lam)
    field = square_aperture(grid, width, dtype=torch.float64).to(torch.complex128)
    intensity = (propagate(field, grid, z, method=method).abs() ** 2).numpy()
    x = centred_coords(n, dx)
    expected = square_fresnel_analytic(x, width, lam, z)
    lobe = np.abs(x) <= 0.4 * width
    region = np.ix_(lobe, lobe)
    rel = np.abs(intensity[region] - expected[region]) / expected[region]
    assert rel.max() <= 0.02, f"max relative intensity error {rel.max():.4f}"


def test_lens_focus_first_airy_zero():
    lam, f, n, diameter = 0.5e-6, 0.1, 512, 1e-3
    dx = math.sqrt(lam * f / n)  # critical sampling: lens chirp and propagation both sampled
    grid = Grid(n, dx, lam)
    field = circular_aperture(grid, diameter, dtype=torch.float64) * thin_lens(grid, f, dtype=torch.complex128)
    intensity = (propagate(field, grid, f).abs() ** 2).numpy()
    c = n // 2
    # the focus is on axis and the brightest sample
    assert np.unravel_index(intensity.argmax(), intensity.shape) == (c, c)
    profile = intensity[c, c:]
    minima = np.flatnonzero((profile[1:-1] < profile[:-2]) & (profile[1:-1] < profile[2:])) + 1
    first_zero = minima[0] * dx
    assert abs(first_zero - 1.22 * lam * f / diameter) <= dx
    # and it is dark there: below 2% of the peak
    assert profile[minima[0]] < 0.02 * profile[0]


def test_parseval_periodic_propagation_is_unitary():
    grid = Grid(64, 4e-6, 0.6e-6)
    gen = torch.Generator().manual_seed(0)
    field = torch.randn(3, 64, 64, generator=gen, dtype=torch.complex128)
    out = propagate(field, grid, 1e-3, pad_factor=1, band_limit=False)
    assert energy(out) == pytest.approx(energy(field), rel=1e-10)
    assert (out - field).abs().max() > 0.1


def test_energy_conserved_for_a_beam_inside_the_padded_window():
    grid = Grid(128, 4e-6, 0.6e-6)
    field = gaussian(grid, 40e-6)
    out = propagate(field, grid, 5e-3)
    assert energy(out) == pytest.approx(energy(field), rel=1e-6)
    # it did diffract (the test would pass trivially for z = 0)
    assert out.abs().max() < 0.9 * field.abs().max()


@pytest.mark.parametrize("pad, tol", [(1, 1e-10), (2, 1e-6)])
def test_forward_then_backward_returns_the_field(pad, tol):
    grid = Grid(128, 4e-6, 0.6e-6)
    field = gaussian(grid, 30e-6) * torch.exp(1j * torch.linspace(0, 3, 128, dtype=torch.float64))
    there = propagate(field, grid, 4e-3, pad_factor=pad)
    back = propagate(there, grid, -4e-3, pad_factor=pad)
    assert (back - field).abs().max() < tol
    assert (there - field).abs().max() > 0.1


def test_padding_prevents_wrap_around():
    lam, n, dx, z = 0.532e-6, 256, 8e-6, 0.02
    grid = Grid(n, dx, lam)
    half = n * dx / 2
    field = gaussian(grid, 16e-6, centre_m=(0.0, 0.95 * half))  # at the right edge
    x = centred_coords(n, dx)
    far_left = torch.as_tensor(x < -half / 2)

    def left_fraction(pad: float) -> float:
        out = propagate(field, grid, z, pad_factor=pad)
        return float((out.abs() ** 2)[:, far_left].sum()) / energy(field)

    assert left_fraction(2) < 1e-8
    assert left_fraction(1) > 1e-3  # a circular convolution wraps light around


def test_band_limit_reference_numbers():
    """532 nm, 8 um, N = 256, 2x padding: inactive at 5 cm, ~70% of the band removed at 20 cm."""
    grid = Grid(256, 8e-6, 532e-9)

    def removed(z: float) -> float:
        tf = transfer_function(grid, z, dtype=torch.complex128)
        return float((tf[0].abs() == 0).double().mean())

    assert removed(0.05) == 0.0
    with pytest.warns(PhysicsWarning, match=r"removes 69% of the band"):
        clear_cache()
        frac = removed(0.20)
    assert 0.65 <= frac <= 0.75
    (report,) = propagation_report(grid, 0.20)
    assert report.band_removed_fraction == pytest.approx(frac)
    assert report.critical_distance_m == pytest.approx(256 * 8e-6**2 / 532e-9)  # ~3.1 cm
    assert report.critical_distance_m == pytest.approx(0.0308, abs=5e-4)


def test_rayleigh_sommerfeld_direct_integration_matches_angular_spectrum():
    lam, n, dx, z = 0.5e-6, 32, 1e-6, 100e-6  # z above the critical distance 64 um
    grid = Grid(n, dx, lam)
    field = gaussian(grid, 4e-6)
    direct = rayleigh_sommerfeld(field, grid, z)
    spectral = propagate(field, grid, z)
    err = float((direct - spectral).abs().norm() / direct.abs().norm())
    assert err < 1e-3
    assert float((spectral - field).abs().norm() / field.abs().norm()) > 0.3


def test_evanescent_waves_decay_and_propagating_waves_advance():
    lam, n = 1e-6, 64
    dx = lam / 4
    grid = Grid((1, n), dx, lam)
    x = torch.as_tensor(centred_coords(n, dx))
    f_prop, f_ev = 8 / (n * dx), 24 / (n * dx)  # 0.5 / lambda and 1.5 / lambda
    field = (torch.exp(2j * math.pi * f_prop * x) + torch.exp(2j * math.pi * f_ev * x))[None].to(torch.complex128)
    z = lam
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = propagate(field, grid, z, pad_factor=1, band_limit=False)
    assert any("below lambda/2" in str(w.message) for w in caught)
    spec = torch.fft.fft(out[0]) / n
    k_prop = 2 * math.pi * math.sqrt(1 / lam**2 - f_prop**2)
    kappa = 2 * math.pi * math.sqrt(f_ev**2 - 1 / lam**2)
    # FFT bins of x-centred samples carry the phase of the sample at index 0 (x = -n dx / 2)
    ph0 = lambda f: complex(np.exp(2j * math.pi * f * (-n // 2) * dx))  # noqa: E731
    assert complex(spec[8]) == pytest.approx(ph0(f_prop) * complex(np.exp(1j * k_prop * z)), abs=1e-12)
    assert complex(spec[24]) == pytest.approx(ph0(f_ev) * math.exp(-kappa * z), abs=1e-12)


def test_transfer_functions_are_cached_per_configuration():
    grid = Grid(64, 4e-6, 0.6e-6)
    a = transfer_function(grid, 1e-3)
    assert transfer_function(grid, 1e-3) is a
    assert transfer_function(grid, 2e-3) is not a
    assert transfer_function(grid, 1e-3, dtype=torch.complex128).dtype == torch.complex128


def test_multi_wavelength_fields_propagate_each_wavelength():
    lams = (635e-9, 532e-9, 450e-9)
    grid = Grid(64, 4e-6, lams)
    field = gaussian(grid, 20e-6)[None, None, None].expand(2, 3, 1, 64, 64)  # (B, L, C, H, W)
    out = propagate(field, grid, 3e-3)
    for i, lam in enumerate(lams):
        single = propagate(field[:, i], Grid(64, 4e-6, lam), 3e-3)
        assert torch.allclose(out[:, i], single, atol=1e-12)
    # longer wavelengths spread more: lower peak
    peaks = out[0, :, 0].abs().amax(dim=(-1, -2))
    assert peaks[0] < peaks[1] < peaks[2]
