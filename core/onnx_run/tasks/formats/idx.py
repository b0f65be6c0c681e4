"""The IDX format of MNIST and Fashion-MNIST (both use the same four file names).

Files are read from ``task.data_dir`` as the user has them: raw or gzip-compressed, with the
official, Kaggle or torchvision names; every header is validated, so a truncated download
fails with the file's name instead of as a shape error later.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from onnx_run.errors import UserError
from onnx_run.tasks.formats.reader import DatasetReader, FormatData, read_bytes

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_FILES", "READERS", "read_idx"]

#: The four IDX files of MNIST and Fashion-MNIST (both use the same names); each may be raw or .gz.
MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_EXPECTED = (
    "expected an IDX file (raw or gzip-compressed): bytes 00 00, a type byte "
    "(08 ubyte, 09 byte, 0B short, 0C int, 0D float, 0E double), a dimension count, "
    "then one big-endian uint32 size per dimension and the data"
)


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), raw or gzip-compressed, into a numpy array.

    Compression is detected from the gzip magic bytes, not trusted from the suffix. The
    header is validated and the data must be exactly as long as the header says, so a
    truncated download fails here with the file's name rather than later as a shape error.
    """
    path = Path(path)
    raw = read_bytes(path, _IDX_EXPECTED)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(
                f"file {path} is a corrupt or truncated gzip file ({e}); {_IDX_EXPECTED}"
            ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        header = raw[:4].hex(" ") or "empty"
        raise UserError(f"file {path} is not an IDX file (header bytes {header}); {_IDX_EXPECTED}")
    ndim = raw[3]
    if ndim == 0:
        raise UserError(f"file {path} is an IDX file with 0 dimensions; {_IDX_EXPECTED}")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise UserError(f"file {path} is truncated inside its IDX header ({len(raw)} bytes); {_IDX_EXPECTED}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise UserError(
            f"file {path} is {what}: header says shape {shape} of {dtype.name} = {expected} data bytes "
            f"but {actual} follow; {_IDX_EXPECTED}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx_file(data_dir: Path, base: str, dataset: str) -> Path:
    """Locate one MNIST-style IDX file: raw or .gz, in data_dir or torchvision's <Name>/raw."""
    tv = "FashionMNIST" if dataset == "fashion-mnist" else "MNIST"
    names = (base, base.replace("-idx", ".idx"))  # Kaggle copies use "train-images.idx3-ubyte"
    for folder in (data_dir, data_dir / tv / "raw"):
        for name in names:
            for suffix in ("", ".gz"):
                if (folder / (name + suffix)).is_file():
                    return folder / (name + suffix)
    raise UserError(
        f"dataset {dataset!r}: file {data_dir / base}(.gz) not found; expected the standard MNIST IDX files "
        f"{', '.join(MNIST_FILES)} (raw or .gz) in task.data_dir"
    )


def _read_mnist_like(data_dir: Path, dataset: str):
    """Read the official train and test splits of MNIST / Fashion-MNIST as uint8 arrays."""
    arrays = {}
    for base in MNIST_FILES:
        path = _find_idx_file(data_dir, base, dataset)
        arr = read_idx(path)
        is_images = "images" in base
        if arr.dtype != np.uint8 or arr.ndim != (3 if is_images else 1):
            want = "unsigned-byte images (N, H, W)" if is_images else "unsigned-byte labels (N,)"
            raise UserError(
                f"dataset {dataset!r}: file {path} holds {arr.dtype.name} data of shape {arr.shape}; "
                f"expected {want}"
            )
        if not is_images and arr.size and arr.max() > 9:
            raise UserError(
                f"dataset {dataset!r}: file {path} has label {int(arr.max())}; expected labels 0..9"
            )
        arrays[base] = (path, arr)
    out = []
    for images, labels in ((MNIST_FILES[0], MNIST_FILES[1]), (MNIST_FILES[2], MNIST_FILES[3])):
        (ipath, x), (lpath, y) = arrays[images], arrays[labels]
        if len(x) != len(y):
            raise UserError(
                f"dataset {dataset!r}: file {ipath} has {len(x)} images but {lpath} has {len(y)} labels; "
                "expected one label per image"
            )
        out += [x, y.astype(np.int64)]
    if out[0].shape[1:] != out[2].shape[1:]:
        raise UserError(
            f"dataset {dataset!r}: train images are {out[0].shape[1:]} but test images {out[2].shape[1:]} "
            f"(file {arrays[MNIST_FILES[2]][0]}); expected the same image size in both"
        )
    return tuple(out)


def _read_mnist(data_dir: Path, **_) -> FormatData:
    tx, ty, sx, sy = _read_mnist_like(data_dir, "mnist")
    classes = tuple(str(i) for i in range(10))
    return FormatData(images=tx, labels=ty, test_images=sx, test_labels=sy, classes=classes)


def _read_fashion_mnist(data_dir: Path, **_) -> FormatData:
    tx, ty, sx, sy = _read_mnist_like(data_dir, "fashion-mnist")
    return FormatData(images=tx, labels=ty, test_images=sx, test_labels=sy, classes=FASHION_MNIST_CLASSES)


READERS: tuple[DatasetReader, ...] = (
    DatasetReader(
        name="mnist",
        description="MNIST handwritten digits from the standard IDX files in task.data_dir, 10 classes",
        needs_data_dir=True,
        official_test=True,
        read=_read_mnist,
    ),
    DatasetReader(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images from the standard IDX files in task.data_dir, 10 classes",
        needs_data_dir=True,
        official_test=True,
        read=_read_fashion_mnist,
    ),
)
