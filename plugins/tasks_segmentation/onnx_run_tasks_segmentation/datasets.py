"""Segmentation datasets as optical intensities and masks, split into train/val/test.

Every loader returns :class:`onnx_run.tasks.datasets.DatasetSplits` whose ``x`` are float32
(N, C, H, W) intensities in [0, 1] (the core's ``to_intensity``: bilinear antialiased resize,
luminance for grey) and ``y`` int64 masks (N, H, W) with 0 = background, 1 = foreground,
resized with nearest neighbour so they stay binary. Nothing is downloaded.

Layouts (docs/segmentation.md):

- ``shapes``: generated (see ``shapes.py``), ``num_images`` of them, seeded.
- ``carvana``: ``data_dir/train/<id>.jpg`` + ``data_dir/train_masks/<id>_mask.gif`` (Kaggle),
  or ``data_dir/images/<id>.<ext>`` + ``data_dir/masks/<id>_mask.gif | <id>.<ext>``. Images of
  the same car (``<car>_<view>``) are kept in one split, so no car is both trained and tested.
- ``folder``: ``data_dir/images/<name>.<png|jpg|...>`` + ``data_dir/masks/<name>.<png|...>``,
  any nonzero mask value is foreground.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import TensorDataset

from onnx_run.errors import UserError
from onnx_run.tasks.datasets import DatasetSplits, to_intensity

CLASSES: tuple[str, ...] = ("background", "foreground")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
#: mask files must be lossless (JPEG would smear the 0/1 edges)
MASK_EXTENSIONS: tuple[str, ...] = (".png", ".gif", ".bmp", ".tif", ".tiff")

CARVANA_LAYOUT = ("expected data_dir/train/<id>.jpg with data_dir/train_masks/<id>_mask.gif (Kaggle Carvana), "
                  "or data_dir/images/<id>.<jpg|png> with data_dir/masks/<id>_mask.gif or <id>.<png|gif>")
FOLDER_LAYOUT = ("expected data_dir/images/<name>.<png|jpg|...> with data_dir/masks/<name>.<png|gif|bmp|tif> "
                 "(same <name>; any nonzero mask pixel is foreground)")


# ----------------------------------------------------------------------------- splitting


def split_indices(n: int, groups: Sequence[str] | None, val_fraction: float, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test indices; samples sharing a group name stay in one split.

    Whole groups are drawn in a random order into test, then val, until each holds its
    fraction of the samples (at least one group each). With fewer than three groups the
    samples are split one by one.
    """
    if n < 3:
        raise UserError(f"the dataset has {n} image(s); need at least 3 to split into train/val/test")
    rng = np.random.default_rng(int(seed))
    if groups is None or len(set(groups)) < 3:
        groups = [str(i) for i in range(n)]
    names = sorted(set(groups))
    order = [names[i] for i in rng.permutation(len(names))]
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    parts: list[list[int]] = [[], []]  # test, val
    pos = 0
    for part, fraction in zip(parts, (test_fraction, val_fraction)):
        target = max(1, round(fraction * n))
        while pos < len(order) - 1 and (not part or len(part) < target):
            part += members[order[pos]]
            pos += 1
    train = [i for g in order[pos:] for i in members[g]]
    if not train:
        raise UserError(f"the dataset has {n} images in {len(names)} groups: too few to leave any for training")
    test, val = parts
    return np.sort(np.array(train)), np.sort(np.array(val)), np.sort(np.array(test))


def make_splits(x: torch.Tensor, y: torch.Tensor, idx: tuple[np.ndarray, np.ndarray, np.ndarray], *,
                name: str, channels: int, image_size: tuple[int, int]) -> DatasetSplits:
    train, val, test = (torch.as_tensor(i, dtype=torch.long) for i in idx)
    return DatasetSplits(
        train=TensorDataset(x[train], y[train]), val=TensorDataset(x[val], y[val]),
        test=TensorDataset(x[test], y[test]), classes=CLASSES, name=name, channels=channels,
        image_size=tuple(image_size),
    )


# ----------------------------------------------------------------------------- files


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


def _require_dir(path: Path, dataset: str, layout: str) -> Path:
    if not path.is_dir():
        raise UserError(f"dataset {dataset!r}: folder {path} not found; {layout}")
    return path


def find_pairs(image_dir: Path, mask_dir: Path, mask_names, dataset: str, layout: str) -> list[tuple[Path, Path]]:
    """Match every image to exactly one mask (``mask_names(stem)`` lists candidate names, in
    order of preference); images without a mask or masks without an image are errors."""
    _require_dir(image_dir, dataset, layout)
    _require_dir(mask_dir, dataset, layout)
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


def carvana_pairs(data_dir: Path) -> list[tuple[Path, Path]]:
    """Image/mask pairs of a Carvana folder in either accepted layout."""
    data_dir = _require_dir(Path(data_dir).expanduser(), "carvana", CARVANA_LAYOUT)

    def names(stem: str) -> list[str]:
        return [f"{stem}_mask.gif", f"{stem}_mask.png"] + [stem + e for e in MASK_EXTENSIONS]

    if (data_dir / "train").is_dir() or (data_dir / "train_masks").is_dir():
        return find_pairs(data_dir / "train", data_dir / "train_masks", names, "carvana", CARVANA_LAYOUT)
    if (data_dir / "images").is_dir() or (data_dir / "masks").is_dir():
        return find_pairs(data_dir / "images", data_dir / "masks", names, "carvana", CARVANA_LAYOUT)
    raise UserError(f"dataset 'carvana': {data_dir} has neither train/ + train_masks/ nor images/ + masks/; "
                    f"{CARVANA_LAYOUT}")


def folder_pairs(data_dir: Path) -> list[tuple[Path, Path]]:
    data_dir = _require_dir(Path(data_dir).expanduser(), "folder", FOLDER_LAYOUT)
    return find_pairs(data_dir / "images", data_dir / "masks", lambda stem: [stem + e for e in MASK_EXTENSIONS],
                      "folder", FOLDER_LAYOUT)


def read_pairs(pairs: list[tuple[Path, Path]], size: tuple[int, int], channels: int, dataset: str,
               layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.empty((len(pairs), channels, *size), dtype=torch.float32)
    y = torch.empty((len(pairs), *size), dtype=torch.int64)
    for i, (img, mask) in enumerate(pairs):
        x[i] = read_image(img, size, channels, dataset, layout)
        y[i] = read_mask(mask, size, dataset, layout, image_path=img)
    return x, y


# ----------------------------------------------------------------------------- entry point


def load_segmentation_dataset(name: str, *, image_size: tuple[int, int], channels: int, seed: int,
                              data_dir: str = "", num_images: int = 1000, max_images: int = 0,
                              val_fraction: float = 0.1, test_fraction: float = 0.2) -> DatasetSplits:
    """Load dataset ``name`` (shapes | carvana | folder) as intensities + masks, split by ``seed``.

    ``max_images`` (file datasets; 0 = all) keeps a seeded random subset of the images before
    splitting, e.g. for a quick Carvana run (the split still keeps each car in one split).
    """
    size = (int(image_size[0]), int(image_size[1]))
    if name == "shapes":
        from onnx_run_tasks_segmentation.shapes import generate_shapes

        arr, masks = generate_shapes(int(num_images), int(seed), size)
        x = to_intensity(torch.from_numpy(arr), image_size=size, channels=channels)
        y = torch.from_numpy(masks)
        idx = split_indices(len(y), None, val_fraction, test_fraction, seed)
        return make_splits(x, y, idx, name=name, channels=channels, image_size=size)
    if name == "carvana":
        pairs, layout = carvana_pairs(Path(data_dir)), CARVANA_LAYOUT
        groups = [img.stem.rsplit("_", 1)[0] for img, _ in pairs]  # <car id>_<view 01..16>
    elif name == "folder":
        pairs, layout = folder_pairs(Path(data_dir)), FOLDER_LAYOUT
        groups = None
    else:
        raise UserError(f"task.dataset: {name!r} is unknown; allowed: shapes, carvana, folder")
    if max_images and len(pairs) > max_images:
        keep = np.sort(np.random.default_rng(int(seed)).permutation(len(pairs))[:max_images])
        pairs = [pairs[i] for i in keep]
        groups = [groups[i] for i in keep] if groups is not None else None
    x, y = read_pairs(pairs, size, channels, name, layout)
    idx = split_indices(len(pairs), groups, val_fraction, test_fraction, seed)
    return make_splits(x, y, idx, name=name, channels=channels, image_size=size)
