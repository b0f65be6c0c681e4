"""Free-space propagation of scalar fields (time dependence exp(-i omega t), so a forward
plane wave is exp(+i k z)).

* :func:`angular_spectrum`: the exact transfer function ``exp(i z sqrt(k^2 - kx^2 - ky^2))``
  (evanescent waves decay as ``exp(-|z| sqrt(kx^2 + ky^2 - k^2))``), zero padding (2x by
  default) so the FFT computes a linear, not circular, convolution, and the Matsushima &
  Shimobaba band limit (on by default) against aliasing of the sampled transfer function.
* :func:`fresnel`: the paraxial (Fresnel) transfer function ``exp(ikz) exp(-i pi lambda z f^2)``.
* :func:`fourier_lens`: a 2f system; output pitch ``lambda f / (N dx)``.
* :func:`rayleigh_sommerfeld`: direct integration of the first Rayleigh-Sommerfeld integral,
  O(N^4): a slow reference for tests.

Transfer functions are cached (key: method, grid, distance, padding, band limit, device,
dtype), so a training loop pays for them once. Each is checked against
:mod:`onnx_run.physics.validity` when it is built; an out-of-range use warns with the numbers.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F

from onnx_run.physics.grid import Grid, complex_dtype_for, padded_size, stack_wavelengths
from onnx_run.physics.validity import (band_limit_frequency, propagation_report, warn_issues)

#: how many cache entries are kept, the oldest dropped first (a transfer function may hold two:
#: one under the caller's key and one under the normalised key)
TF_CACHE_SIZE = 64
_TF_CACHE: "OrderedDict[tuple[Any, ...], torch.Tensor]" = OrderedDict()


def clear_cache() -> None:
    """Forget every cached transfer function (frees memory, e.g. after a GPU run)."""
    _TF_CACHE.clear()


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def transfer_function(grid: Grid, distance_m: float, *, method: str = "angular_spectrum",
                      pad_factor: float = 2.0, band_limit: bool = True,
                      device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """The (cached) transfer function on the padded grid, in FFT order.

    Shape ``(Hp, Wp)`` for one wavelength, else ``(L, 1, Hp, Wp)``. Built in float64 and cast,
    because ``k z`` reaches 1e6 rad and float32 would lose the phase.
    """
    if method not in ("angular_spectrum", "fresnel"):
        raise ValueError(f"transfer functions exist for 'angular_spectrum' and 'fresnel', not {method!r}")
    key = (method, grid, distance_m, pad_factor, band_limit, device, dtype)
    cached = _TF_CACHE.get(key)
    if cached is not None:
        return cached
    dev = _device(device)
    dtype = complex_dtype_for(dtype)
    norm_key = (method, grid, float(distance_m), float(pad_factor), bool(band_limit), dev, dtype)
    cached = _TF_CACHE.get(norm_key)
    if cached is not None:
        _TF_CACHE[key] = cached
        return cached
    warn_issues(propagation_report(grid, distance_m, method=method, pad_factor=pad_factor,
                                   band_limit=band_limit), stacklevel=4)
    z = float(distance_m)
    fy, fx = grid.frequencies(pad_factor, device=dev, dtype=torch.float64)
    hp, wp = grid.padded_shape(pad_factor)
    f2 = fx**2 + fy**2
    planes = []
    for lam in grid.wavelengths_m:
        if method == "angular_spectrum":
            arg = 1.0 / lam**2 - f2
            kz = 2 * math.pi * torch.sqrt(torch.abs(arg))
            prop = arg >= 0
            phase = torch.where(prop, z * kz, torch.zeros_like(kz))
            amp = torch.where(prop, torch.ones_like(kz), torch.exp(-abs(z) * kz))
        else:
            phase = (2 * math.pi / lam) * z - math.pi * lam * z * f2
            amp = torch.ones_like(phase)
        if band_limit:
            fy_lim = band_limit_frequency(lam, z, hp * grid.pitch_m, method)
            fx_lim = band_limit_frequency(lam, z, wp * grid.pitch_m, method)
            amp = amp * ((fy.abs() <= fy_lim) & (fx.abs() <= fx_lim))
        planes.append(torch.polar(amp, phase).to(dtype))
    tf = stack_wavelengths(planes)
    _TF_CACHE[norm_key] = tf
    _TF_CACHE[key] = tf
    while len(_TF_CACHE) > TF_CACHE_SIZE:
        _TF_CACHE.popitem(last=False)
    return tf


def _broadcasts_into(shape: torch.Size, target: torch.Size) -> bool:
    """True when a tensor of ``shape`` broadcasts to ``target`` without enlarging it."""
    if len(shape) > len(target):
        return False
    return all(a == b or a == 1 for a, b in zip(reversed(shape), reversed(target)))


def apply_transfer_function(field: torch.Tensor, tf: torch.Tensor) -> torch.Tensor:
    """Filter ``field`` (..., H, W) by ``tf`` given on the padded grid (Hp, Wp) in FFT order.

    ``crop(ifft2(tf * fft2(zero_pad(field))))``: a linear convolution. Zero padding goes after
    the data (bottom/right): ``tf``'s kernel is centred on index 0, so the result lands on the
    original indices and the first (H, W) samples are kept. Plain autograd ops, so torch.func
    (vmap, jacrev, jvp: the NTK engine) works through it; the only tensor saved for backward is
    ``tf`` itself (already cached), never the spectrum, and backward is two FFTs. (Pruned 1-D
    passes that skip the zero rows were slower on CPU: a strided column FFT costs more than
    MKL's 2-D transform.)
    """
    if not field.is_complex():
        field = field.to(complex_dtype_for(field.dtype))
    if tf.dtype != field.dtype:
        tf = tf.to(field.dtype)
    h, w = field.shape[-2:]
    spec = torch.fft.fft2(field, s=tuple(tf.shape[-2:]))
    if not tf.requires_grad and _broadcasts_into(tf.shape, spec.shape):
        spec = spec.mul_(tf)
    else:
        spec = spec * tf
    return torch.fft.ifft2(spec)[..., :h, :w]


def _check_field(field: torch.Tensor, grid: Grid) -> torch.Tensor:
    if tuple(field.shape[-2:]) != grid.shape:
        raise ValueError(f"field plane {tuple(field.shape[-2:])} does not match grid shape {grid.shape}")
    if grid.num_wavelengths > 1 and (field.dim() < 4 or field.shape[-4] not in (1, grid.num_wavelengths)):
        raise ValueError(
            f"with {grid.num_wavelengths} wavelengths the field must be (..., L, C, H, W) with "
            f"L = {grid.num_wavelengths} at dim -4, got shape {tuple(field.shape)}"
        )
    if not field.is_complex():
        field = field.to(complex_dtype_for(field.dtype))
    return field


def angular_spectrum(field: torch.Tensor, grid: Grid, distance_m: float, *, pad_factor: float = 2.0,
                     band_limit: bool = True) -> torch.Tensor:
    """Propagate ``field`` by ``distance_m`` (negative: backwards) with the exact transfer function."""
    field = _check_field(field, grid)
    tf = transfer_function(grid, distance_m, method="angular_spectrum", pad_factor=pad_factor,
                           band_limit=band_limit, device=field.device, dtype=field.dtype)
    return apply_transfer_function(field, tf)


def fresnel(field: torch.Tensor, grid: Grid, distance_m: float, *, pad_factor: float = 2.0,
            band_limit: bool = True) -> torch.Tensor:
    """Propagate ``field`` with the paraxial Fresnel transfer function."""
    field = _check_field(field, grid)
    tf = transfer_function(grid, distance_m, method="fresnel", pad_factor=pad_factor,
                           band_limit=band_limit, device=field.device, dtype=field.dtype)
    return apply_transfer_function(field, tf)


def propagate(field: torch.Tensor, grid: Grid, distance_m: float, *, method: str = "angular_spectrum",
              pad_factor: float = 2.0, band_limit: bool = True) -> torch.Tensor:
    """Propagate by ``method``: 'angular_spectrum' (default), 'fresnel' or 'rayleigh_sommerfeld'."""
    if method == "angular_spectrum":
        return angular_spectrum(field, grid, distance_m, pad_factor=pad_factor, band_limit=band_limit)
    if method == "fresnel":
        return fresnel(field, grid, distance_m, pad_factor=pad_factor, band_limit=band_limit)
    if method == "rayleigh_sommerfeld":
        return rayleigh_sommerfeld(field, grid, distance_m)
    raise ValueError(f"method must be 'angular_spectrum', 'fresnel' or 'rayleigh_sommerfeld', got {method!r}")


def fourier_lens(field: torch.Tensor, grid: Grid, focal_length_m: float, *,
                 pad_factor: float = 1.0) -> tuple[torch.Tensor, tuple[Grid, ...]]:
    """Field in the back focal plane of a lens with ``field`` in its front focal plane (2f).

    ``U_f(u) = exp(2ikf) / (i lambda f) * FT[U](u / (lambda f))``, computed as a centred DFT.
    The window is zero padded (centred) to a square of side S = max padded side, so the output
    is S x S with pitch ``lambda f / (S dx)`` -- one output grid per wavelength, since the pitch
    scales with the wavelength. Energy is conserved: sum |U_f|^2 dxf^2 = sum |U|^2 dx^2.
    """
    field = _check_field(field, grid)
    h, w = grid.shape
    side = max(padded_size(h, pad_factor), padded_size(w, pad_factor))
    top, left = side // 2 - h // 2, side // 2 - w // 2
    if (side, side) != (h, w):
        field = F.pad(field, (left, side - w - left, top, side - h - top))
    spec = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(field, dim=(-2, -1))), dim=(-2, -1))
    scales = []
    grids = []
    for lam in grid.wavelengths_m:
        k = 2 * math.pi / lam
        phase = (2 * k * focal_length_m) % (2 * math.pi) - math.pi / 2  # exp(2ikf) / i
        scales.append(complex(grid.pitch_m**2 / (lam * focal_length_m) * math.cos(phase),
                              grid.pitch_m**2 / (lam * focal_length_m) * math.sin(phase)))
        grids.append(Grid((side, side), lam * abs(focal_length_m) / (side * grid.pitch_m), lam))
    scale = torch.as_tensor(scales, dtype=spec.dtype, device=spec.device)
    scale = scale.reshape(grid.wavelength_shape((1, 1))) if grid.num_wavelengths > 1 else scale[0]
    return spec * scale, tuple(grids)


def rayleigh_sommerfeld(field: torch.Tensor, grid: Grid, distance_m: float, *, out_grid: Grid | None = None,
                        chunk_elements: int = 1 << 22) -> torch.Tensor:
    """Direct first Rayleigh-Sommerfeld integral (slow O(N_in N_out) reference for tests).

    ``U(x, z) = sum U(xi) z / (i lambda r^2) (1 + i / (k r)) exp(i k r) dx^2``, r = |x - xi, z|;
    the angular spectrum's transfer function is exactly this kernel's Fourier transform.
    ``out_grid`` (same wavelengths) defaults to ``grid``. Needs ``distance_m > 0``.
    """
    z = float(distance_m)
    if z <= 0:
        raise ValueError(f"rayleigh_sommerfeld needs distance_m > 0, got {z}")
    field = _check_field(field, grid)
    out_grid = out_grid or grid
    warn_issues(propagation_report(grid, z, method="rayleigh_sommerfeld"), stacklevel=3)
    dev = field.device
    yi, xi = grid.coords(device=dev, dtype=torch.float64)
    yo, xo = out_grid.coords(device=dev, dtype=torch.float64)
    yi, xi = torch.broadcast_tensors(yi, xi)
    yo, xo = torch.broadcast_tensors(yo, xo)
    yi, xi, yo, xo = yi.reshape(-1), xi.reshape(-1), yo.reshape(-1), xo.reshape(-1)
    n_in, n_out = yi.numel(), yo.numel()
    chunk = max(1, chunk_elements // n_in)
    per_lambda = []
    for li, lam in enumerate(grid.wavelengths_m):
        k = 2 * math.pi / lam
        sub = field if grid.num_wavelengths == 1 else field.select(-4, li if field.shape[-4] > 1 else 0)
        lead = sub.shape[:-2]
        flat = sub.reshape(-1, n_in)
        outs = []
        for start in range(0, n_out, chunk):
            stop = min(n_out, start + chunk)
            r2 = (yo[start:stop, None] - yi[None, :]) ** 2 + (xo[start:stop, None] - xi[None, :]) ** 2 + z * z
            r = torch.sqrt(r2)
            # z / (i lambda r^2) (1 + i/(kr)) = z / (lambda r^2) * (1/(kr) - i)
            amp = z / (lam * r2) * grid.pitch_m**2
            kern = torch.polar(amp, k * r) * torch.complex(1 / (k * r), -torch.ones_like(r))
            outs.append(flat @ kern.to(flat.dtype).transpose(0, 1))
        per_lambda.append(torch.cat(outs, dim=-1).reshape(*lead, *out_grid.shape))
    if grid.num_wavelengths == 1:
        return per_lambda[0]
    return torch.stack(per_lambda, dim=-4)
