"""What a dataset format provides: a :class:`DatasetReader` and the :class:`FormatData` it reads.

A format only has to produce its samples; the loader splits, caps and preprocesses them,
so every format is split by the same seed in the same way and reaches the optics as the
same kind of intensities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np

from onnx_run.errors import UserError

__all__ = ["DatasetReader", "FormatData", "ReadFunction"]


@attrs.frozen(kw_only=True)
class FormatData:
    """All samples of a dataset as its reader found them: not split, not yet preprocessed.

    Without an official test set, ``images`` is a float (in ``[0, 1]``) or uint8 tensor or
    array ``(N, C, H, W)`` with C = 1 or 3, converted as a whole by ``to_intensity``. With
    one, ``images`` / ``labels`` are the official training set and ``test_images`` /
    ``test_labels`` the official test set, as uint8 arrays ``(N, H, W)``, ``(N, C, H, W)``
    or, with ``channels_last``, ``(N, H, W, 3)``; they are converted in chunks after
    splitting, so only the selected images become floats. ``labels`` are int64 class
    indices into ``classes``.
    """

    images: Any
    labels: np.ndarray
    classes: tuple[str, ...] = attrs.field(converter=tuple)
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    channels_last: bool = False


class ReadFunction(Protocol):
    """``read(data_dir, *, seed, image_size, channels) -> FormatData``.

    ``data_dir`` is the existing ``task.data_dir`` folder when the reader ``needs_data_dir``,
    else None. ``seed``, ``image_size`` and ``channels`` (already validated) are for
    formats that generate samples or must resize images of differing sizes.
    """

    def __call__(
        self, data_dir: Path | None, *, seed: int, image_size: tuple[int, int], channels: int
    ) -> FormatData: ...


def _check_name(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or value != value.strip().lower().replace("_", "-"):
        raise ValueError(f"reader name {value!r} must be non-empty, lower case, with '-' instead of '_'")


def _one_line(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or "\n" in value:
        raise ValueError(f"reader {instance.name!r}: the description must be one non-empty line")


@attrs.frozen(kw_only=True)
class DatasetReader:
    """How one dataset name is read.

    ``name``: the dataset name users write (lower case, ``-`` not ``_``);
    ``description``: one line for ``CLASSIFICATION_DATASETS``; ``needs_data_dir``: it reads
    files from ``task.data_dir``; ``official_test``: ``read`` returns the official test set
    (then ``test_fraction`` is ignored); ``read``: see :class:`ReadFunction`.
    """

    name: str = attrs.field(validator=_check_name)
    description: str = attrs.field(validator=_one_line)
    needs_data_dir: bool
    official_test: bool
    read: ReadFunction


def read_bytes(path: Path, expected: str) -> bytes:
    """A format file's bytes; a missing or unreadable file is one line naming it and what
    the format expects (shared by every format that reads whole files)."""
    if not path.is_file():
        raise UserError(f"file {path} not found; {expected}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"file {path} could not be read ({e.strerror or e}); {expected}") from None
