"""CIFAR-10 in its python version: pickled batches read through a restricted unpickler.

A pickle can run any code while it loads, so the batches never go through plain
``pickle.load``: only dicts, lists, bytes, str, numbers and numpy arrays can be built.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from onnx_run.errors import UserError
from onnx_run.tasks.formats.reader import DatasetReader, FormatData, read_bytes

__all__ = ["CIFAR10_CLASSES", "READERS", "read_cifar10_batches", "read_cifar10_class_names"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_EXPECTED = (
    "expected the CIFAR-10 python-version batch files data_batch_1..data_batch_5 and test_batch "
    "(from cifar-10-python.tar.gz), each a pickled dict with b'data' (N, 3072) uint8 and b'labels'"
)


def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 pickle needs: how numpy rebuilds an ndarray and its dtype.

    Both the numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) spellings are mapped to
    the running numpy's functions, so old pickles load without importing the deprecated
    ``numpy.core`` shim. ``_frombuffer`` is what numpy writes under pickle protocol 5; like
    ``_reconstruct`` it only builds an array from bytes.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for pkg in ("numpy.core", "numpy._core"):
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global that CIFAR-10 data never needs (possibly malicious)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build dicts, lists, bytes, str, ints and numpy arrays, nothing else.

    A pickle can call any importable function while loading (e.g. ``os.system``), so a
    downloaded "CIFAR batch" must never go through plain ``pickle.load``. Containers and
    scalars need no globals at all; only numpy's array reconstruction is allowed.
    """

    _allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def _load_restricted_pickle(path: Path, expected: str):
    """Load a pickle through the restricted unpickler; every failure names the file."""
    raw = read_bytes(path, expected)
    try:
        # encoding="bytes": the real batches were written by Python 2, whose str is bytes.
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        hint = (
            " (or it was re-saved by Python 3 with pickle protocol 2, which stores bytes as calls: "
            "re-save it with protocol 3 or higher)"
            if str(e) in ("_codecs.encode", "__builtin__.bytes", "__builtin__.bytearray")
            else ""
        )
        raise UserError(
            f"file {path} was refused: the pickle asks to load {e}, which a CIFAR-10 batch never contains "
            "(only dicts, lists, bytes, str, int and numpy arrays are allowed); "
            f"it is corrupt or malicious{hint}"
        ) from None
    except Exception as e:  # noqa: BLE001 - any failure while unpickling means a corrupt file
        raise UserError(f"file {path} is not a valid pickle ({type(e).__name__}: {e}); {expected}") from None


def _key(d: dict, key: str):
    """Look up ``key`` as bytes (Python 2 pickles) or str (Python 3 pickles)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _cifar10_dir(data_dir) -> Path:
    """The folder holding the batches: data_dir itself or its cifar-10-batches-py subfolder."""
    d = Path(data_dir)
    sub = d / "cifar-10-batches-py"
    if not (d / "data_batch_1").is_file() and sub.is_dir():
        return sub
    return d


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into (N, 32, 32, 3) uint8 images and int64 labels."""
    batch = _load_restricted_pickle(path, _CIFAR_EXPECTED)
    if not isinstance(batch, dict):
        raise UserError(f"file {path} holds a pickled {type(batch).__name__}, not a dict; {_CIFAR_EXPECTED}")
    data, labels = _key(batch, "data"), _key(batch, "labels")
    if labels is None and _key(batch, "fine_labels") is not None:
        raise UserError(
            f"file {path} has b'fine_labels', so it is CIFAR-100, which is not supported; {_CIFAR_EXPECTED}"
        )
    if data is None or labels is None:
        missing = " and ".join(k for k, v in (("b'data'", data), ("b'labels'", labels)) if v is None)
        raise UserError(f"file {path} has no {missing} key; {_CIFAR_EXPECTED}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        if isinstance(data, np.ndarray):
            desc = f"{data.dtype.name} array of shape {data.shape}"
        else:
            desc = type(data).__name__
        raise UserError(f"file {path}: b'data' is a {desc}; {_CIFAR_EXPECTED}")
    try:
        y = np.asarray(labels)
        ok = y.ndim == 1 and y.dtype.kind in "iu" and len(y) == len(data)
        ok = ok and (y.size == 0 or (y.min() >= 0 and y.max() <= 9))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(
            f"file {path}: b'labels' must be {len(data)} integers in 0..9, one per image; {_CIFAR_EXPECTED}"
        )
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y.astype(np.int64)


def read_cifar10_batches(data_dir):
    """Read the CIFAR-10 python version: ``(train_x, train_y, test_x, test_y)``.

    Images are uint8 ``(N, 32, 32, 3)`` (channels last, as the CIFAR docs describe them),
    labels int64. ``data_dir`` may hold the batches directly or in ``cifar-10-batches-py``.
    Batches are unpickled with a restricted unpickler (see ``_RestrictedUnpickler``).
    """
    d = _cifar10_dir(data_dir)
    for name in _CIFAR_FILES:
        if not (d / name).is_file():
            raise UserError(f"dataset 'cifar10': file {d / name} not found; {_CIFAR_EXPECTED}, in task.data_dir")
    train = [_read_cifar10_batch(d / name) for name in _CIFAR_FILES[:5]]
    test_x, test_y = _read_cifar10_batch(d / "test_batch")
    return np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train]), test_x, test_y


def read_cifar10_class_names(data_dir) -> tuple[str, ...]:
    """Class names from ``batches.meta`` (b'label_names') if present, else the standard ten."""
    path = _cifar10_dir(data_dir) / "batches.meta"
    if not path.is_file():
        return CIFAR10_CLASSES
    expected = "expected batches.meta to be a pickled dict with b'label_names', a list of 10 class names"
    meta = _load_restricted_pickle(path, expected)
    names = _key(meta, "label_names") if isinstance(meta, dict) else None
    valid = isinstance(names, (list, tuple)) and len(names) == 10
    if not valid or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"file {path} has no valid b'label_names'; {expected}")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def _read(data_dir: Path, **_) -> FormatData:
    tx, ty, sx, sy = read_cifar10_batches(data_dir)
    classes = read_cifar10_class_names(data_dir)
    return FormatData(images=tx, labels=ty, test_images=sx, test_labels=sy, classes=classes, channels_last=True)


READERS: tuple[DatasetReader, ...] = (
    DatasetReader(
        name="cifar10",
        description="CIFAR-10 32x32 colour images from the python-version batches in task.data_dir, 10 classes",
        needs_data_dir=True,
        official_test=True,
        read=_read,
    ),
)
