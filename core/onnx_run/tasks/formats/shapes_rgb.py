"""The generated ``shapes-rgb`` set: one shape per image, in a colour unrelated to its class.

Needs no files: every image, colour and noise value comes from the seed, and images are
rendered directly at the requested size (sharper than rendering small and upsampling).
The class is the geometry, never the colour, but hue varies between images so that each
wavelength channel of polychromatic optics carries signal.
"""

from __future__ import annotations

import numpy as np

from onnx_run.tasks.formats.reader import DatasetReader, FormatData

__all__ = ["READERS", "SHAPES_RGB_CLASSES", "SHAPES_RGB_COUNT"]

SHAPES_RGB_CLASSES: tuple[str, ...] = (
    "circle", "ring", "square", "triangle", "cross", "bar", "star", "half-disc",
)  # fmt: skip

#: Number of generated ``shapes-rgb`` images (before splitting), balanced over the classes.
SHAPES_RGB_COUNT = 3000


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB for arrays of shape (N,), returning (N, 3)."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sectors = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    table = np.stack([np.stack(c, axis=-1) for c in sectors])
    return table[i, np.arange(len(h))]


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape in local coordinates where its outer radius is 1."""
    r2 = u * u + v * v
    if kind == "circle":
        return r2 <= 1.0
    if kind == "ring":
        return (r2 <= 1.0) & (r2 >= 0.5**2)
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.72
    if kind == "triangle":  # equilateral, circumradius 1 = inradius 0.5
        inside = np.ones(u.shape, dtype=bool)
        for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(a) + v * np.sin(a) <= 0.5
        return inside
    if kind == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0))
    if kind == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.25)
    if kind == "star":  # five sharp points at radius 1, valleys at 0.4
        sector = 2 * np.pi / 5
        t = np.mod(np.arctan2(v, u), sector) / sector
        return np.sqrt(r2) <= 0.4 + 0.6 * np.abs(2 * t - 1)
    if kind == "half-disc":
        return (r2 <= 1.0) & (v >= -0.2)
    raise AssertionError(kind)


def _generate_shapes_rgb(n: int, seed: int, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` shape images, float32 (N, 3, H, W) in [0, 1], with balanced labels.

    Every random choice comes from ``seed``. Shape colour (any hue), background colour and
    noise are drawn independently of the class, so a classifier has to use geometry; but
    hue differs between images, so each wavelength channel carries signal. Rendered with
    2x2 supersampling for antialiased edges, in coordinates relative to the shorter side so
    shapes stay round in non-square images.
    """
    rng = np.random.default_rng(seed)
    k = len(SHAPES_RGB_CLASSES)
    labels = rng.permutation(np.arange(n) % k).astype(np.int64)
    angle = rng.uniform(0.0, 2 * np.pi, n)
    radius = rng.uniform(0.4, 0.75, n)  # outer radius as a fraction of half the shorter side
    margin = np.clip(1.0 - 1.05 * radius, 0.0, None)
    cx, cy = rng.uniform(-1.0, 1.0, (2, n)) * margin
    fg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.4, 1.0, n), rng.uniform(0.7, 1.0, n))
    bg = rng.uniform(0.0, 0.15, (n, 3))

    h, w = image_size
    ss = 2
    half = min(h, w) / 2.0
    ys = (((np.arange(h * ss) + 0.5) / ss - h / 2.0) / half).astype(np.float32)
    xs = (((np.arange(w * ss) + 0.5) / ss - w / 2.0) / half).astype(np.float32)
    # float32 geometry: twice as fast, and far finer than a pixel.
    angle, radius, cx, cy = (a.astype(np.float32) for a in (angle, radius, cx, cy))
    fg, bg = fg.astype(np.float32), bg.astype(np.float32)
    out = np.empty((n, 3, h, w), dtype=np.float32)
    chunk = max(1, 2**22 // (h * w * ss * ss))
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        m = sl.stop - sl.start
        c, s = np.cos(angle[sl])[:, None, None], np.sin(angle[sl])[:, None, None]
        dx = xs[None, None, :] - cx[sl, None, None]
        dy = ys[None, :, None] - cy[sl, None, None]
        rad = radius[sl, None, None]
        u = (c * dx + s * dy) / rad
        v = (-s * dx + c * dy) / rad
        mask = np.zeros((m, h * ss, w * ss), dtype=bool)
        lab = labels[sl]
        for cls, kind in enumerate(SHAPES_RGB_CLASSES):
            idx = np.flatnonzero(lab == cls)
            if idx.size:
                mask[idx] = _shape_mask(kind, u[idx], v[idx])
        hits = mask.reshape(m, h, ss, w, ss).sum(axis=(2, 4), dtype=np.uint8)
        cover = hits[:, None] * np.float32(1 / ss**2)
        img = bg[sl, :, None, None] * (1 - cover) + fg[sl, :, None, None] * cover
        img += np.float32(0.03) * rng.standard_normal(img.shape, dtype=np.float32)
        out[sl] = np.clip(img, 0.0, 1.0)
    return out, labels


def _read(data_dir: None, *, seed: int, image_size: tuple[int, int], **_) -> FormatData:
    import torch  # here, not above: listing the dataset names imports no torch

    arr, labels = _generate_shapes_rgb(SHAPES_RGB_COUNT, seed, image_size)
    return FormatData(images=torch.from_numpy(arr), labels=labels, classes=SHAPES_RGB_CLASSES)


READERS: tuple[DatasetReader, ...] = (
    DatasetReader(
        name="shapes-rgb",
        description="generated RGB shapes (circle, ring, square, ...) in random colours, sizes, "
        "positions and rotations; the class is the shape, never the colour",
        needs_data_dir=False,
        official_test=False,
        read=_read,
    ),
)
