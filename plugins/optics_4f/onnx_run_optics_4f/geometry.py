"""Geometry of the 4f system: field of view, tile layout and the sampling chain.

Everything here is plain numbers (no model), so ``onnx-run estimate`` can ask for a layout
without building a frontend. Frames: sensor positions are in the *read-out frame*: the 4f
system images the input inverted and the read-out reverses rows and columns, so the coherent
impulse response in that frame is the inverse Fourier transform of the mask (docs/physics.md).
"""

from __future__ import annotations

import math
import warnings

import attrs
import scipy.fft
import numpy as np

from onnx_run.components import Layout
from onnx_run.errors import UserError
from onnx_run.physics import PhysicsWarning

from onnx_run_optics_4f.config import Optics4fConfig


def _good_even(n: int) -> int:
    """Smallest even fast FFT length >= n."""
    m = scipy.fft.next_fast_len(n)
    while m % 2:
        m = scipy.fft.next_fast_len(m + 1)
    return m


@attrs.frozen
class Geometry:
    """Derived numbers of a 4f configuration (SI units)."""

    wavelengths_m: tuple[float, ...]
    design_wavelength_m: float
    focal_length_m: float
    slm_pitch_m: float
    slm_pixels: int
    sensor_pitch_m: float
    input_px: int
    kernel_px: int
    num_kernels: int
    tiles: int
    rows: int
    cols: int
    #: spacing of tile centres on the sensor (input + kernel - 1 pixels: full conv outputs never overlap)
    tile_pitch_px: int
    #: PSF field of view lambda f / p in sensor pixels, per wavelength (beyond it the SLM's pixel
    #: grating repeats the pattern)
    period_px: tuple[float, ...]
    #: tiles that fit per axis inside the design wavelength's field of view
    fit_per_axis: int
    #: tile centre offsets from the optical axis in sensor pixels (rows, cols)
    centres_y_px: tuple[int, ...]
    centres_x_px: tuple[int, ...]
    #: DFT size of the simulated PSF: >= 2M, so |h|^2 (harmonics up to M - 1) is sampled exactly
    fft_size: int

    @property
    def period_m(self) -> tuple[float, ...]:
        return tuple(lam * self.focal_length_m / self.slm_pitch_m for lam in self.wavelengths_m)

    @property
    def mask_resolution_m(self) -> tuple[float, ...]:
        """Finest PSF detail the mask can make at the sensor, lambda f / (M p), per wavelength."""
        return tuple(lam * self.focal_length_m / (self.slm_pixels * self.slm_pitch_m) for lam in self.wavelengths_m)

    @property
    def region_px(self) -> tuple[int, int]:
        """Sensor area used by the tiles (rows, cols) in pixels."""
        return (self.rows * self.tile_pitch_px, self.cols * self.tile_pitch_px)

    def tile_centre(self, t: int) -> tuple[int, int]:
        return (self.centres_y_px[t // self.cols], self.centres_x_px[t % self.cols])

    def chain_issues(self) -> list[str]:
        """Sampling-chain problems (warned when a frontend is built)."""
        issues = []
        for lam, res, per in zip(self.wavelengths_m, self.mask_resolution_m, self.period_px):
            if res > self.sensor_pitch_m * (1 + 1e-9):
                issues.append(
                    f"4f: at {lam * 1e9:.0f} nm the mask resolves {res * 1e6:.3g} um at the sensor "
                    f"(lambda f / (M p), M = {self.slm_pixels}), coarser than the {self.sensor_pitch_m * 1e6:.3g} um "
                    f"sensor pixel: kernels are blurred; use >= {math.ceil(per)} SLM pixels"
                )
            if max(self.region_px) > per + 1e-9:
                issues.append(
                    f"4f: at {lam * 1e9:.0f} nm the field of view lambda f / p = {per:.1f} px is smaller than "
                    f"the {max(self.region_px)} px tile layout: the SLM's grating orders repeat the PSF onto "
                    f"the tiles; lengthen focal_length_mm or use a finer SLM"
                )
        return issues


def geometry(config: Optics4fConfig) -> Geometry:
    """Derive the layout of ``config``; UserError when the kernels do not fit the field of view."""
    lams = tuple(w * 1e-9 for w in config.wavelengths_nm)
    lam_d = config.wavelength_nm * 1e-9
    f = config.focal_length_mm * 1e-3
    p = config.slm_pitch_um * 1e-6
    s = config.sensor_pitch_um * 1e-6
    n, k = config.input_size_px, config.kernel_size
    tiles = config.num_kernels * (2 if config.signed else 1)
    d = n + k - 1
    period_d = lam_d * f / (p * s)
    fit = int(math.floor(period_d / d + 1e-9))
    fov_mm = lam_d * f / p * 1e3
    if fit < 1:
        raise UserError(
            f"4f: the PSF field of view lambda f / slm_pitch = {fov_mm:.4g} mm ({period_d:.1f} sensor px of "
            f"{config.sensor_pitch_um:g} um) is below the smallest size that fits one kernel: input + kernel - 1 = "
            f"{d} px = {d * s * 1e3:.4g} mm; raise focal_length_mm, or lower slm_pitch_um, sensor_pitch_um or "
            f"input_size_px"
        )
    if tiles > fit * fit:
        max_k = fit * fit // (2 if config.signed else 1)
        raise UserError(
            f"4f: num_kernels = {config.num_kernels}{' signed' if config.signed else ''} needs {tiles} tiles of "
            f"{d} px ({d * s * 1e3:.4g} mm) but the field of view lambda f / slm_pitch = {fov_mm:.4g} mm holds "
            f"{fit} x {fit} = {fit * fit} tiles: at most num_kernels = {max_k}; or raise focal_length_mm"
        )
    cols = min(fit, int(math.ceil(math.sqrt(tiles))))
    rows = int(math.ceil(tiles / cols))
    cy = tuple(r * d - ((rows - 1) * d) // 2 for r in range(rows))
    cx = tuple(c * d - ((cols - 1) * d) // 2 for c in range(cols))
    periods = tuple(lam * f / (p * s) for lam in lams)
    fft = _good_even(2 * config.slm_pixels)
    return Geometry(
        wavelengths_m=lams, design_wavelength_m=lam_d, focal_length_m=f, slm_pitch_m=p,
        slm_pixels=config.slm_pixels, sensor_pitch_m=s, input_px=n, kernel_px=k,
        num_kernels=config.num_kernels, tiles=tiles, rows=rows, cols=cols, tile_pitch_px=d,
        period_px=periods, fit_per_axis=fit, centres_y_px=cy, centres_x_px=cx, fft_size=fft,
    )


def layout_from_geometry(g: Geometry, config: Optics4fConfig) -> Layout:
    s_um = g.sensor_pitch_m * 1e6
    max_tiles = g.fit_per_axis**2
    details = {
        "system": "4f, Fourier-plane mask, " + ("coherent" if config.coherent else "incoherent") + " illumination",
        "wavelengths_nm": [round(l * 1e9, 3) for l in g.wavelengths_m],
        "design_wavelength_nm": round(g.design_wavelength_m * 1e9, 3),
        "focal_length_mm": g.focal_length_m * 1e3,
        "mask": config.mask,
        "mask_pixels": g.slm_pixels,
        "mask_pitch_um": g.slm_pitch_m * 1e6,
        "mask_size_mm": g.slm_pixels * g.slm_pitch_m * 1e3,
        "phase_bits": config.phase_bits,
        "phase_range_pi": config.phase_range_pi,
        "sensor_pitch_um": s_um,
        "input_size_px": g.input_px,
        "input_size_mm": g.input_px * g.sensor_pitch_m * 1e3,
        "kernel_size_px": g.kernel_px,
        "kernel_size_um": g.kernel_px * s_um,
        "signed": config.signed,
        "tiles": g.tiles,
        "tile_grid": [g.rows, g.cols],
        "tile_order": "row-major; positive parts of kernels 0..K-1, then negative parts" if config.signed else "row-major",
        "tile_pitch_px": g.tile_pitch_px,
        "tile_pitch_um": g.tile_pitch_px * s_um,
        "tile_centres_px": [list(g.tile_centre(t)) for t in range(g.tiles)],
        "sensor_region_px": list(g.region_px),
        "sensor_region_mm": [v * g.sensor_pitch_m * 1e3 for v in g.region_px],
        "field_of_view_mm": [round(v * 1e3, 6) for v in g.period_m],
        "field_of_view_px": [round(v, 3) for v in g.period_px],
        "mask_resolution_um": [round(v * 1e6, 4) for v in g.mask_resolution_m],
        "max_tiles": max_tiles,
        "max_kernels": max_tiles // (2 if config.signed else 1),
        "fits": f"{g.fit_per_axis} x {g.fit_per_axis} tiles of {g.tile_pitch_px} px "
                f"({g.tile_pitch_px * s_um / 1000:.4g} mm) in the "
                f"{g.design_wavelength_m * g.focal_length_m / g.slm_pitch_m * 1e3:.4g} mm field of view",
        "psf_fft_size": g.fft_size,
    }
    return Layout(num_kernels=config.num_kernels, rows=g.rows, cols=g.cols, kernel_size_px=g.kernel_px,
                  details=details)


def layout_for(config: Optics4fConfig) -> Layout:
    """The physical layout of ``config`` without building the model (``onnx-run estimate``)."""
    return layout_from_geometry(geometry(config), config)


def warn_chain(g: Geometry) -> None:
    for issue in g.chain_issues():
        warnings.warn(issue, PhysicsWarning, stacklevel=3)


def sensor_matrix(g: Geometry, wavelength_m: float, positions_px: np.ndarray, *, coherent: bool,
                  half: bool = False) -> np.ndarray:
    """Evaluate the PSF at sensor pixels of one axis, exactly, from the mask's Fourier series.

    The periodic part of the PSF is a trigonometric polynomial of period L = lambda f / p (the SLM
    pixel grating) with |k| <= M - 1 harmonics, so it is known everywhere from its DFT on
    ``fft_size >= 2M`` samples; the pixel envelope sinc(p z / (lambda f)) multiplies it.

    Incoherent, columns over the FFT frequencies k (all of them in FFT order, or with ``half`` the
    rfft half k = 0..N/2 with 0 < k < N/2 weighted 2, since the PSF is real). Applied as
    ``Re(E_y G E_x^T)`` to ``G = DFT[PSF power per sample]`` it gives, exactly, the PSF power
    integrated against the overlap of a display pixel with a sensor pixel (a tent of half-width s,
    transform s sinc^2): the power a sensor pixel receives from a display pixel of unit power.
    The envelope sinc^2(z / L) is band-limited (its transform is L tri(L nu)), so each entry is a
    short integral over that spectrum, done by Gauss-Legendre quadrature:
    ``(s / L) int tri(v) sinc^2((k + v) s / L) exp(2 pi i (k + v) y / L) dv`` over v in [-1, 1].

    Coherent, columns over the mask pixels m: ``sqrt(s / (L M)) env(y) exp(2 pi i (m - M//2) y / L)``;
    ``E_y t E_x^T`` is the field at the pixel centres scaled so that |h|^2 is the power per pixel.
    """
    n_fft, m = g.fft_size, g.slm_pixels
    s = g.sensor_pitch_m
    period = wavelength_m * g.focal_length_m / g.slm_pitch_m
    y = np.asarray(positions_px, dtype=np.float64)[:, None] * s
    if coherent:
        idx = (np.arange(m) - m // 2)[None, :]
        return math.sqrt(s / (period * m)) * np.sinc(y / period) * np.exp(2j * np.pi * idx * y / period)
    if half:
        k = np.arange(n_fft // 2 + 1).astype(np.float64)
        weight = np.where((k == 0) | (k == n_fft // 2), 1.0, 2.0)
    else:
        k = np.rint(np.fft.fftfreq(n_fft) * n_fft)
        weight = np.ones_like(k)
    xg, wg = np.polynomial.legendre.leggauss(_QUAD_NODES)
    v = np.concatenate([(xg - 1) / 2, (xg + 1) / 2])
    wv = np.concatenate([wg, wg]) / 2 * (1 - np.abs(v))
    out = np.zeros((y.shape[0], k.size), dtype=np.complex128)
    for vq, wq in zip(v, wv):
        kv = (k + vq)[None, :]
        out += wq * np.sinc(kv * s / period) ** 2 * np.exp(2j * np.pi * kv * y / period)
    return (s / period) * weight[None, :] * out


#: Gauss-Legendre nodes per half of the envelope's spectrum in :func:`sensor_matrix`
_QUAD_NODES = 16
