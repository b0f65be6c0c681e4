"""The sampled plane: grid shape, pixel pitch and the wavelengths carried by a field.

Conventions (see docs/physics.md):

* SI units inside (metres, 1/metre); names carry the unit (``pitch_m``, ``distance_m``).
* Sample ``n`` of an axis with ``N`` samples sits at ``(n - N // 2) * pitch_m`` ("FFT-centred":
  ``fftshift`` puts the zero frequency at the same index ``N // 2``).
* Complex fields are batched as ``(..., L, C, H, W)``: the wavelength axis is dim -4 and has
  ``L = len(wavelengths_m)`` entries. With one wavelength any leading shape ``(..., H, W)``
  works; per-wavelength quantities (transfer functions, lens phases) then have shape ``(H, W)``,
  otherwise ``(L, 1, H, W)`` so that they broadcast over channels and the batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np
import torch


def _to_shape(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    shape = tuple(int(v) for v in value)
    if len(shape) != 2:
        raise ValueError(f"shape must be (rows, cols), got {value!r}")
    return shape  # type: ignore[return-value]


def _to_wavelengths(value: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(value, (int, float, np.floating, np.integer)):
        return (float(value),)
    return tuple(float(v) for v in value)


def _check_shape(_inst: object, _attr: attrs.Attribute, value: tuple[int, int]) -> None:
    if any(v < 1 for v in value):
        raise ValueError(f"shape must be positive, got {value}")


def _check_wavelengths(_inst: object, _attr: attrs.Attribute, value: tuple[float, ...]) -> None:
    if not value or any(not (v > 0 and math.isfinite(v)) for v in value):
        raise ValueError(f"wavelengths_m must be positive and finite, got {value}")
    if any(v > 1e-2 for v in value):
        raise ValueError(f"wavelengths_m are in metres; {value} looks like another unit")


def _check_pitch(_inst: object, _attr: attrs.Attribute, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"pitch_m must be positive and finite, got {value}")


def padded_size(n: int, pad_factor: float) -> int:
    """Samples of an axis of ``n`` samples after zero padding by ``pad_factor`` (>= 1)."""
    if pad_factor < 1:
        raise ValueError(f"pad_factor must be >= 1, got {pad_factor}")
    return max(n, int(math.ceil(n * pad_factor - 1e-9)))


def centred_coords(n: int, pitch_m: float) -> np.ndarray:
    """Sample positions of an ``n``-sample axis in metres, ``(i - n // 2) * pitch_m`` (float64)."""
    return (np.arange(n) - n // 2) * float(pitch_m)


@attrs.frozen(cache_hash=True)
class Grid:
    """A sampled plane: ``shape`` (rows, cols), square pixels of ``pitch_m``, ``wavelengths_m``."""

    shape: tuple[int, int] = attrs.field(converter=_to_shape, validator=_check_shape)
    pitch_m: float = attrs.field(converter=float, validator=_check_pitch)
    wavelengths_m: tuple[float, ...] = attrs.field(converter=_to_wavelengths, validator=_check_wavelengths)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def num_wavelengths(self) -> int:
        return len(self.wavelengths_m)

    @property
    def extent_m(self) -> tuple[float, float]:
        """Window size (height, width) in metres."""
        return (self.shape[0] * self.pitch_m, self.shape[1] * self.pitch_m)

    def padded_shape(self, pad_factor: float) -> tuple[int, int]:
        return (padded_size(self.shape[0], pad_factor), padded_size(self.shape[1], pad_factor))

    # -- derived grids -------------------------------------------------------------------------
    def with_wavelength(self, index: int) -> "Grid":
        """The same plane carrying only wavelength ``index``."""
        return attrs.evolve(self, wavelengths_m=(self.wavelengths_m[index],))

    def with_shape(self, shape: int | Sequence[int]) -> "Grid":
        return attrs.evolve(self, shape=shape)

    # -- coordinates -----------------------------------------------------------------------------
    def coords(self, *, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample positions ``y`` (H, 1) and ``x`` (1, W) in metres, centred as documented."""
        y = torch.as_tensor(centred_coords(self.shape[0], self.pitch_m), device=device, dtype=dtype)
        x = torch.as_tensor(centred_coords(self.shape[1], self.pitch_m), device=device, dtype=dtype)
        return y[:, None], x[None, :]

    def frequencies(self, pad_factor: float = 1.0, *, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial frequencies ``fy`` (Hp, 1), ``fx`` (1, Wp) in 1/m of the padded grid, FFT order."""
        hp, wp = self.padded_shape(pad_factor)
        fy = torch.fft.fftfreq(hp, d=self.pitch_m, device=device, dtype=dtype)
        fx = torch.fft.fftfreq(wp, d=self.pitch_m, device=device, dtype=dtype)
        return fy[:, None], fx[None, :]

    def wavelength_shape(self, plane: Sequence[int]) -> tuple[int, ...]:
        """Shape of a per-wavelength quantity over a plane of shape ``plane``."""
        return tuple(plane) if self.num_wavelengths == 1 else (self.num_wavelengths, 1, *plane)


def stack_wavelengths(planes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-wavelength planes (each (H, W)) -> (H, W) for one wavelength, else (L, 1, H, W)."""
    if len(planes) == 1:
        return planes[0]
    return torch.stack(list(planes), dim=0).unsqueeze(1)


def complex_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """complex64 for float32/complex64 (and half types), complex128 for float64/complex128."""
    if dtype in (torch.float64, torch.complex128):
        return torch.complex128
    return torch.complex64


def real_dtype_for(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
