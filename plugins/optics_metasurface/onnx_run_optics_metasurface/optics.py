"""From a sub-aperture's transmission to its PSF on the sensor tile, computing only what is needed.

Each sub-aperture (N x N pillars at the lattice period ``a``) is propagated to the sensor with
the core's band-limited angular spectrum (``onnx_run.physics.propagation.transfer_function``,
2x zero padding, Matsushima-Shimobaba band limit). At a 293 nm pitch and 2.4 mm the band limit
keeps only a few dozen of the padded grid's ~1000 frequencies per axis: the sub-wavelength
lattice samples the meta-atoms, not the field. So instead of full FFTs we evaluate the same
sums on the kept frequencies only, with small DFT matrices:

    S = E_y t E_x^T             (kept spectrum, M x M; E = exp(-2 pi i f x))
    U(y, x) = G_y (H * S) G_x^T  (field at any points; G = exp(+2 pi i y f) / N_pad)

At the grid's own sample points this is exactly the core's ``angular_spectrum`` (tested). U is
a trigonometric polynomial, periodic over the padded window L = N_pad a, so |U|^2 is one too,
of twice the bandwidth: sampled at Q = 4K + 1 points per period (K: largest kept frequency
index) its Fourier coefficients are exact, and its integral over each sensor pixel follows in
closed form (a sinc per coefficient). That integral is folded into two small real matrices
W (pixels x Q): PSF = W_y |U_Q|^2 W_x^T. The pixel grid may sit anywhere (misalignment shifts
it). Cost per tile: ~N^2 M complex multiply-adds, ~1/50 of an FFT propagation at N = 512.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Sequence

import attrs
import numpy as np
import torch

from onnx_run.physics.grid import Grid
from onnx_run.physics.propagation import transfer_function
from onnx_run.physics.validity import PhysicsWarning, band_limit_frequency

#: zero padding of the angular spectrum: 2x makes the FFT's convolution linear and lets light
#: reach one aperture width off-axis, i.e. every point of the tile below the aperture
PAD_FACTOR = 2.0


@attrs.frozen
class TileGeometry:
    """One sub-aperture and the sensor window below it (SI units)."""

    pillars: int  # N x N pillars
    period_m: float
    wavelengths_m: tuple[float, ...]
    distance_m: float
    kernel_px: tuple[int, int]
    sensor_pitch_m: float
    sensor_shift_m: tuple[float, float] = (0.0, 0.0)

    @property
    def aperture_m(self) -> float:
        return self.pillars * self.period_m

    @property
    def padded(self) -> int:
        return math.ceil(self.pillars * PAD_FACTOR - 1e-9)

    def band_limit_per_m(self, wavelength_m: float) -> float:
        return band_limit_frequency(wavelength_m, self.distance_m, self.padded * self.period_m)


def _pixel_weights(centres_m: np.ndarray, pitch_m: float, period_m: float, q: int) -> np.ndarray:
    """W (pixels, q): the mean over each pixel of a period-``period_m`` trigonometric polynomial
    of degree (q-1)/2 given by its samples at j period / q, j = 0..q-1 (exact)."""
    k = np.arange(q) - (q - 1) // 2
    u = np.arange(q) * period_m / q
    # mean of exp(2 pi i k y / L) over [c - p/2, c + p/2] = exp(2 pi i k c / L) sinc(k p / L)
    phase = 2 * np.pi * k[None, None, :] * (centres_m[:, None, None] - u[None, :, None]) / period_m
    return (np.cos(phase) * np.sinc(k * pitch_m / period_m)[None, None, :]).sum(-1) / q


class _Operator:
    """The kept-band matrices of one wavelength (on one device)."""

    def __init__(self, geom: TileGeometry, li: int, device: torch.device, dtype: torch.dtype):
        n, a = geom.pillars, geom.period_m
        lam = geom.wavelengths_m[li]
        grid = Grid((n, n), a, lam)
        with warnings.catch_warnings():
            # expected: the band limit discards most of the sub-wavelength grid's band (module doc)
            warnings.simplefilter("ignore", PhysicsWarning)
            tf = transfer_function(grid, geom.distance_m, method="angular_spectrum", pad_factor=PAD_FACTOR,
                                   band_limit=True, device="cpu", dtype=torch.complex128)
        npad = tf.shape[-1]
        keep = tf.abs() > 0
        rows = torch.nonzero(keep.any(1)).reshape(-1)
        cols = torch.nonzero(keep.any(0)).reshape(-1)
        index = torch.fft.fftfreq(npad, d=1.0 / npad, dtype=torch.float64)  # integer frequency indices
        ky, kx = index[rows], index[cols]
        period = npad * a
        pos = torch.arange(n, dtype=torch.float64) * a
        self.ey = torch.exp(-2j * math.pi * ky[:, None] / period * pos[None, :])
        self.ex = torch.exp(-2j * math.pi * kx[:, None] / period * pos[None, :])
        self.h = tf[rows][:, cols]
        centre = (n - 1) * a / 2
        kh, kw = geom.kernel_px
        mats = []
        for k_idx, npx, shift in ((ky, kh, geom.sensor_shift_m[0]), (kx, kw, geom.sensor_shift_m[1])):
            kmax = int(k_idx.abs().max()) if k_idx.numel() else 0
            q = 4 * kmax + 1
            u = torch.arange(q, dtype=torch.float64) * period / q
            g = torch.exp(2j * math.pi * u[:, None] * k_idx[None, :] / period) / npad
            centres = centre + shift + (np.arange(npx) - (npx - 1) / 2) * geom.sensor_pitch_m
            w = torch.as_tensor(_pixel_weights(centres, geom.sensor_pitch_m, period, q))
            # which pixel each sample point falls in (-1: outside the window), for phase retrieval
            d = (u.numpy() - (centre + shift) + period / 2) % period - period / 2  # periodic offset
            rel = d / geom.sensor_pitch_m + npx / 2
            pix = np.where((rel >= 0) & (rel < npx), np.floor(rel), -1).astype(np.int64)
            mats.append((g, w, torch.as_tensor(pix)))
        (self.gy, self.wy, self.pix_y), (self.gx, self.wx, self.pix_x) = mats
        rdt = torch.float64 if dtype == torch.complex128 else torch.float32
        for name in ("ey", "ex", "h", "gy", "gx"):
            setattr(self, name, getattr(self, name).to(device, dtype))
        self.wy, self.wx = self.wy.to(device, rdt), self.wx.to(device, rdt)
        self.ex_t = self.ex.transpose(0, 1).contiguous()
        self.pix_y, self.pix_x = self.pix_y.to(device), self.pix_x.to(device)
        self.kept = (int(rows.numel()), int(cols.numel()))
        self.samples = (int(self.gy.shape[0]), int(self.gx.shape[0]))
        self.padded = npad

    def spectrum(self, t: torch.Tensor) -> torch.Tensor:
        """Kept spectrum times the transfer function (..., My, Mx) of transmissions (..., N, N)."""
        return (self.ey @ (t @ self.ex_t)) * self.h

    def field(self, t: torch.Tensor) -> torch.Tensor:
        """Field on the Q_y x Q_x sample points of one period of the sensor plane."""
        return self.gy @ self.spectrum(t) @ self.gx.transpose(0, 1)

    def adjoint(self, u: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`field`: sample-point values back onto the aperture (..., N, N)."""
        spec = (self.gy.conj().transpose(0, 1) @ u @ self.gx.conj()) * self.h.conj()
        return self.ey.conj().transpose(0, 1) @ (spec @ self.ex.conj())

    def pixel_power(self, t: torch.Tensor) -> torch.Tensor:
        """Mean irradiance over each sensor pixel (..., kh, kw) (unit incident irradiance)."""
        u = self.field(t)
        inten = u.real**2 + u.imag**2
        return self.wy @ inten @ self.wx.transpose(0, 1)


_OP_CACHE: "OrderedDict[tuple, _Operator]" = OrderedDict()
_OP_CACHE_SIZE = 16


def operator(geom: TileGeometry, li: int, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.complex64) -> _Operator:
    """The (cached) kept-band operator of wavelength ``li`` of ``geom``."""
    dev = torch.device(device)
    key = (geom, li, str(dev), dtype)
    op = _OP_CACHE.get(key)
    if op is None:
        op = _Operator(geom, li, dev, dtype)
        _OP_CACHE[key] = op
        while len(_OP_CACHE) > _OP_CACHE_SIZE:
            _OP_CACHE.popitem(last=False)
    else:
        _OP_CACHE.move_to_end(key)
    return op


def tile_psfs(transmission: torch.Tensor, geom: TileGeometry,
              wavelength_slots: Sequence[int] | None = None) -> torch.Tensor:
    """PSFs of sub-apertures: ``transmission`` (T, L, N, N) complex -> (T, L, kh, kw) real.

    Each PSF value is the fraction of the light falling on the sub-aperture (unit irradiance,
    area (N a)^2) that lands on that sensor pixel: sums are <= 1 (energy conservation), the rest
    misses the window or is lost in the meta-atoms. ``wavelength_slots[l]`` is the index into
    ``geom.wavelengths_m`` of the transmission's slot ``l`` (default: the same order).
    """
    slots = list(range(transmission.shape[1])) if wavelength_slots is None else list(wavelength_slots)
    scale = geom.sensor_pitch_m**2 / geom.aperture_m**2
    out = []
    for slot, li in enumerate(slots):
        op = operator(geom, li, transmission.device, transmission.dtype)
        out.append(op.pixel_power(transmission[:, slot]) * scale)
    return torch.stack(out, dim=1)


def gerchberg_saxton(target: torch.Tensor, geom: TileGeometry, li: int, *, iterations: int = 30,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Phase maps (T, N, N) whose PSFs approximate ``target`` (T, kh, kw), by alternating projections.

    Sensor side: inside the window the amplitude is set to the target's (scaled to the light
    that reached the window), outside it is left free; aperture side: phase only. A cheap,
    good start for the gradient descent on widths, which at the paper's learning rate refines.
    """
    op = operator(geom, li, target.device, torch.complex64)
    py, px = op.pix_y, op.pix_x
    inside = (py[:, None] >= 0) & (px[None, :] >= 0)
    amp = target.clamp_min(0).sqrt().to(torch.float32)
    amp = amp[:, py.clamp_min(0)][:, :, px.clamp_min(0)] * inside
    amp = amp / amp.pow(2).sum((-2, -1), keepdim=True).sqrt().clamp_min(1e-20)
    phase0 = torch.rand(amp.shape, generator=generator, dtype=torch.float32).to(amp.device) * (2 * math.pi)
    t = op.adjoint(torch.polar(amp, phase0))
    t = t / t.abs().clamp_min(1e-20)
    for _ in range(iterations):
        u = op.field(t)
        mag = u.abs()
        energy = (mag.pow(2) * inside).sum((-2, -1), keepdim=True).sqrt()
        new_mag = torch.where(inside, amp * energy, mag)
        u = new_mag * (u / mag.clamp_min(1e-20))
        back = op.adjoint(u)
        t = back / back.abs().clamp_min(1e-20)
    return torch.angle(t)


def lens_phase(geom: TileGeometry, li: int) -> np.ndarray:
    """Phase (N, N) of an ideal lens focusing the sub-aperture onto its tile's centre."""
    n, a = geom.pillars, geom.period_m
    lam = geom.wavelengths_m[li]
    x = (np.arange(n) - (n - 1) / 2) * a
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    z = geom.distance_m
    return -2 * math.pi / lam * (np.sqrt(r2 + z * z) - z)
