"""Reading paired image/mask files, shared by every file-based segmentation format.

A format (Carvana, the plain folder layout) only says where its images and masks are and
how a mask is named after its image (a :class:`PairFormat`); matching, reading, resizing
and the errors for unmatched or broken files are the same for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import attrs
import numpy as np
import torch

from onnx_run.errors import UserError
from onnx_run.tasks.datasets import to_intensity

__all__ = ["IMAGE_EXTENSIONS", "MASK_EXTENSIONS", "PairFormat", "find_pairs", "read_image", "read_mask",
           "read_pairs", "require_dir"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
#: mask files must be lossless (JPEG would smear the 0/1 edges)
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".gif", ".bmp", ".tif", ".tiff")


@attrs.frozen(kw_only=True)
class PairFormat:
    """A file-based segmentation dataset: ``pairs(data_dir)`` lists its (image, mask) files;
    ``groups(pairs)``, if given, names each image's group (all of a group stay in one split);
    ``layout`` is the expected layout that error messages end with."""

    name: str
    layout: str
    pairs: Callable[[Path], list[tuple[Path, Path]]]
    groups: Callable[[list[tuple[Path, Path]]], list[str]] | None = None


def _listing(folder: Path, exts: Sequence[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts)


def read_image(path: Path, size: tuple[int, int], channels: int, dataset: str, layout: str) -> torch.Tensor:
    """One image file -> (channels, H, W) float32 intensities in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":  # decode at the smallest power-of-two scale >= size: much faster
                img.draft("RGB", (size[1], size[0]))
            mode = img.mode
            if mode.startswith("I;16") or mode == "I":
                arr = np.asarray(img, dtype=np.float32) / 65535.0
            elif mode in ("1", "L", "LA", "La", "F"):
                arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise UserError(f"dataset {dataset!r}: file {path} is not a readable image ({type(exc).__name__}); "
                        f"{layout}") from None
    arr = np.clip(np.nan_to_num(arr), 0.0, 1.0)
    t = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
    return to_intensity(t[None], image_size=size, channels=channels)[0]


def read_mask(path: Path, size: tuple[int, int], dataset: str, layout: str,
              image_path: Path | None = None) -> torch.Tensor:
    """One mask file -> (H, W) int64 in {0, 1}: nonzero = foreground, resized by nearest neighbour.

    Palette images (Carvana's GIFs) are converted through their palette to grey, so index 0
    drawn black is background whatever the palette order.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if image_path is not None:
                with Image.open(image_path) as im:
                    if im.size != img.size:
                        raise UserError(
                            f"dataset {dataset!r}: mask {path} is {img.size[0]}x{img.size[1]} px but its image "
                            f"{image_path} is {im.size[0]}x{im.size[1]}; a mask must have its image's size")
            if img.mode not in ("L", "I", "F") and not img.mode.startswith("I;16"):
                img = img.convert("L")
            img = img.resize((size[1], size[0]), Image.NEAREST)
            arr = np.asarray(img)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"dataset {dataset!r}: mask {path} is not a readable image ({type(exc).__name__}); "
                        f"{layout}") from None
    return torch.from_numpy((arr != 0).astype(np.int64))


def require_dir(path: Path, dataset: str, layout: str) -> Path:
    """``path`` if it is a folder, else a UserError naming it and the expected layout."""
    if not path.is_dir():
        raise UserError(f"dataset {dataset!r}: folder {path} not found; {layout}")
    return path


def find_pairs(image_dir: Path, mask_dir: Path, mask_names, dataset: str, layout: str) -> list[tuple[Path, Path]]:
    """Match every image to exactly one mask (``mask_names(stem)`` lists candidate names, in
    order of preference); images without a mask or masks without an image are errors."""
    require_dir(image_dir, dataset, layout)
    require_dir(mask_dir, dataset, layout)
    images = _listing(image_dir, IMAGE_EXTENSIONS)
    if not images:
        raise UserError(f"dataset {dataset!r}: folder {image_dir} holds no images; {layout}")
    masks = {p.name: p for p in _listing(mask_dir, MASK_EXTENSIONS)}
    pairs, used, missing = [], set(), []
    for img in images:
        match = next((masks[m] for m in mask_names(img.stem) if m in masks), None)
        if match is None:
            missing.append(img)
        else:
            pairs.append((img, match))
            used.add(match.name)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"dataset {dataset!r}: image {missing[0]} has no mask in {mask_dir}{more}; {layout}")
    extra = sorted(set(masks) - used)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise UserError(f"dataset {dataset!r}: mask {mask_dir / extra[0]} matches no image in {image_dir}{more}; "
                        f"{layout}")
    return pairs


def read_pairs(pairs: list[tuple[Path, Path]], size: tuple[int, int], channels: int, dataset: str,
               layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read every (image, mask) pair into (N, channels, H, W) intensities and (N, H, W) masks."""
    x = torch.empty((len(pairs), channels, *size), dtype=torch.float32)
    y = torch.empty((len(pairs), *size), dtype=torch.int64)
    for i, (img, mask) in enumerate(pairs):
        x[i] = read_image(img, size, channels, dataset, layout)
        y[i] = read_mask(mask, size, dataset, layout, image_path=img)
    return x, y
