"""Imaging by convolution: incoherent (intensity * PSF), coherent (field * amplitude kernel),
and signed kernels as pairs of non-negative PSFs.

Spatially incoherent light adds intensities, so the image is the input intensity convolved with
the intensity PSF ``|h|^2``; many PSFs at once give one output channel each, and the input's
wavelength channels are summed (a monochrome sensor integrates all wavelengths). The
convolution is linear, not circular: FFTs are zero padded to the full output size.

Convention: true convolution ``y[i] = sum_m x[m] k[i - m + c]`` with the kernel centre
``c = (kh // 2, kw // 2)`` in "same" mode, i.e. ``F.conv2d(x, k.flip(-2, -1))`` with padding.
"""

from __future__ import annotations

import scipy.fft
import torch
import torch.nn.functional as F

MODES = ("same", "full", "valid")
#: kernels with more taps than this use the FFT when method="auto"
AUTO_FFT_TAPS = 15 * 15


def _good_size(n: int) -> int:
    """Smallest fast FFT length >= n (scipy knows which sizes pocketfft handles fastest)."""
    return scipy.fft.next_fast_len(n)


def _crop(full: torch.Tensor, mode: str, in_hw: tuple[int, int], k_hw: tuple[int, int]) -> torch.Tensor:
    (h, w), (kh, kw) = in_hw, k_hw
    if mode == "full":
        return full[..., : h + kh - 1, : w + kw - 1]
    if mode == "same":
        return full[..., kh // 2: kh // 2 + h, kw // 2: kw // 2 + w]
    return full[..., kh - 1: h, kw - 1: w]


def _direct(x: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    kh, kw = k.shape[-2:]
    if mode == "full":
        pads = (kw - 1, kw - 1, kh - 1, kh - 1)
    elif mode == "same":
        pads = (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2)
    else:
        pads = (0, 0, 0, 0)
    if any(pads):
        x = F.pad(x, pads)
    return F.conv2d(x, k.flip(-2, -1))


def _direct_any(x: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    """Direct convolution for real or complex operands (complex via real convolutions)."""
    if not x.is_complex() and not k.is_complex():
        return _direct(x, k, mode)
    nk = k.shape[0]
    kr = k.real if k.is_complex() else k
    ki = k.imag if k.is_complex() else torch.zeros_like(k)
    if not x.is_complex():
        both = _direct(x, torch.cat([kr, ki], 0), mode)
        return torch.complex(both[:, :nk], both[:, nk:])
    xr, xi = x.real, x.imag
    both_r = _direct(xr, torch.cat([kr, ki], 0), mode)
    both_i = _direct(xi, torch.cat([kr, ki], 0), mode)
    return torch.complex(both_r[:, :nk] - both_i[:, nk:], both_r[:, nk:] + both_i[:, :nk])


def _fft(x: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    h, w = x.shape[-2:]
    kh, kw = k.shape[-2:]
    s = (_good_size(h + kh - 1), _good_size(w + kw - 1))
    if not x.is_complex() and not k.is_complex():
        xs = torch.fft.rfft2(x, s=s)
        ks = torch.fft.rfft2(k, s=s)
        inv = lambda z: torch.fft.irfft2(z, s=s)  # noqa: E731
    else:
        xs = torch.fft.fft2(x, s=s)
        ks = torch.fft.fft2(k, s=s)
        inv = torch.fft.ifft2
    if x.shape[1] == 1:
        prod = xs * ks[:, 0][None]
    else:
        prod = torch.einsum("bchw,kchw->bkhw", xs, ks)
    return _crop(inv(prod), mode, (h, w), (kh, kw))


def convolve2d(x: torch.Tensor, kernels: torch.Tensor, *, mode: str = "same", method: str = "auto") -> torch.Tensor:
    """Convolve ``x`` (..., C, H, W) with ``kernels`` (K, C, kh, kw) -> (..., K, H', W').

    Channels are summed. ``mode``: 'same' (H, W), 'full' (H + kh - 1, ...), 'valid'
    (H - kh + 1, ...). ``method``: 'direct' (``F.conv2d``), 'fft' (zero-padded FFT), 'auto'
    (FFT above ``AUTO_FFT_TAPS`` kernel taps). Real or complex operands.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if kernels.dim() != 4:
        raise ValueError(f"kernels must be (K, C, kh, kw), got shape {tuple(kernels.shape)}")
    if x.shape[-3] != kernels.shape[1]:
        raise ValueError(f"input has {x.shape[-3]} channels, kernels expect {kernels.shape[1]}")
    lead = x.shape[:-3]
    xb = x.reshape(-1, *x.shape[-3:])
    if method == "auto":
        method = "fft" if kernels.shape[-1] * kernels.shape[-2] > AUTO_FFT_TAPS else "direct"
    if method == "direct":
        if xb.dtype != kernels.dtype and not (xb.is_complex() or kernels.is_complex()):
            kernels = kernels.to(xb.dtype)
        out = _direct_any(xb, kernels, mode)
    elif method == "fft":
        out = _fft(xb, kernels, mode)
    else:
        raise ValueError(f"method must be 'auto', 'direct' or 'fft', got {method!r}")
    return out.reshape(*lead, *out.shape[-3:])


def incoherent_conv(intensity: torch.Tensor, psfs: torch.Tensor, *, mode: str = "same",
                    method: str = "auto") -> torch.Tensor:
    """Image intensities (..., C, H, W) through K intensity PSFs (K, C, kh, kw) -> (..., K, H', W')."""
    return convolve2d(intensity, psfs, mode=mode, method=method)


def coherent_conv(field: torch.Tensor, kernels: torch.Tensor, *, mode: str = "same",
                  method: str = "auto") -> torch.Tensor:
    """Coherent imaging: complex fields convolved with complex amplitude kernels (no |.|^2)."""
    return convolve2d(field, kernels, mode=mode, method=method)


def split_signed(kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A signed kernel as two non-negative PSFs: ``k = relu(k) - relu(-k)``."""
    return torch.relu(kernels), torch.relu(-kernels)


def signed_to_pairs(kernels: torch.Tensor) -> torch.Tensor:
    """(K, ...) signed kernels -> (2K, ...) non-negative PSFs: all positive parts, then negative."""
    pos, neg = split_signed(kernels)
    return torch.cat([pos, neg], dim=0)


def subtract_pairs(captures: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Digital subtraction after capture: first half of ``dim`` minus second half."""
    n = captures.shape[dim]
    if n % 2:
        raise ValueError(f"signed pairs need an even count along dim {dim}, got {n}")
    pos, neg = captures.split(n // 2, dim=dim)
    return pos - neg
