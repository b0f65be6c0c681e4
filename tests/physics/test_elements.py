"""Lenses, apertures, pixelated masks resampled onto the simulation grid, height maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from onnx_run.physics import (Grid, PhysicsWarning, circular_aperture, height_to_phase, lens_report,
                              phase_mask, phase_to_height, rect_aperture, resample_mask, square_aperture,
                              thin_lens)


def test_thin_lens_phase_and_sign():
    grid = Grid(64, 5e-6, (633e-9, 450e-9))
    lens = thin_lens(grid, 0.05, dtype=torch.complex128)
    assert lens.shape == (2, 1, 64, 64)
    y, x = grid.coords(dtype=torch.float64)
    r2 = (x**2 + y**2)[10, 20]
    for i, lam in enumerate((633e-9, 450e-9)):
        assert complex(lens[i, 0, 10, 20]) == pytest.approx(complex(np.exp(-1j * math.pi * float(r2) / (lam * 0.05))))
    assert torch.allclose(lens.abs(), torch.ones(()).double())


def test_undersampled_lens_warns_with_the_numbers():
    grid = Grid(256, 8e-6, 532e-9)  # L = 2.048 mm: needs f >= dx L / lambda = 30.8 mm
    with pytest.warns(PhysicsWarning, match=r"pitch 8e-06 m > lambda f / L = 2.598e-06 m"):
        thin_lens(grid, 0.01)
    (report,) = lens_report(grid, 0.05)
    assert report.ok and report.max_pitch_m == pytest.approx(532e-9 * 0.05 / 2.048e-3)


def test_apertures_have_the_right_area():
    grid = Grid(200, 10e-6, 500e-9)
    sq = square_aperture(grid, 0.777e-3, dtype=torch.float64)
    assert float(sq.sum()) * 1e-10 == pytest.approx(0.777e-3**2, rel=1e-12)  # exact edge coverage
    rect = rect_aperture(grid, (0.5e-3, 1.2e-3), center_m=(0.2e-3, -0.1e-3), dtype=torch.float64)
    assert float(rect.sum()) * 1e-10 == pytest.approx(0.6e-6, rel=1e-12)
    circ = circular_aperture(grid, 1.3e-3, dtype=torch.float64)
    assert float(circ.sum()) * 1e-10 == pytest.approx(math.pi * 0.65e-3**2, rel=2e-3)
    assert float(circ[100, 100]) == 1.0 and float(circ[0, 0]) == 0.0


def test_resample_integer_upsampling_replicates_pixels():
    grid = Grid(12, 1e-6, 500e-9)
    mask = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    out = resample_mask(mask, 3e-6, grid)
    # centred conventions: mask pixel i spans (i - 2) * 3 um +- 1.5 um, grid sample n spans
    # (n - 6) um +- 0.5 um: samples 0-1 see pixel 0, 2-4 pixel 1, ..., 8-10 pixel 3, 11 nothing
    expected = mask.repeat_interleave(3, 0).repeat_interleave(3, 1)
    assert torch.allclose(out[:11, :11], expected[1:, 1:], atol=1e-12)
    assert float(out[11].abs().max()) < 1e-12 and float(out[:, 11].abs().max()) < 1e-12


def test_resample_downsampling_averages_and_preserves_the_integral():
    grid = Grid(10, 4e-6, 500e-9)
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(13, 13, generator=gen, dtype=torch.float64)
    out = resample_mask(mask, 1.7e-6, grid)  # non-integer ratio, mask inside the grid
    assert float(out.sum()) * 16 == pytest.approx(float(mask.sum()) * 1.7**2, rel=1e-12)
    assert float(out.max()) <= float(mask.max())


def test_resample_fill_outside_and_complex_masks():
    grid = Grid(16, 1e-6, 500e-9)
    phase = torch.full((4, 4), 0.7, dtype=torch.float64)
    t = resample_mask(phase_mask(phase), 2e-6, grid, fill=1.0)
    assert t.dtype == torch.complex128
    assert complex(t[8, 8]) == pytest.approx(complex(np.exp(0.7j)))
    assert complex(t[0, 0]) == pytest.approx(1.0)


def test_height_to_phase_full_wave():
    lam, n = 532e-9, 1.46
    h = torch.tensor([[lam / (n - 1)]], dtype=torch.float64)
    assert float(height_to_phase(h, lam, n)) == pytest.approx(2 * math.pi)
    multi = height_to_phase(h, (635e-9, 450e-9), (1.457, 1.465))
    assert multi.shape == (2, 1, 1, 1)
    assert float(multi[1]) > float(multi[0])  # shorter wavelength, more phase
    assert float(phase_to_height(torch.tensor(2 * math.pi), lam, n)) == pytest.approx(lam / (n - 1))
