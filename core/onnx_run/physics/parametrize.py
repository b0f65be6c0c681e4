"""Hardware-constrained parametrisations of learnable optics.

A trainable tensor ``raw`` is unconstrained; these maps give what the device can show:

* :func:`constrained_phase`: phase with a limited range and bit depth. A range of 2 pi or more is
  periodic: ``phase = raw mod range`` (gradient 1 everywhere, no saturation) with
  ``2^bits`` levels ``k range / 2^bits``. A smaller range (e.g. a 1.5 pi SLM) is reached by a
  sigmoid, ``range * sigmoid(raw)``, with ``2^bits`` levels ``k range / (2^bits - 1)`` including
  both ends. Quantisation uses a straight-through estimator.
* :func:`requantised_raw`: a design rounded to fewer levels (a coarser device).
* :func:`bounded`: amplitudes (or anything) in ``[low, high]`` by a sigmoid.
"""

from __future__ import annotations

import math

import torch


def quantize_ste(x: torch.Tensor, step: float, *, offset: float = 0.0) -> torch.Tensor:
    """Round ``x`` to ``offset + k * step``; the gradient passes straight through."""
    q = torch.round((x - offset) / step) * step + offset
    return x + (q - x).detach()


def _periodic(phase_range: float) -> bool:
    return phase_range >= 2 * math.pi - 1e-9


def phase_levels(phase_range: float, bits: int) -> torch.Tensor:
    """The ``2^bits`` phases (float64) a device of this range and bit depth can show."""
    if bits <= 0:
        raise ValueError("continuous phase (bits = 0) has no discrete levels")
    n = 2**bits
    k = torch.arange(n, dtype=torch.float64)
    return k * phase_range / n if _periodic(phase_range) else k * phase_range / (n - 1)


def constrained_phase(raw: torch.Tensor, *, phase_range: float = 2 * math.pi, bits: int = 0) -> torch.Tensor:
    """Phase in ``[0, phase_range)`` (periodic) or ``[0, phase_range]``, quantised if ``bits > 0``."""
    if phase_range <= 0:
        raise ValueError(f"phase_range must be positive, got {phase_range}")
    if _periodic(phase_range):
        phase = torch.remainder(raw, phase_range)
        if bits > 0:
            n = 2**bits
            step = phase_range / n
            with torch.no_grad():
                q = torch.remainder(torch.round(phase / step), n) * step
            phase = phase + (q - phase).detach()
        return phase
    phase = phase_range * torch.sigmoid(raw)
    if bits > 0:
        phase = quantize_ste(phase, phase_range / (2**bits - 1))
    return phase


def raw_from_phase(phase: torch.Tensor, *, phase_range: float = 2 * math.pi, eps: float = 1e-3) -> torch.Tensor:
    """An unconstrained ``raw`` whose :func:`constrained_phase` (continuous) is ``phase``.

    A phase outside a limited range is first wrapped to [0, 2 pi) and then moved to the nearer
    end of the range.
    """
    if _periodic(phase_range):
        return torch.remainder(phase, phase_range)
    wrapped = torch.remainder(phase, 2 * math.pi)
    over = wrapped > phase_range
    nearer_top = (wrapped - phase_range) < (2 * math.pi - wrapped)
    clipped = torch.where(over, torch.where(nearer_top, torch.full_like(wrapped, phase_range),
                                            torch.zeros_like(wrapped)), wrapped)
    u = (clipped / phase_range).clamp(eps, 1 - eps)
    return torch.log(u) - torch.log1p(-u)


def requantised_raw(raw: torch.Tensor, *, phase_range: float = 2 * math.pi, bits: int) -> torch.Tensor:
    """A ``raw`` whose continuous :func:`constrained_phase` is ``raw``'s phase rounded to the
    nearest of the ``2^bits`` levels: a device with fewer levels than the design was made for
    (the ``phase-quantisation`` error model). No gradient."""
    with torch.no_grad():
        levels = constrained_phase(raw.detach(), phase_range=phase_range, bits=bits)
        return raw_from_phase(levels.double(), phase_range=phase_range).to(raw.dtype)


def bounded(raw: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """``low + (high - low) sigmoid(raw)``: e.g. an amplitude transmission in [0, 1]."""
    return low + (high - low) * torch.sigmoid(raw)


def raw_from_bounded(value: torch.Tensor, low: float = 0.0, high: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Inverse of :func:`bounded` (clamped away from the ends)."""
    u = ((value - low) / (high - low)).clamp(eps, 1 - eps)
    return torch.log(u) - torch.log1p(-u)
