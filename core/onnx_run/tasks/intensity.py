"""Preprocessing images into the intensities an optical frontend sees.

An optical frontend convolves *light*: its input is a non-negative intensity image of a
fixed size with one (monochromatic) or three (R, G, B wavelengths) channels. Every
dataset format goes through :func:`to_intensity`, so all of them (and the segmentation
plugin) resize and colour-convert in exactly the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from onnx_run.errors import UserError

__all__ = ["check_channels", "check_image_size", "to_intensity", "uint8_to_intensity"]

# RGB -> grey weights (ITU-R BT.601, the same as PIL's "L" conversion).
_LUMINANCE = (0.299, 0.587, 0.114)

# Images preprocessed per chunk so that converting e.g. all of CIFAR-10 never holds a
# second full-size float copy in memory.
_CHUNK = 2048


def check_image_size(image_size) -> tuple[int, int]:
    """Validate the user's ``image_size`` (two positive ints) and return it as a tuple."""
    try:
        h, w = image_size
    except (TypeError, ValueError):
        raise UserError(
            f"image_size {image_size!r} is not a pair; "
            "expected two positive integers (height, width), e.g. [28, 28]"
        ) from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise UserError(
                f"image_size {image_size!r} is invalid; "
                "expected two positive integers (height, width), e.g. [28, 28]"
            )
    return int(h), int(w)


def check_channels(channels) -> int:
    """Validate ``channels``: 1 = monochromatic intensity, 3 = R, G, B wavelengths."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise UserError(f"channels {channels!r} is invalid; allowed: 1 (grey intensity) or 3 (RGB)")
    return int(channels)


def to_intensity(images: Tensor, *, image_size, channels: int) -> Tensor:
    """Resize and colour-convert images in ``[0, 1]`` to the frontend's input intensities.

    ``images`` is ``(N, C0, H0, W0)`` with ``C0`` 1 (grey) or 3 (RGB), float in ``[0, 1]``
    (uint8 is accepted and divided by 255). Resizing is bilinear with antialiasing so that
    downsampling averages instead of aliasing; RGB -> grey uses the luminance weights
    0.299/0.587/0.114 and grey -> RGB repeats the channel (a grey object reflects all
    wavelengths equally). The result is float32 ``(N, channels, H, W)`` clamped to
    ``[0, 1]``, because light intensity can't be negative.
    """
    h, w = check_image_size(image_size)
    channels = check_channels(channels)
    if not isinstance(images, Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"to_intensity expects images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.to(torch.float32) / 255.0
    elif images.is_floating_point():
        x = images.to(torch.float32)
    else:
        raise ValueError(f"to_intensity expects float images in [0, 1] or uint8, got dtype {images.dtype}")
    if x.shape[1] == 3 and channels == 1:  # convert first: resizing one channel is cheaper
        weights = torch.tensor(_LUMINANCE, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
    if tuple(x.shape[-2:]) != (h, w) and x.shape[0] > 0:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    elif x.shape[0] == 0:
        x = x.new_zeros((0, x.shape[1], h, w))
    if x.shape[1] == 1 and channels == 3:  # repeat last: resize one channel, not three
        x = x.expand(-1, 3, -1, -1)
    return x.clamp(0.0, 1.0).contiguous()


def uint8_to_intensity(images: np.ndarray, *, image_size, channels: int, channels_last: bool) -> Tensor:
    """Preprocess a big uint8 array in chunks into one preallocated float32 tensor.

    ``images`` is ``(N, H, W)`` (grey), ``(N, H, W, 3)`` (``channels_last``) or
    ``(N, C, H, W)``. Chunking keeps peak memory near the size of the result.
    """
    h, w = check_image_size(image_size)
    if images.ndim == 3:
        images = images[:, None]
    elif channels_last:
        images = images.transpose(0, 3, 1, 2)
    out = torch.empty((images.shape[0], channels, h, w), dtype=torch.float32)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + _CHUNK]))
        out[start : start + chunk.shape[0]] = to_intensity(chunk, image_size=(h, w), channels=channels)
    return out
