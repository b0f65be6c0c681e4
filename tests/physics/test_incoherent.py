"""Incoherent/coherent convolution: definition, FFT = direct, linear not circular, signed pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnx_run.physics import convolve2d, incoherent_conv, signed_to_pairs, split_signed, subtract_pairs


def reference_conv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """y[i, j] = sum_mn x[m, n] k[i - m + c, j - n + c] (same size, centre c = kh // 2)."""
    h, w = x.shape
    kh, kw = k.shape
    out = np.zeros((h, w), dtype=np.result_type(x, k))
    for i in range(h):
        for j in range(w):
            for m in range(h):
                for n in range(w):
                    a, b = i - m + kh // 2, j - n + kw // 2
                    if 0 <= a < kh and 0 <= b < kw:
                        out[i, j] += x[m, n] * k[a, b]
    return out


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_matches_the_definition_with_an_asymmetric_kernel(method):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 9, 8, generator=gen, dtype=torch.float64)
    k = torch.rand(1, 1, 3, 4, generator=gen, dtype=torch.float64)  # even width: centre index 2
    got = incoherent_conv(x, k, method=method)[0, 0].numpy()
    assert np.allclose(got, reference_conv(x[0, 0].numpy(), k[0, 0].numpy()), atol=1e-12)


@pytest.mark.parametrize("mode", ["same", "full", "valid"])
def test_fft_equals_direct_for_many_psfs_and_channels(mode):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 3, 20, 17, generator=gen, dtype=torch.float64)  # extra leading dim
    psfs = torch.rand(5, 3, 7, 5, generator=gen, dtype=torch.float64)
    a = incoherent_conv(x, psfs, mode=mode, method="direct")
    b = incoherent_conv(x, psfs, mode=mode, method="fft")
    expect = {"same": (20, 17), "full": (26, 21), "valid": (14, 13)}[mode]
    assert a.shape == (2, 3, 5, *expect)
    assert torch.allclose(a, b, atol=1e-12)


def test_convolution_is_linear_not_circular():
    x = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    x[0, 0, 5, 31] = 1.0  # at the right edge
    psf = torch.ones(1, 1, 9, 9, dtype=torch.float64)
    out = incoherent_conv(x, psf, method="fft")
    assert float(out[0, 0, :, :8].abs().max()) < 1e-12  # nothing wrapped to the left edge
    assert float(out.sum()) == pytest.approx(5 * 9)  # the light that stays inside the window


def test_coherent_convolution_with_complex_kernels():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, 7, 6, generator=gen, dtype=torch.complex128)
    k = torch.randn(1, 1, 3, 3, generator=gen, dtype=torch.complex128)
    ref = reference_conv(x[0, 0].numpy(), k[0, 0].numpy())
    for method in ("direct", "fft"):
        assert np.allclose(convolve2d(x, k, method=method)[0, 0].numpy(), ref, atol=1e-12)
    real_x = x.real.contiguous()
    assert np.allclose(convolve2d(real_x, k)[0, 0].numpy(), reference_conv(real_x[0, 0].numpy(), k[0, 0].numpy()))


def test_signed_kernels_as_pairs_of_non_negative_psfs():
    gen = torch.Generator().manual_seed(3)
    k = torch.randn(4, 1, 5, 5, generator=gen, dtype=torch.float64)
    pos, neg = split_signed(k)
    assert bool((pos >= 0).all() and (neg >= 0).all()) and torch.equal(pos - neg, k)
    x = torch.rand(2, 1, 16, 16, generator=gen, dtype=torch.float64)
    captures = incoherent_conv(x, signed_to_pairs(k))
    assert captures.shape == (2, 8, 16, 16) and bool((captures >= 0).all())
    assert torch.allclose(subtract_pairs(captures), incoherent_conv(x, k), atol=1e-12)
