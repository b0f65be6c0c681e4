"""scikit-learn's ``digits``: 1,797 real 8x8 handwritten digits that ship with scikit-learn.

The one real dataset that needs no files, so every feature can be tried out of the box.
"""

from __future__ import annotations

import numpy as np

from onnx_run.tasks.formats.reader import DatasetReader, FormatData

__all__ = ["READERS"]


def _read(data_dir: None, **_) -> FormatData:
    import torch  # here, not above: listing the dataset names imports no torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    return FormatData(images=images, labels=labels, classes=tuple(str(i) for i in range(10)))


READERS: tuple[DatasetReader, ...] = (
    DatasetReader(
        name="digits",
        description="scikit-learn's 1,797 real 8x8 handwritten digits (ships with scikit-learn), 10 classes",
        needs_data_dir=False,
        official_test=False,
        read=_read,
    ),
)
