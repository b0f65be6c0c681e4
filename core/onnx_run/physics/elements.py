"""Thin optical elements: lenses, apertures, masks, resampling of pixelated masks.

Every element is a transmission multiplied onto a field on a :class:`Grid`. Per-wavelength
elements (lens, height map) follow the grid's convention: (H, W) for one wavelength, else
(L, 1, H, W). Apertures are area-weighted at their edges (the value of a sample is the
fraction of its pixel inside), which removes most staircase error from diffraction tests.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from onnx_run.physics.grid import Grid, centred_coords, complex_dtype_for, stack_wavelengths
from onnx_run.physics.validity import lens_report, warn_issues


def thin_lens(grid: Grid, focal_length_m: float, *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Thin-lens transmission ``exp(-i pi (x^2 + y^2) / (lambda f))`` (f > 0 converges).

    Warns (PhysicsWarning) when the chirp is undersampled: ``dx > lambda f / L``.
    """
    warn_issues(lens_report(grid, focal_length_m), stacklevel=3)
    y, x = grid.coords(device=device, dtype=torch.float64)
    r2 = x**2 + y**2
    planes = [torch.polar(torch.ones_like(r2), -math.pi * r2 / (lam * focal_length_m)).to(complex_dtype_for(dtype))
              for lam in grid.wavelengths_m]
    return stack_wavelengths(planes)


def _coverage_1d(centres: np.ndarray, pitch: float, lo: float, hi: float) -> np.ndarray:
    """Fraction of each pixel [c - p/2, c + p/2] inside [lo, hi]."""
    a = np.maximum(centres - pitch / 2, lo)
    b = np.minimum(centres + pitch / 2, hi)
    return np.clip(b - a, 0, None) / pitch


def rect_aperture(grid: Grid, size_m: float | Sequence[float], *, center_m: Sequence[float] = (0.0, 0.0),
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rectangular opening (height, width) in metres; exact pixel-area coverage at the edges."""
    hgt, wid = (float(size_m), float(size_m)) if np.isscalar(size_m) else (float(size_m[0]), float(size_m[1]))
    yc = centred_coords(grid.shape[0], grid.pitch_m)
    xc = centred_coords(grid.shape[1], grid.pitch_m)
    cy, cx = float(center_m[0]), float(center_m[1])
    ay = _coverage_1d(yc, grid.pitch_m, cy - hgt / 2, cy + hgt / 2)
    ax = _coverage_1d(xc, grid.pitch_m, cx - wid / 2, cx + wid / 2)
    return torch.as_tensor(np.outer(ay, ax), device=device, dtype=dtype)


def square_aperture(grid: Grid, width_m: float, *, center_m: Sequence[float] = (0.0, 0.0),
                    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Square opening of side ``width_m``."""
    return rect_aperture(grid, width_m, center_m=center_m, device=device, dtype=dtype)


def circular_aperture(grid: Grid, diameter_m: float, *, center_m: Sequence[float] = (0.0, 0.0),
                      supersample: int = 8, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Circular opening; edge pixels hold their covered area fraction (``supersample``^2 points)."""
    s = int(supersample)
    sub = (np.arange(s) + 0.5) / s - 0.5
    yc = centred_coords(grid.shape[0], grid.pitch_m) - float(center_m[0])
    xc = centred_coords(grid.shape[1], grid.pitch_m) - float(center_m[1])
    ys = (yc[:, None] + sub[None, :] * grid.pitch_m).reshape(-1)
    xs = (xc[:, None] + sub[None, :] * grid.pitch_m).reshape(-1)
    inside = (ys[:, None] ** 2 + xs[None, :] ** 2) <= (diameter_m / 2) ** 2
    cover = inside.reshape(grid.shape[0], s, grid.shape[1], s).mean(axis=(1, 3))
    return torch.as_tensor(cover, device=device, dtype=dtype)


def phase_mask(phase: torch.Tensor) -> torch.Tensor:
    """Phase-only transmission ``exp(i phase)`` (differentiable)."""
    return torch.polar(torch.ones_like(phase), phase)


def amplitude_mask(amplitude: torch.Tensor) -> torch.Tensor:
    """Real amplitude transmission as a complex tensor."""
    return amplitude.to(complex_dtype_for(amplitude.dtype))


def height_to_phase(height_m: torch.Tensor, wavelength_m: float | Sequence[float],
                    refractive_index: float | Sequence[float]) -> torch.Tensor:
    """Phase delay of a thin element of height ``h``: ``2 pi (n - 1) h / lambda``.

    With several wavelengths (and optionally one index per wavelength) the result stacks them
    on a new leading axis shaped for the grid convention: (L, 1, H, W).
    """
    lams = [float(wavelength_m)] if np.isscalar(wavelength_m) else [float(v) for v in wavelength_m]
    ns = [float(refractive_index)] * len(lams) if np.isscalar(refractive_index) else [float(v) for v in refractive_index]
    if len(ns) != len(lams):
        raise ValueError(f"{len(ns)} refractive indices for {len(lams)} wavelengths")
    planes = [2 * math.pi * (n - 1) * height_m / lam for n, lam in zip(ns, lams)]
    return stack_wavelengths(planes)


def phase_to_height(phase: torch.Tensor, wavelength_m: float, refractive_index: float) -> torch.Tensor:
    """Height giving ``phase`` at one wavelength: ``phase lambda / (2 pi (n - 1))``."""
    return phase * wavelength_m / (2 * math.pi * (refractive_index - 1))


def pixel_overlap(n_out: int, pitch_out_m: float, n_in: int, pitch_in_m: float, *,
                  offset_m: float = 0.0) -> np.ndarray:
    """Overlap lengths (metres) of output cells with input cells, shape (n_out, n_in).

    Both axes are centred (sample i at ``(i - n // 2) * pitch``); the input axis is shifted by
    ``offset_m``. Row sums divided by ``pitch_out_m`` give the covered fraction of each output
    cell. This is the exact integral of a piecewise-constant (pixelated) input over each cell.
    """
    xo = centred_coords(n_out, pitch_out_m)
    xi = centred_coords(n_in, pitch_in_m) + float(offset_m)
    lo = np.maximum(xo[:, None] - pitch_out_m / 2, xi[None, :] - pitch_in_m / 2)
    hi = np.minimum(xo[:, None] + pitch_out_m / 2, xi[None, :] + pitch_in_m / 2)
    return np.clip(hi - lo, 0, None)


_RESAMPLE_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _resample_mats(grid: Grid, mask_shape: tuple[int, int], mask_pitch_m: float, center_m: tuple[float, float],
                   device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    key = (grid.shape, grid.pitch_m, mask_shape, float(mask_pitch_m), center_m, str(device), dtype)
    mats = _RESAMPLE_CACHE.get(key)
    if mats is None:
        ry = pixel_overlap(grid.shape[0], grid.pitch_m, mask_shape[0], mask_pitch_m, offset_m=center_m[0]) / grid.pitch_m
        rx = pixel_overlap(grid.shape[1], grid.pitch_m, mask_shape[1], mask_pitch_m, offset_m=center_m[1]) / grid.pitch_m
        mats = (torch.as_tensor(ry, device=device, dtype=dtype), torch.as_tensor(rx, device=device, dtype=dtype))
        if len(_RESAMPLE_CACHE) > 64:
            _RESAMPLE_CACHE.clear()
        _RESAMPLE_CACHE[key] = mats
    return mats


def resample_mask(mask: torch.Tensor, mask_pitch_m: float, grid: Grid, *,
                  center_m: Sequence[float] = (0.0, 0.0), fill: float | complex = 0.0) -> torch.Tensor:
    """Put a pixelated mask (..., My, Mx) of pitch ``mask_pitch_m`` onto the simulation grid.

    Each grid sample takes the area-weighted mean of the mask pixels over its cell (exact for
    a pixelated device: nearest-pixel values on a finer grid, averages on a coarser one); the
    part of a cell outside the mask takes ``fill`` (0 opaque, 1 clear). Linear in the mask,
    hence differentiable. Resample the complex transmission, not the phase, when cells straddle
    pixel edges: that is what light averages.
    """
    my, mx = mask.shape[-2:]
    real = torch.float64 if mask.dtype in (torch.float64, torch.complex128) else torch.float32
    ry, rx = _resample_mats(grid, (my, mx), mask_pitch_m, (float(center_m[0]), float(center_m[1])),
                            mask.device, real)
    if mask.is_complex():
        ryc, rxc = ry.to(mask.dtype), rx.to(mask.dtype)
        out = ryc @ mask @ rxc.transpose(0, 1)
    else:
        out = ry @ mask @ rx.transpose(0, 1)
    if fill != 0:
        covered = ry.sum(1)[:, None] * rx.sum(1)[None, :]
        out = out + fill * (1 - covered).to(out.dtype)
    return out
