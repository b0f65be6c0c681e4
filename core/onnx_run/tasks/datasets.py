"""Image classification datasets, preprocessed to the intensities an optical frontend sees.

An optical frontend convolves *light*: its input is a non-negative intensity image of a
fixed size with either one (monochromatic) or three (R, G, B wavelengths) channels.
Every dataset here is therefore returned as float32 ``(N, C, H, W)`` tensors in
``[0, 1]`` at the requested ``image_size`` and ``channels``, already split into
train / val / test so that every caller (training, distillation, evaluation) sees the
same samples for the same seed.

Nothing is ever downloaded: ``digits`` ships with scikit-learn, ``shapes-rgb`` is
generated, and ``mnist``, ``fashion-mnist``, ``cifar10`` and ``folder`` read files the
user already has in ``task.data_dir`` (formats documented in ``docs/datasets.md``).

This module is the public entry point. Each format lives in its own module of
:mod:`onnx_run.tasks.formats` and is found through the reader registry
(:mod:`onnx_run.tasks.formats.registry`); preprocessing is in
:mod:`onnx_run.tasks.intensity` and splitting in :mod:`onnx_run.tasks.splitting`, so
:func:`load_classification_dataset` treats every format the same way.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from onnx_run.errors import UserError
from onnx_run.rundir import check_data_dir
from onnx_run.tasks.formats.cifar10 import CIFAR10_CLASSES, read_cifar10_batches, read_cifar10_class_names
from onnx_run.tasks.formats.folder import IMAGE_EXTENSIONS, read_image_folder
from onnx_run.tasks.formats.idx import FASHION_MNIST_CLASSES, MNIST_FILES, read_idx
from onnx_run.tasks.formats.reader import DatasetReader, FormatData
from onnx_run.tasks.formats.registry import DESCRIPTIONS, find_reader, register_reader
from onnx_run.tasks.formats.shapes_rgb import SHAPES_RGB_CLASSES, SHAPES_RGB_COUNT
from onnx_run.tasks.intensity import check_channels, check_image_size, to_intensity, uint8_to_intensity
from onnx_run.tasks.splitting import cap_train, check_fractions, split_indices

__all__ = [
    "CLASSIFICATION_DATASETS",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "MNIST_FILES",
    "SHAPES_RGB_CLASSES",
    "SHAPES_RGB_COUNT",
    "DatasetReader",
    "DatasetSplits",
    "FormatData",
    "load_classification_dataset",
    "read_cifar10_batches",
    "read_cifar10_class_names",
    "read_idx",
    "read_image_folder",
    "register_reader",
    "to_intensity",
]

#: dataset name -> one-line description, in registration order. This is the registry's own
#: dict, so a reader registered later (e.g. by a plugin) shows up here too.
CLASSIFICATION_DATASETS: dict[str, str] = DESCRIPTIONS


@attrs.frozen
class DatasetSplits:
    """A dataset split into train/val/test, preprocessed to optical intensities.

    Each split is a ``TensorDataset(x, y)`` with ``x`` float32 ``(N, channels, H, W)`` in
    ``[0, 1]`` and ``y`` int64 class indices into ``classes``.
    """

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: tuple[str, ...]
    name: str
    channels: int
    image_size: tuple[int, int]

    @property
    def num_classes(self) -> int:
        """Number of classes, i.e. the size of the classifier's output layer."""
        return len(self.classes)


def _dataset(x: Tensor, y: np.ndarray) -> TensorDataset:
    return TensorDataset(x, torch.as_tensor(np.asarray(y), dtype=torch.int64))


def _require_data_dir(name: str, data_dir) -> Path:
    """The user's task.data_dir for a file-based dataset, which must exist."""
    if data_dir is None:
        raise UserError(
            f"task.data_dir: dataset {name!r} reads files and needs their folder (--set task.data_dir=FOLDER; "
            "docs/datasets.md lists the expected files); allowed without files: 'digits' or 'shapes-rgb'"
        )
    return check_data_dir(name, data_dir)


def load_classification_dataset(
    name: str,
    *,
    image_size,
    channels: int,
    seed: int = 0,
    data_dir=None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_train: int | None = None,
) -> DatasetSplits:
    """Load dataset ``name`` (a key of ``CLASSIFICATION_DATASETS``) as optical intensities.

    Datasets with an official test set (``mnist``, ``fashion-mnist``, ``cifar10``) keep it
    as the test split, ignore ``test_fraction`` and carve ``val_fraction`` of the official
    training set out as val. The others (``digits``, ``shapes-rgb``, ``folder``) are split
    into val_fraction / test_fraction of all samples, stratified by class. All splits and
    generated data depend only on ``seed``; ``max_train`` then keeps a seeded subset of the
    training split (val and test unchanged, so results stay comparable).
    """
    image_size = check_image_size(image_size)
    channels = check_channels(channels)
    check_fractions(val_fraction, test_fraction, max_train)
    reader = find_reader(name)
    key = reader.name
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"seed {seed!r} is invalid; expected an integer")
    seed = int(seed)

    path = _require_data_dir(key, data_dir) if reader.needs_data_dir else None
    data = reader.read(path, seed=seed, image_size=image_size, channels=channels)
    labels = data.labels

    def splits(train_x, train_y, val_x, val_y, test_x, test_y) -> DatasetSplits:
        return DatasetSplits(
            train=_dataset(train_x, train_y),
            val=_dataset(val_x, val_y),
            test=_dataset(test_x, test_y),
            classes=tuple(data.classes),
            name=key,
            channels=channels,
            image_size=image_size,
        )

    if reader.official_test:
        if data.test_images is None or data.test_labels is None:
            raise TypeError(f"reader {key!r} has official_test=True but returned no test_images/test_labels")
        train, val, _ = split_indices(labels, val_fraction, 0.0, seed, f"dataset {key!r}")
        train = cap_train(train, labels, max_train, seed)
        if len(train) == 0:
            where = f" in {path}" if path is not None else ""
            raise UserError(f"dataset {key!r}: the training files{where} hold no images")

        def prep(a: np.ndarray) -> Tensor:  # after splitting: only the selected images become floats
            return uint8_to_intensity(
                a, image_size=image_size, channels=channels, channels_last=data.channels_last
            )

        images, test_x, test_y = data.images, data.test_images, data.test_labels
        return splits(prep(images[train]), labels[train], prep(images[val]), labels[val], prep(test_x), test_y)

    n_min = 1 + (val_fraction > 0) + (test_fraction > 0)
    if len(labels) < n_min:
        raise UserError(
            f"dataset {key!r} has {len(labels)} images; need at least {n_min} to split into train/val/test"
        )
    train, val, test = split_indices(labels, val_fraction, test_fraction, seed, f"dataset {key!r}")
    train = cap_train(train, labels, max_train, seed)
    if len(train) == 0:
        raise UserError(f"dataset {key!r}: no training images left after the val/test split; use more images")
    x = to_intensity(data.images, image_size=image_size, channels=channels)
    return splits(x[train], labels[train], x[val], labels[val], x[test], labels[test])
