"""The PSF of a sub-aperture: kept-band angular spectrum vs the core and vs a direct Rayleigh-Sommerfeld sum."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from onnx_run.physics.grid import Grid
from onnx_run.physics.propagation import angular_spectrum, transfer_function
from onnx_run.physics.validity import PhysicsWarning

from onnx_run_optics_metasurface.optics import TileGeometry, lens_phase, operator, tile_psfs


def _geom(**kw) -> TileGeometry:
    base = dict(pillars=48, period_m=293e-9, wavelengths_m=(532e-9,), distance_m=40e-6, kernel_px=(5, 5),
                sensor_pitch_m=2.5e-6)
    base.update(kw)
    return TileGeometry(**base)


def test_kept_band_field_equals_core_angular_spectrum_on_the_grid():
    geom = _geom(distance_m=60e-6)
    op = operator(geom, 0, "cpu", torch.complex128)
    gen = torch.Generator().manual_seed(0)
    t = torch.polar(torch.ones(48, 48, dtype=torch.float64), torch.rand(48, 48, generator=gen, dtype=torch.float64) * 6)
    grid = Grid((48, 48), 293e-9, 532e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhysicsWarning)
        core = angular_spectrum(t, grid, 60e-6)
        tf = transfer_function(grid, 60e-6, dtype=torch.complex128)
    # evaluate the kept-band sum at the grid's own samples
    rows = torch.nonzero((tf.abs() > 0).any(1)).reshape(-1)
    k = torch.fft.fftfreq(op.padded, d=1.0 / op.padded, dtype=torch.float64)[rows]
    pos = torch.arange(48, dtype=torch.float64) * 293e-9
    g = torch.exp(2j * math.pi * pos[:, None] * k[None, :] / (op.padded * 293e-9)) / op.padded
    mine = g @ op.spectrum(t) @ g.transpose(0, 1)
    assert op.kept[0] < op.padded  # the band limit is active: the shortcut matters
    assert torch.allclose(mine, core, atol=1e-10 * float(core.abs().max()))


def _direct_psf(t: np.ndarray, geom: TileGeometry, nodes: int = 10) -> np.ndarray:
    """First Rayleigh-Sommerfeld integral summed directly over the pillars, |U|^2 integrated over
    each pixel by Gauss-Legendre quadrature, normalised like ``tile_psfs``."""
    n, a, lam, z = geom.pillars, geom.period_m, geom.wavelengths_m[0], geom.distance_m
    kh, p = geom.kernel_px[0], geom.sensor_pitch_m
    xi = np.arange(n) * a
    ys, xs = (v.reshape(-1) for v in np.meshgrid(xi, xi, indexing="ij"))
    g, wts = np.polynomial.legendre.leggauss(nodes)
    c = (n - 1) * a / 2
    pts = (c + (np.arange(kh) - (kh - 1) / 2)[:, None] * p + g[None, :] * p / 2).reshape(-1)
    yo, xo = (v.reshape(-1) for v in np.meshgrid(pts, pts, indexing="ij"))
    k = 2 * np.pi / lam
    field = np.zeros(yo.size, complex)
    for s in range(0, yo.size, 256):
        r2 = (yo[s:s + 256, None] - ys[None]) ** 2 + (xo[s:s + 256, None] - xs[None]) ** 2 + z * z
        r = np.sqrt(r2)
        field[s:s + 256] = (z / (lam * r2) * (1 / (k * r) - 1j) * np.exp(1j * k * r) * a * a) @ t.reshape(-1)
    inten = (np.abs(field) ** 2).reshape(kh, nodes, kh, nodes)
    mean = np.einsum("injm,n,m->ij", inten, wts / 2, wts / 2)
    return mean * p * p / (n * a) ** 2


def test_psf_matches_direct_rayleigh_sommerfeld_sum():
    geom = _geom()
    rng = np.random.default_rng(1)
    phase = lens_phase(geom, 0) + 0.8 * rng.standard_normal((48, 48))  # a lens with scattering
    t = np.exp(1j * phase)
    mine = tile_psfs(torch.as_tensor(t)[None, None], geom)[0, 0].numpy()
    ref = _direct_psf(t, geom)
    assert np.linalg.norm(mine - ref) / np.linalg.norm(ref) < 0.01
    # energy: what the pixels hold never exceeds the light through the aperture
    assert 0.2 < mine.sum() <= 1.0


def test_pixel_integration_is_exact_for_the_band_limited_field():
    geom = _geom(distance_m=60e-6, kernel_px=(4, 4), sensor_pitch_m=3e-6, sensor_shift_m=(0.7e-6, -1.3e-6))
    op = operator(geom, 0, "cpu", torch.complex128)
    gen = torch.Generator().manual_seed(3)
    t = torch.polar(torch.ones(48, 48, dtype=torch.float64), torch.rand(48, 48, generator=gen, dtype=torch.float64) * 6)
    exact = op.pixel_power(t)
    # brute force: the trigonometric interpolant at 300 x 300 midpoints per pixel
    tf = transfer_function(Grid((48, 48), 293e-9, 532e-9), 60e-6, dtype=torch.complex128)
    rows = torch.nonzero((tf.abs() > 0).any(1)).reshape(-1)
    k = torch.fft.fftfreq(op.padded, d=1.0 / op.padded, dtype=torch.float64)[rows]
    s, period, centre = 300, op.padded * 293e-9, 47 * 293e-9 / 2

    def pts(shift):
        pix = (torch.arange(4, dtype=torch.float64) - 1.5) * 3e-6
        sub = ((torch.arange(s, dtype=torch.float64) + 0.5) / s - 0.5) * 3e-6
        return (centre + shift + pix[:, None] + sub[None, :]).reshape(-1)

    gy = torch.exp(2j * math.pi * pts(0.7e-6)[:, None] * k[None, :] / period) / op.padded
    gx = torch.exp(2j * math.pi * pts(-1.3e-6)[:, None] * k[None, :] / period) / op.padded
    u = gy @ op.spectrum(t) @ gx.transpose(0, 1)
    brute = (u.abs() ** 2).reshape(4, s, 4, s).mean((1, 3))
    assert torch.allclose(exact, brute, rtol=1e-4, atol=1e-6 * float(brute.max()))


def test_lens_focuses_on_the_tile_centre_and_defocus_spreads_it():
    geom = _geom(pillars=96, distance_m=200e-6, kernel_px=(7, 7), sensor_pitch_m=3e-6)
    t = torch.as_tensor(np.exp(1j * lens_phase(geom, 0)))[None, None]
    focused = tile_psfs(t, geom)[0, 0]
    assert int(focused.argmax()) == 24  # the centre pixel of 7 x 7
    defocused = tile_psfs(t, _geom(pillars=96, distance_m=260e-6, kernel_px=(7, 7), sensor_pitch_m=3e-6))[0, 0]
    assert float(defocused[3, 3]) < 0.7 * float(focused[3, 3])
