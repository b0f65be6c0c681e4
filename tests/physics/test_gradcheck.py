"""torch.autograd.gradcheck (float64) through every differentiable physics operation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd import gradcheck

from onnx_run.physics import (Grid, Sensor, apply_transfer_function, bounded, constrained_phase, convolve2d,
                              fourier_lens, incoherent_conv, integrate_pixels, propagate, rayleigh_sommerfeld,
                              resample_mask, thin_lens, transfer_function)

GEN = torch.Generator().manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """gradcheck runs thousands of tiny ops; on a busy 2-core machine intra-op threads only add
    synchronisation (one case went from 3 s to 57 s), so use one thread here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def crand(*shape):
    return torch.randn(*shape, generator=GEN, dtype=torch.complex128, requires_grad=True)


def rand(*shape):
    return torch.rand(*shape, generator=GEN, dtype=torch.float64, requires_grad=True)


def test_angular_spectrum_and_fresnel():
    grid = Grid(8, 2e-6, 0.5e-6)
    field = crand(2, 8, 8)
    assert gradcheck(lambda u: propagate(u, grid, 40e-6), (field,))
    assert gradcheck(lambda u: propagate(u, grid, -40e-6, pad_factor=1.5), (field,))
    assert gradcheck(lambda u: propagate(u, grid, 40e-6, method="fresnel"), (field,))


def test_multi_wavelength_broadcast_field():
    grid = Grid(6, 2e-6, (0.6e-6, 0.45e-6))
    field = crand(1, 1, 6, 6)  # L = 1 broadcast against two wavelengths
    assert gradcheck(lambda u: propagate(u, grid, 30e-6), (field,))


def test_learnable_transfer_function():
    grid = Grid(6, 2e-6, 0.5e-6)
    tf = transfer_function(grid, 20e-6, dtype=torch.complex128).clone().requires_grad_(True)
    field = crand(6, 6)
    assert gradcheck(apply_transfer_function, (field, tf))


def test_lens_and_fourier_lens():
    grid = Grid(8, 4e-6, 0.5e-6)
    lens = thin_lens(grid, 2e-3, dtype=torch.complex128)
    field = crand(8, 8)
    assert gradcheck(lambda u: propagate(u * lens, grid, 100e-6), (field,))
    assert gradcheck(lambda u: fourier_lens(u, grid, 2e-3, pad_factor=1.5)[0], (field,))


def test_rayleigh_sommerfeld():
    grid = Grid(4, 1e-6, 0.5e-6)
    assert gradcheck(lambda u: rayleigh_sommerfeld(u, grid, 20e-6), (crand(4, 4),))


def test_mask_resampling_and_phase_parametrisations():
    grid = Grid(7, 1e-6, 0.5e-6)
    assert gradcheck(lambda m: resample_mask(m, 1.7e-6, grid, fill=1.0), (rand(4, 5),))
    assert gradcheck(lambda m: resample_mask(m, 0.6e-6, grid), (crand(9, 9),))
    raw = torch.randn(5, 5, generator=GEN, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda r: torch.polar(torch.ones_like(r), constrained_phase(r, phase_range=1.5 * math.pi)), (raw,))
    assert gradcheck(lambda r: bounded(r, 0.1, 0.9), (raw,))


def test_incoherent_and_coherent_convolution():
    x, psf = rand(2, 2, 6, 5), rand(3, 2, 3, 4)
    assert gradcheck(lambda a, b: incoherent_conv(a, b, method="direct"), (x, psf))
    assert gradcheck(lambda a, b: incoherent_conv(a, b, method="fft", mode="full"), (x, psf))
    assert gradcheck(lambda a, b: convolve2d(a, b, method="direct"), (crand(1, 1, 5, 5), crand(2, 1, 3, 3)))
    assert gradcheck(lambda a, b: convolve2d(a, b, method="fft"), (rand(1, 1, 5, 5), crand(2, 1, 3, 3)))


def test_sensor_without_noise_and_pixel_integration():
    s = Sensor(quantum_efficiency=0.7, gain_dn_per_e=1.5, full_well_e=1e3)
    assert gradcheck(s, (rand(4, 4) * 10,))
    grid = Grid(6, 1e-6, 0.5e-6)
    assert gradcheck(lambda i: integrate_pixels(i, grid, 1.6e-6, 4), (rand(6, 6),))


def test_torch_func_transforms_work_through_propagation():
    """The NTK engine uses torch.func (jvp, vmap of jacrev): plain autograd ops support both."""
    grid = Grid(8, 2e-6, 0.5e-6)
    field = torch.randn(3, 8, 8, generator=GEN, dtype=torch.complex128)
    tangent = torch.randn(3, 8, 8, generator=GEN, dtype=torch.complex128)
    out, jvp_out = torch.func.jvp(lambda u: propagate(u, grid, 40e-6), (field,), (tangent,))
    assert torch.allclose(jvp_out, propagate(tangent, grid, 40e-6))  # linear: J t = f(t)
    phases = torch.randn(3, 8, 8, generator=GEN, dtype=torch.float64)  # jacrev wants real inputs

    def power_after(phase):
        return (propagate(torch.polar(torch.ones_like(phase), phase), grid, 40e-6).abs() ** 2)[2:6, 2:6].sum()

    jac = torch.func.vmap(torch.func.jacrev(power_after))(phases)
    assert jac.shape == phases.shape
    phases.requires_grad_(True)
    power_after(phases[1]).backward()
    assert torch.allclose(jac[1], phases.grad[1])
