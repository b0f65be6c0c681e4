"""Image classification datasets, preprocessed to the intensities an optical frontend sees.

An optical frontend convolves *light*: its input is a non-negative intensity image of a
fixed size with either one (monochromatic) or three (R, G, B wavelengths) channels.
Every dataset here is therefore returned as float32 ``(N, C, H, W)`` tensors in
``[0, 1]`` at the requested ``image_size`` and ``channels``, already split into
train / val / test so that every caller (training, distillation, evaluation) sees the
same samples for the same seed.

Nothing is ever downloaded: ``digits`` ships with scikit-learn, ``shapes-rgb`` is
generated, and ``mnist``, ``fashion-mnist``, ``cifar10`` and ``folder`` read files the
user already has in ``--data-dir`` (formats documented in ``docs/datasets.md``).
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from onnx_run.errors import UserError

__all__ = [
    "CLASSIFICATION_DATASETS",
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "MNIST_FILES",
    "SHAPES_RGB_CLASSES",
    "SHAPES_RGB_COUNT",
    "DatasetSplits",
    "load_classification_dataset",
    "read_cifar10_batches",
    "read_cifar10_class_names",
    "read_idx",
    "read_image_folder",
    "to_intensity",
]

CLASSIFICATION_DATASETS: dict[str, str] = {
    "digits": "scikit-learn's 1,797 real 8x8 handwritten digits (ships with scikit-learn), 10 classes",
    "shapes-rgb": "generated RGB shapes (circle, ring, square, ...) in random colours, sizes, "
    "positions and rotations; the class is the shape, never the colour",
    "mnist": "MNIST handwritten digits from the standard IDX files in --data-dir, 10 classes",
    "fashion-mnist": "Fashion-MNIST clothing images from the standard IDX files in --data-dir, 10 classes",
    "cifar10": "CIFAR-10 32x32 colour images from the python-version batches in --data-dir, 10 classes",
    "folder": "your own images in --data-dir/<class_name>/*.png|jpg|..., one subfolder per class",
}

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

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

SHAPES_RGB_CLASSES: tuple[str, ...] = (
    "circle", "ring", "square", "triangle", "cross", "bar", "star", "half-disc",
)  # fmt: skip

#: Number of generated ``shapes-rgb`` images (before splitting), balanced over the classes.
SHAPES_RGB_COUNT = 3000

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# RGB -> grey weights (ITU-R BT.601, the same as PIL's "L" conversion).
_LUMINANCE = (0.299, 0.587, 0.114)

# Images preprocessed per chunk so that converting e.g. all of CIFAR-10 never holds a
# second full-size float copy in memory.
_CHUNK = 2048


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


# --------------------------------------------------------------------------- preprocessing


def _check_image_size(image_size) -> tuple[int, int]:
    """Validate the user's ``image_size`` (two positive ints) and return it as a tuple."""
    try:
        h, w = image_size
    except (TypeError, ValueError):
        raise UserError(
            f"image_size {image_size!r} is not a pair; "
            "expected two positive integers (height, width), e.g. [28, 28]"
        ) from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise UserError(
                f"image_size {image_size!r} is invalid; "
                "expected two positive integers (height, width), e.g. [28, 28]"
            )
    return int(h), int(w)


def _check_channels(channels) -> int:
    """Validate ``channels``: 1 = monochromatic intensity, 3 = R, G, B wavelengths."""
    if isinstance(channels, bool) or channels not in (1, 3):
        raise UserError(f"channels {channels!r} is invalid; allowed: 1 (grey intensity) or 3 (RGB)")
    return int(channels)


def to_intensity(images: Tensor, *, image_size, channels: int) -> Tensor:
    """Resize and colour-convert images in ``[0, 1]`` to the frontend's input intensities.

    ``images`` is ``(N, C0, H0, W0)`` with ``C0`` 1 (grey) or 3 (RGB), float in ``[0, 1]``
    (uint8 is accepted and divided by 255). Resizing is bilinear with antialiasing so that
    downsampling averages instead of aliasing; RGB -> grey uses the luminance weights
    0.299/0.587/0.114 and grey -> RGB repeats the channel (a grey object reflects all
    wavelengths equally). The result is float32 ``(N, channels, H, W)`` clamped to
    ``[0, 1]``, because light intensity can't be negative.
    """
    h, w = _check_image_size(image_size)
    channels = _check_channels(channels)
    if not isinstance(images, Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"to_intensity expects images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.to(torch.float32) / 255.0
    elif images.is_floating_point():
        x = images.to(torch.float32)
    else:
        raise ValueError(f"to_intensity expects float images in [0, 1] or uint8, got dtype {images.dtype}")
    if x.shape[1] == 3 and channels == 1:  # convert first: resizing one channel is cheaper
        weights = torch.tensor(_LUMINANCE, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
    if tuple(x.shape[-2:]) != (h, w) and x.shape[0] > 0:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    elif x.shape[0] == 0:
        x = x.new_zeros((0, x.shape[1], h, w))
    if x.shape[1] == 1 and channels == 3:  # repeat last: resize one channel, not three
        x = x.expand(-1, 3, -1, -1)
    return x.clamp(0.0, 1.0).contiguous()


def _uint8_to_intensity(images: np.ndarray, *, image_size, channels: int, channels_last: bool) -> Tensor:
    """Preprocess a big uint8 array in chunks into one preallocated float32 tensor.

    ``images`` is ``(N, H, W)`` (grey), ``(N, H, W, 3)`` (``channels_last``) or
    ``(N, C, H, W)``. Chunking keeps peak memory near the size of the result.
    """
    h, w = _check_image_size(image_size)
    if images.ndim == 3:
        images = images[:, None]
    elif channels_last:
        images = images.transpose(0, 3, 1, 2)
    out = torch.empty((images.shape[0], channels, h, w), dtype=torch.float32)
    for start in range(0, images.shape[0], _CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + _CHUNK]))
        out[start : start + chunk.shape[0]] = to_intensity(chunk, image_size=(h, w), channels=channels)
    return out


# --------------------------------------------------------------------------- IDX (MNIST)

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
    if not path.is_file():
        raise UserError(f"file {path} not found; {_IDX_EXPECTED}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"file {path} could not be read ({e.strerror or e}); {_IDX_EXPECTED}") from None
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
        f"{', '.join(MNIST_FILES)} (raw or .gz) in --data-dir"
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


# --------------------------------------------------------------------------- CIFAR-10

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
    if not path.is_file():
        raise UserError(f"file {path} not found; {expected}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"file {path} could not be read ({e.strerror or e}); {expected}") from None
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
            raise UserError(f"dataset 'cifar10': file {d / name} not found; {_CIFAR_EXPECTED}, in --data-dir")
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


# --------------------------------------------------------------------------- image folder

_GREY_MODES = {"1", "L", "LA", "La", "I", "F"}


def _read_image(path: Path) -> np.ndarray:
    """Read one image with PIL into float32 ``(C, H, W)`` in [0, 1], C = 1 (grey) or 3 (RGB).

    Grey stays grey (so it isn't tripled in memory); anything with colour (RGB, RGBA,
    palette, CMYK, ...) becomes RGB. Alpha is dropped: the optics see the colour, not
    transparency. 16-bit images are scaled by 65535, 8-bit by 255.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode.startswith("I;16"):
                arr = np.asarray(img, dtype=np.float32) / 65535.0
            elif mode == "I":  # 32-bit int; in practice 16-bit PNG/TIFF data
                arr = np.asarray(img, dtype=np.float32) / 65535.0
            elif mode == "F":
                arr = np.asarray(img, dtype=np.float32)
            elif mode in _GREY_MODES:
                arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise UserError(
            f"dataset 'folder': file {path} is not a readable image ({type(e).__name__}: {e}); "
            f"expected an image file Pillow can open ({', '.join(IMAGE_EXTENSIONS)})"
        ) from None
    arr = np.clip(np.nan_to_num(arr), 0.0, 1.0)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_image_folder(root, *, exts=IMAGE_EXTENSIONS):
    """Read ``root/<class_name>/**/<image>`` into ``(images, labels, class_names)``.

    Like torchvision's ImageFolder: one subfolder per class, classes sorted by folder name
    (so label indices don't depend on the filesystem's listing order), images found
    recursively with a case-insensitive extension in ``exts``; hidden files and folders
    are skipped. ``images`` is a list of float32 ``(C, H, W)`` arrays in [0, 1] (C = 1 or
    3, sizes may differ), ``labels`` an int64 array.
    """
    root = Path(root)
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)
    layout = (
        "expected --data-dir/<class_name>/<image> with one subfolder per class "
        f"and images ending in {', '.join(exts)}"
    )
    if not root.is_dir():
        raise UserError(f"dataset 'folder': directory {root} not found; {layout}")
    class_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
    )
    if not class_dirs:
        raise UserError(f"dataset 'folder': directory {root} has no class subfolders; {layout}")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            f
            for f in class_dir.rglob("*")
            if f.suffix.lower() in exts and f.is_file() and not _is_hidden(f, class_dir)
        )
        if not files:
            raise UserError(f"dataset 'folder': class folder {class_dir} contains no images; {layout}")
        for f in files:
            images.append(_read_image(f))
            labels.append(label)
    return images, np.asarray(labels, dtype=np.int64), tuple(p.name for p in class_dirs)


# --------------------------------------------------------------------------- shapes-rgb


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


# --------------------------------------------------------------------------- splitting


def _split_once(idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int, what: str):
    """Seeded split of ``idx`` into (rest, part), stratified by class whenever possible."""
    from sklearn.model_selection import train_test_split

    try:
        rest, part = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError:  # a class too small to appear on both sides: fall back to a plain shuffle
        try:
            rest, part = train_test_split(idx, test_size=fraction, random_state=seed)
        except ValueError:
            raise UserError(
                f"{what}: cannot split {len(idx)} image(s) into a {fraction:.0%} part and a non-empty rest; "
                "add images or lower val_fraction/test_fraction"
            ) from None
    return np.sort(rest), np.sort(part)


def _split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, what: str):
    """Train/val/test indices where val and test are the given fractions of all samples."""
    idx = np.arange(len(labels))
    empty = idx[:0]
    rest, test = _split_once(idx, labels, test_fraction, seed, what) if test_fraction > 0 else (idx, empty)
    if val_fraction > 0:
        train, val = _split_once(rest, labels[rest], val_fraction / (1.0 - test_fraction), seed, what)
    else:
        train, val = rest, empty
    return train, val, test


def _cap_train(train: np.ndarray, labels: np.ndarray, max_train: int | None, seed: int) -> np.ndarray:
    """Seeded (stratified where possible) subset of the training indices for quick runs."""
    if max_train is None or max_train >= len(train):
        return train
    from sklearn.model_selection import train_test_split

    try:
        keep, _ = train_test_split(train, train_size=max_train, random_state=seed, stratify=labels[train])
    except ValueError:
        keep, _ = train_test_split(train, train_size=max_train, random_state=seed)
    return np.sort(keep)


def _check_fractions(val_fraction, test_fraction, max_train) -> None:
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise UserError(f"{key} {value!r} is invalid; expected a number in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(
            f"val_fraction {val_fraction} + test_fraction {test_fraction} >= 1 leaves no training data; "
            "expected a sum below 1"
        )
    is_int = isinstance(max_train, (int, np.integer)) and not isinstance(max_train, bool)
    if max_train is not None and (not is_int or max_train < 1):
        raise UserError(f"max_train {max_train!r} is invalid; expected a positive integer or none")


def _dataset(x: Tensor, y: np.ndarray) -> TensorDataset:
    return TensorDataset(x, torch.as_tensor(np.asarray(y), dtype=torch.int64))


def _require_data_dir(name: str, data_dir) -> Path:
    """The user's --data-dir for a file-based dataset, which must exist."""
    if data_dir is None:
        raise UserError(
            f"dataset {name!r} reads files and needs --data-dir (data_dir); "
            "see docs/datasets.md for the expected files. Without files, use 'digits' or 'shapes-rgb'"
        )
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"dataset {name!r}: --data-dir {path} does not exist or is not a directory")
    return path


# --------------------------------------------------------------------------- loading


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
    image_size = _check_image_size(image_size)
    channels = _check_channels(channels)
    _check_fractions(val_fraction, test_fraction, max_train)
    key = str(name).strip().lower().replace("_", "-")
    if key not in CLASSIFICATION_DATASETS:
        raise UserError(f"dataset {name!r} is unknown; allowed: {', '.join(CLASSIFICATION_DATASETS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"seed {seed!r} is invalid; expected an integer")
    seed = int(seed)

    def splits(train_x, train_y, val_x, val_y, test_x, test_y, classes) -> DatasetSplits:
        return DatasetSplits(
            train=_dataset(train_x, train_y),
            val=_dataset(val_x, val_y),
            test=_dataset(test_x, test_y),
            classes=tuple(classes),
            name=key,
            channels=channels,
            image_size=image_size,
        )

    if key in ("mnist", "fashion-mnist", "cifar10"):
        path = _require_data_dir(key, data_dir)
        if key == "cifar10":
            tx, ty, sx, sy = read_cifar10_batches(path)
            classes = read_cifar10_class_names(path)
        else:
            tx, ty, sx, sy = _read_mnist_like(path, key)
            classes = FASHION_MNIST_CLASSES if key == "fashion-mnist" else tuple(str(i) for i in range(10))
        train, val, _ = _split_indices(ty, val_fraction, 0.0, seed, f"dataset {key!r}")
        train = _cap_train(train, ty, max_train, seed)
        if len(train) == 0:
            raise UserError(f"dataset {key!r}: the training files in {path} hold no images")

        def prep(a: np.ndarray) -> Tensor:
            return _uint8_to_intensity(
                a, image_size=image_size, channels=channels, channels_last=key == "cifar10"
            )

        return splits(prep(tx[train]), ty[train], prep(tx[val]), ty[val], prep(sx), sy, classes)

    if key == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
        labels = digits.target.astype(np.int64)
        classes = tuple(str(i) for i in range(10))
    elif key == "shapes-rgb":
        # Rendered directly at the requested size (sharper than rendering small and upsampling).
        arr, labels = _generate_shapes_rgb(SHAPES_RGB_COUNT, seed, image_size)
        images = torch.from_numpy(arr)
        classes = SHAPES_RGB_CLASSES
    else:  # folder
        path = _require_data_dir(key, data_dir)
        arrays, labels, classes = read_image_folder(path)
        if len(classes) < 2:
            raise UserError(
                f"dataset 'folder': {path} has only the class folder {classes[0]!r}; "
                "expected at least 2 class subfolders"
            )
        # Images may differ in size, so each is resized on its own.
        images = torch.cat(
            [
                to_intensity(torch.from_numpy(a)[None], image_size=image_size, channels=channels)
                for a in arrays
            ]
        )
    n_min = 1 + (val_fraction > 0) + (test_fraction > 0)
    if len(labels) < n_min:
        raise UserError(
            f"dataset {key!r} has {len(labels)} images; need at least {n_min} to split into train/val/test"
        )
    train, val, test = _split_indices(labels, val_fraction, test_fraction, seed, f"dataset {key!r}")
    train = _cap_train(train, labels, max_train, seed)
    if len(train) == 0:
        raise UserError(f"dataset {key!r}: no training images left after the val/test split; use more images")
    x = to_intensity(images, image_size=image_size, channels=channels)
    return splits(x[train], labels[train], x[val], labels[val], x[test], labels[test], classes)
