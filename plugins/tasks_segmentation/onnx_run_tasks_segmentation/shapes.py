"""The embedded ``shapes`` segmentation dataset: textured objects over real textures.

Nothing is downloaded: every texture is an image that ships inside scikit-image's own
distribution (``skimage.data`` files that load without ``pooch``). Each image is a random
crop of a background texture (random zoom, rotation, brightness and contrast), with 1-3
foreground objects of random shape (ellipse, superellipse, polygon, star, smooth blob),
size and rotation, each filled with an object texture or a shaded colour, then a smooth
illumination gradient and sensor noise over everything. 0-1 distractor patch filled with a
*background* texture is pasted too, so "an edge" or "a compact region" alone does not
mean "object": the network has to recognise the fill.

Brightness and contrast are drawn independently for background and objects, so their
intensity distributions overlap and no global threshold separates them. Backgrounds are
mostly muted in colour and objects mostly vivid, with overlap: colour is a per-pixel cue a
network can learn, texture and shape context the rest (see
``metrics.threshold_baseline`` and docs/segmentation.md for the measured baseline).

Masks are exact: a pixel is foreground if and only if its value came from an object fill
(shapes are rasterised without antialiasing, at the output resolution).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

#: textures for backgrounds and distractors (natural scenes / surfaces)
BACKGROUND_TEXTURES: tuple[str, ...] = (
    "brick", "grass", "gravel", "moon", "hubble_deep_field", "rocket", "coffee", "camera", "page", "text",
)  # fmt: skip
#: textures that fill foreground objects
OBJECT_TEXTURES: tuple[str, ...] = ("immunohistochemistry", "chelsea", "astronaut", "retina", "coins", "cell")

SHAPE_KINDS: tuple[str, ...] = ("ellipse", "superellipse", "polygon", "star", "blob")

_NOISE_STD = 0.02  # sensor noise, in units of full-scale intensity
# Saturation ranges of the tints: backgrounds are mostly muted, objects mostly vivid, with
# overlap, so colour is a cue a network can learn but not a rule a threshold can apply.
_BACKGROUND_SATURATION = (0.0, 0.35)
_OBJECT_SATURATION = (0.25, 0.9)
_BACKGROUND_KEEP_COLOUR = 0.3  # chance a background keeps its texture's natural colours


@functools.lru_cache(maxsize=None)
def _texture_pyramid(name: str) -> tuple[np.ndarray, ...]:
    """Float32 RGB (H, W, 3) in [0, 1] at scales 1, 1/2, 1/4, 1/8 (2x2 means).

    Sampling a coarse level when zoomed out avoids aliasing without filtering per sample.
    """
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # e.g. stereo pairs
        img = img[0]
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.float32)
    elif img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        img = img.astype(np.float32)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    levels = [np.ascontiguousarray(img)]
    for _ in range(3):
        a = levels[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        a = a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
        levels.append(np.ascontiguousarray(a))
    return tuple(levels)


def _sample_texture(rng: np.random.Generator, name: str, size: tuple[int, int]) -> np.ndarray:
    """A random rotated, zoomed crop of texture ``name`` as (H, W, 3)."""
    h, w = size
    pyramid = _texture_pyramid(name)
    full = pyramid[0]
    # texture pixels per output pixel, relative to a 64 px output: crops span 1/8 .. 3/4 of the texture
    span = rng.uniform(0.12, 0.75) * min(full.shape[:2])
    step = span / max(h, w)
    level = int(np.clip(np.floor(np.log2(max(step, 1.0))), 0, len(pyramid) - 1))
    tex = pyramid[level]
    step /= 2**level
    th, tw = tex.shape[:2]
    theta = rng.uniform(0, 2 * np.pi)
    cy, cx = rng.uniform(0.3, 0.7) * th, rng.uniform(0.3, 0.7) * tw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy -= (h - 1) / 2
    xx -= (w - 1) / 2
    c, s = np.cos(theta), np.sin(theta)
    ty = cy + step * (c * yy - s * xx)
    tx = cx + step * (s * yy + c * xx)
    out = np.empty((h, w, 3), dtype=np.float32)
    for ch in range(3):
        out[..., ch] = ndimage.map_coordinates(tex[..., ch], [ty, tx], order=1, mode="mirror")
    return out


def _tint(rng: np.random.Generator, saturation: tuple[float, float]) -> np.ndarray:
    """An RGB multiplier of random hue whose saturation lies in ``saturation`` (max channel 1)."""
    hue = rng.uniform(0, 1)
    sat = rng.uniform(*saturation)
    rgb = np.clip(np.abs(np.mod(hue * 6 + np.array([0.0, 4.0, 2.0]), 6) - 3) - 1, 0, 1)  # HSV -> RGB, v = 1
    return (1 - sat + sat * rgb).astype(np.float32)


def _jitter(rng: np.random.Generator, t: np.ndarray, *, saturation: tuple[float, float],
            keep_colour: float) -> np.ndarray:
    """Grey-and-tint (or keep the texture's own colours with probability ``keep_colour``), then a
    random contrast and mean brightness: the same texture can come out dark or bright."""
    if rng.random() >= keep_colour:
        t = t.mean(axis=2, keepdims=True) * _tint(rng, saturation)
    m = t.mean(axis=(0, 1), keepdims=True)
    contrast = rng.uniform(0.6, 1.4)
    target = rng.uniform(0.2, 0.8)
    return (t - m) * contrast + m * (target / max(float(m.mean()), 1e-3))


def _colour_fill(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A flat random colour with a linear shading gradient and fine grain."""
    h, w = size
    colour = _tint(rng, _OBJECT_SATURATION) * rng.uniform(0.2, 0.9)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(a) * (yy / h - 0.5) + np.sin(a) * (xx / w - 0.5)) * rng.uniform(0.0, 0.6)
    grain = rng.normal(0.0, rng.uniform(0.02, 0.08), size=(h, w, 1)).astype(np.float32)
    return colour[None, None, :] * (1.0 + ramp[..., None]) + grain


def _shape_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A random shape (kind, extent 20-60 % of the image side, rotation, position) as bool (H, W)."""
    h, w = size
    side = min(h, w)
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    radius = rng.uniform(0.1, 0.3) * side  # half-extent in pixels
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy + 0.5 - cy, xx + 0.5 - cx  # pixel centres
    c, s = np.cos(theta), np.sin(theta)
    u = (c * xx + s * yy) / radius
    v = (-s * xx + c * yy) / radius
    aspect = rng.uniform(0.45, 1.0)
    if kind == "ellipse":
        return u * u + (v / aspect) ** 2 <= 1.0
    if kind == "superellipse":
        return np.abs(u) ** 4 + np.abs(v / aspect) ** 4 <= 1.0
    r = np.hypot(u, v / aspect)
    phi = np.arctan2(v / aspect, u)
    if kind == "polygon":  # convex polygon: support function of 3-8 vertices on the unit circle
        k = int(rng.integers(3, 9))
        # evenly spread angles, jittered: the polygon always contains its centre
        verts = (np.arange(k) + rng.uniform(-0.35, 0.35, size=k)) * 2 * np.pi / k + rng.uniform(0, 2 * np.pi)
        pts = np.stack([np.cos(verts), np.sin(verts)], 1)
        inside = np.ones(u.shape, dtype=bool)
        for i in range(k):
            p, q = pts[i], pts[(i + 1) % k]
            normal = np.array([q[1] - p[1], p[0] - q[0]])
            inside &= (u - p[0]) * normal[0] + (v / aspect - p[1]) * normal[1] <= 0
        return inside
    if kind == "star":
        k = int(rng.integers(4, 8))
        inner = rng.uniform(0.35, 0.65)
        t = np.mod(phi, 2 * np.pi / k) / (2 * np.pi / k)
        return r <= inner + (1 - inner) * np.abs(2 * t - 1)
    # smooth blob: radius modulated by a few low harmonics
    rad = np.ones_like(phi)
    for harmonic in range(2, 5):
        rad += rng.uniform(0.0, 0.25 / harmonic * 2) * np.cos(harmonic * phi + rng.uniform(0, 2 * np.pi))
    return r <= rad / rad.max()


def render_shapes_sample(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """One sample and its layers, for the dataset and for tests of mask exactness.

    Returns ``image`` (H, W, 3) float32 in [0, 1], ``mask`` (H, W) bool, and the layers it
    was composited from: ``foreground`` and ``background`` (H, W, 3) before illumination and
    noise, ``gain`` (H, W, 1) and ``noise`` (H, W, 3); ``image`` equals
    ``clip(where(mask, foreground, background) * gain + noise, 0, 1)`` exactly.
    """
    h, w = size
    def background_layer() -> np.ndarray:
        tex = _sample_texture(rng, BACKGROUND_TEXTURES[rng.integers(len(BACKGROUND_TEXTURES))], size)
        return _jitter(rng, tex, saturation=_BACKGROUND_SATURATION, keep_colour=_BACKGROUND_KEEP_COLOUR)

    background = background_layer()
    for _ in range(int(rng.integers(0, 2))):  # a distractor: a background-textured patch, not an object
        background = np.where(_shape_mask(rng, size)[..., None], background_layer(), background)
    foreground = np.zeros_like(background)
    mask = np.zeros((h, w), dtype=bool)
    min_px = max(4, h * w // 100)  # objects cover at least 1 % of the image (small images: 4 px)
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            shape = _shape_mask(rng, size)
            if shape.sum() >= min_px:
                break
        if rng.random() < 0.5:
            tex = _sample_texture(rng, OBJECT_TEXTURES[rng.integers(len(OBJECT_TEXTURES))], size)
            fill = _jitter(rng, tex, saturation=_OBJECT_SATURATION, keep_colour=0.0)
        else:
            fill = _colour_fill(rng, size)
        foreground = np.where(shape[..., None], fill, foreground)
        mask |= shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    level = rng.uniform(0.7, 1.2)
    slope = rng.uniform(0.0, 0.5)
    gain = level * (1.0 + slope * (np.cos(a) * (yy / h - 0.5) + np.sin(a) * (xx / w - 0.5)))
    gain = gain[..., None].astype(np.float32)
    noise = rng.normal(0.0, _NOISE_STD, size=(h, w, 3)).astype(np.float32)
    foreground = foreground.astype(np.float32)
    background = background.astype(np.float32)
    image = np.clip(np.where(mask[..., None], foreground, background) * gain + noise, 0.0, 1.0)
    return {"image": image, "mask": mask, "foreground": foreground, "background": background,
            "gain": gain, "noise": noise}


def generate_shapes(n: int, seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images float32 (N, 3, H, W) in [0, 1] and masks int64 (N, H, W) in {0, 1}.

    Image i depends only on (seed, i), so a larger ``n`` extends a smaller one.
    """
    h, w = int(size[0]), int(size[1])
    images = np.empty((n, 3, h, w), dtype=np.float32)
    masks = np.empty((n, h, w), dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([int(seed), i])
        s = render_shapes_sample(rng, (h, w))
        images[i] = s["image"].transpose(2, 0, 1)
        masks[i] = s["mask"]
    return images, masks
