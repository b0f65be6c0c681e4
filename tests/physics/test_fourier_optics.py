"""2f Fourier lens and the 4f system: pitch, energy, inversion, Fourier-plane filtering."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from onnx_run.physics import Grid, PhysicsWarning, convolve2d, fourier_lens


@pytest.fixture(autouse=True)
def _physics_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PhysicsWarning)
        yield


def test_fourier_lens_pitch_energy_and_gaussian_width():
    lam, f, n, dx, w0 = 0.532e-6, 0.05, 128, 8e-6, 60e-6
    grid = Grid(n, dx, lam)
    y, x = grid.coords(dtype=torch.float64)
    field = torch.exp(-(x**2 + y**2) / w0**2).to(torch.complex128)
    out, (g_out,) = fourier_lens(field, grid, f)
    assert g_out.pitch_m == pytest.approx(lam * f / (n * dx))
    e_in = float((field.abs() ** 2).sum()) * dx**2
    e_out = float((out.abs() ** 2).sum()) * g_out.pitch_m**2
    assert e_out == pytest.approx(e_in, rel=1e-10)
    # a Gaussian of waist w0 focuses to a Gaussian of waist lambda f / (pi w0)
    yo, xo = g_out.coords(dtype=torch.float64)
    expected = torch.exp(-(xo**2 + yo**2) / (lam * f / (math.pi * w0)) ** 2)
    got = out.abs() / out.abs().max()
    assert (got - expected).abs().max() < 1e-6


def test_padding_refines_the_fourier_plane_pitch():
    grid = Grid(64, 8e-6, 0.5e-6)
    _, (g1,) = fourier_lens(torch.ones(64, 64, dtype=torch.complex128), grid, 0.1)
    _, (g2,) = fourier_lens(torch.ones(64, 64, dtype=torch.complex128), grid, 0.1, pad_factor=2)
    assert g2.shape == (128, 128) and g2.pitch_m == pytest.approx(g1.pitch_m / 2)


def _asymmetric_object(grid: Grid) -> torch.Tensor:
    y, x = grid.coords(dtype=torch.float64)
    a = torch.exp(-((y - 120e-6) ** 2 + (x + 60e-6) ** 2) / (20e-6) ** 2)
    b = 0.5 * torch.exp(-((y + 40e-6) ** 2 + (x - 150e-6) ** 2) / (12e-6) ** 2)
    return (a + b * torch.exp(1j * x / 30e-6)).to(torch.complex128)


def _uninvert(u: torch.Tensor) -> torch.Tensor:
    """x -> -x on a centred grid: index n -> N - n (mod N)."""
    return torch.roll(torch.flip(u, (-2, -1)), shifts=(1, 1), dims=(-2, -1))


def test_4f_without_mask_images_the_input_inverted():
    lam, f, n, dx = 0.532e-6, 0.05, 128, 8e-6
    grid = Grid(n, dx, lam)
    field = _asymmetric_object(grid)
    mid, (g_mid,) = fourier_lens(field, grid, f)
    out, (g_out,) = fourier_lens(mid, g_mid, f)
    assert g_out.pitch_m == pytest.approx(dx)
    k = 2 * math.pi / lam
    piston = -complex(math.cos(4 * k * f), math.sin(4 * k * f))  # (1 / i)^2 exp(4ikf)
    assert (out - piston * _uninvert(field)).abs().max() < 1e-10
    # inverted, not upright
    assert (out - piston * field).abs().max() > 0.3


def test_4f_mask_equal_to_a_transfer_function_gives_that_convolution():
    lam, f, n, dx = 0.532e-6, 0.05, 128, 8e-6
    grid = Grid(n, dx, lam)
    field = _asymmetric_object(grid)
    gen = torch.Generator().manual_seed(1)
    kernel = torch.randn(5, 5, generator=gen, dtype=torch.complex128)
    mid, (g_mid,) = fourier_lens(field, grid, f)
    # the mask at Fourier-plane position u is the kernel's transfer function at f = u / (lambda f)
    v, u = g_mid.coords(dtype=torch.float64)
    offs = (torch.arange(5, dtype=torch.float64) - 2) * dx
    mask = torch.zeros(n, n, dtype=torch.complex128)
    for i in range(5):
        for j in range(5):
            mask += kernel[i, j] * torch.exp(-2j * math.pi * (offs[i] * v + offs[j] * u) / (lam * f))
    out, _ = fourier_lens(mid * mask, g_mid, f)
    k = 2 * math.pi / lam
    piston = -complex(math.cos(4 * k * f), math.sin(4 * k * f))
    read = _uninvert(out) / piston
    expected = convolve2d(field[None, None], kernel[None, None], mode="same")[0, 0]
    assert (read - expected).abs().max() < 1e-9 * expected.abs().max() + 1e-12
    assert (read - field).abs().max() > 0.1
