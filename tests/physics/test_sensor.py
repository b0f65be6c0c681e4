"""Sensor: the mean is preserved (no Poisson sample added on top of the signal), the variance is
shot + read (+ quantisation), gradients are straight-through, pixel integration conserves power."""

from __future__ import annotations

import pytest
import torch

from onnx_run.physics import Grid, Sensor, integrate_pixels

N = 200_000


def test_noise_off_by_default_is_the_exact_mean():
    s = Sensor(quantum_efficiency=0.6, gain_dn_per_e=2.0, read_noise_e=5.0)
    photons = torch.tensor([0.0, 10.0, 1000.0])
    assert torch.equal(s(photons), 2.0 * 0.6 * photons)


@pytest.mark.parametrize("adc_bits", [0, 12])
def test_noise_preserves_the_mean_and_has_shot_plus_read_variance(adc_bits):
    s = Sensor(quantum_efficiency=0.8, gain_dn_per_e=2.0, read_noise_e=3.0, adc_bits=adc_bits, noise=True)
    gen = torch.Generator().manual_seed(0)
    photons = torch.full((N,), 50.0, dtype=torch.float64)
    out = s(photons, generator=gen)
    mean_expected = 2.0 * 0.8 * 50.0  # 80 DN; a Poisson sample added on top would give 160
    var_expected = s.expected_variance(50.0)  # 4 (40 + 9) = 196 (+1/12 with the ADC)
    assert float(out.mean()) == pytest.approx(mean_expected, abs=5 * (var_expected / N) ** 0.5)
    assert float(out.var()) == pytest.approx(var_expected, rel=0.02)
    if adc_bits:
        assert torch.equal(out, out.round())


def test_shot_noise_alone_is_poisson():
    s = Sensor(noise=True)
    gen = torch.Generator().manual_seed(1)
    out = s(torch.full((N,), 7.0, dtype=torch.float64), generator=gen)
    assert float(out.mean()) == pytest.approx(7.0, abs=0.03)
    assert float(out.var()) == pytest.approx(7.0, rel=0.02)
    assert torch.equal(out, out.round())  # whole electrons


def test_seeded_noise_is_reproducible():
    s = Sensor(read_noise_e=2.0, noise=True)
    x = torch.full((100,), 20.0)
    a = s(x, generator=torch.Generator().manual_seed(3))
    b = s(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, s(x, generator=torch.Generator().manual_seed(4)))


def test_straight_through_gradient_and_clipping():
    s = Sensor(quantum_efficiency=0.5, gain_dn_per_e=3.0, read_noise_e=1.0, adc_bits=8, noise=True)
    photons = torch.tensor([10.0, 50.0, 1000.0], requires_grad=True)  # the last saturates 255 DN
    out = s(photons, generator=torch.Generator().manual_seed(0))
    out.sum().backward()
    assert torch.allclose(photons.grad, torch.tensor([1.5, 1.5, 0.0]))
    assert float(out[2].detach()) == 255.0


def test_full_well_saturates():
    s = Sensor(full_well_e=100.0)
    assert torch.equal(s(torch.tensor([50.0, 500.0])), torch.tensor([50.0, 100.0]))


def test_pixel_integration_conserves_power_and_bins():
    grid = Grid(12, 1e-6, 500e-9)
    gen = torch.Generator().manual_seed(0)
    irr = torch.rand(12, 12, generator=gen, dtype=torch.float64)
    binned = integrate_pixels(irr, grid, 3e-6, 4)  # 3 x 3 binning of 1 um cells
    expected = irr.reshape(4, 3, 4, 3).sum((1, 3)) * 1e-12
    assert torch.allclose(binned, expected, rtol=1e-12)
    odd = integrate_pixels(irr, grid, 2.5e-6, 8)  # non-integer pitch, sensor larger than the grid
    assert float(odd.sum()) == pytest.approx(float(irr.sum()) * 1e-12, rel=1e-12)
