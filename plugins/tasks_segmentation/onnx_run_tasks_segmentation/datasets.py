"""Segmentation datasets as optical intensities and masks, split into train/val/test.

Every loader returns :class:`onnx_run.tasks.datasets.DatasetSplits` whose ``x`` are float32
(N, C, H, W) intensities in [0, 1] (the core's ``to_intensity``: bilinear antialiased resize,
luminance for grey) and ``y`` int64 masks (N, H, W) with 0 = background, 1 = foreground,
resized with nearest neighbour so they stay binary. Nothing is downloaded.

Layouts (docs/segmentation.md), one module each:

- ``shapes``: generated (see ``shapes.py``), ``num_images`` of them, seeded.
- ``carvana`` (``carvana.py``): ``data_dir/train/<id>.jpg`` + ``data_dir/train_masks/<id>_mask.gif``
  (Kaggle), or ``data_dir/images/<id>.<ext>`` + ``data_dir/masks/<id>_mask.gif | <id>.<ext>``.
  Images of the same car (``<car>_<view>``) are kept in one split, so no car is both trained
  and tested.
- ``folder`` (``folder.py``): ``data_dir/images/<name>.<png|jpg|...>`` +
  ``data_dir/masks/<name>.<png|...>``, any nonzero mask value is foreground.

The file formats share ``pairs.py`` (matching and reading image/mask files) and are listed
in :data:`PAIR_FORMATS`; splitting is in ``splitting.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from onnx_run.errors import UserError
from onnx_run.tasks.datasets import DatasetSplits, to_intensity
from onnx_run_tasks_segmentation.carvana import CARVANA, CARVANA_LAYOUT, carvana_pairs
from onnx_run_tasks_segmentation.folder import FOLDER, FOLDER_LAYOUT, folder_pairs
from onnx_run_tasks_segmentation.pairs import (IMAGE_EXTENSIONS, MASK_EXTENSIONS, PairFormat, find_pairs,
                                               read_image, read_mask, read_pairs)
from onnx_run_tasks_segmentation.splitting import split_indices

__all__ = ["CARVANA_LAYOUT", "CLASSES", "FOLDER_LAYOUT", "IMAGE_EXTENSIONS", "MASK_EXTENSIONS", "PAIR_FORMATS",
           "PairFormat", "carvana_pairs", "find_pairs", "folder_pairs", "load_segmentation_dataset",
           "make_splits", "read_image", "read_mask", "read_pairs", "split_indices"]

CLASSES: tuple[str, ...] = ("background", "foreground")

#: the file-based datasets by name (``shapes`` is generated, not read from files)
PAIR_FORMATS: dict[str, PairFormat] = {f.name: f for f in (CARVANA, FOLDER)}


def make_splits(x: torch.Tensor, y: torch.Tensor, idx: tuple[np.ndarray, np.ndarray, np.ndarray], *,
                name: str, channels: int, image_size: tuple[int, int]) -> DatasetSplits:
    """The core's DatasetSplits of images ``x`` and masks ``y`` for (train, val, test) indices."""
    train, val, test = (torch.as_tensor(i, dtype=torch.long) for i in idx)
    return DatasetSplits(
        train=TensorDataset(x[train], y[train]), val=TensorDataset(x[val], y[val]),
        test=TensorDataset(x[test], y[test]), classes=CLASSES, name=name, channels=channels,
        image_size=tuple(image_size),
    )


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
    fmt = PAIR_FORMATS.get(name)
    if fmt is None:
        raise UserError(f"task.dataset: {name!r} is unknown; allowed: shapes, {', '.join(PAIR_FORMATS)}")
    pairs = fmt.pairs(Path(data_dir))
    groups = fmt.groups(pairs) if fmt.groups is not None else None
    if max_images and len(pairs) > max_images:
        keep = np.sort(np.random.default_rng(int(seed)).permutation(len(pairs))[:max_images])
        pairs = [pairs[i] for i in keep]
        groups = [groups[i] for i in keep] if groups is not None else None
    x, y = read_pairs(pairs, size, channels, name, fmt.layout)
    idx = split_indices(len(pairs), groups, val_fraction, test_fraction, seed)
    return make_splits(x, y, idx, name=name, channels=channels, image_size=size)
