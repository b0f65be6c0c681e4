"""Tests for onnx_run.tasks.datasets: real on-disk formats, splits, preprocessing, errors.

Every file is written here byte for byte in the format the real datasets ship in (IDX
headers, Python-2 pickled CIFAR batches, PNG/JPEG class folders), so the readers are
tested against what users actually have on disk, not against our own writer.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

from onnx_run.errors import UserError
from onnx_run.tasks import datasets as ds
from onnx_run.tasks.datasets import (
    CLASSIFICATION_DATASETS,
    DatasetSplits,
    load_classification_dataset,
    read_cifar10_batches,
    read_idx,
    read_image_folder,
    to_intensity,
)

# --------------------------------------------------------------------------- helpers


def write_idx(path, array: np.ndarray, type_byte: int = 0x08, *, gz: bool = False) -> None:
    """Write an IDX file exactly as LeCun's format describes: 00 00 type ndim, BE dims, BE data."""
    be = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_byte]
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(be).tobytes()
    if gz:
        payload = gzip.compress(payload)
    with open(path, "wb") as f:
        f.write(payload)


MIXED_GZ = ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")  # the others stay raw


def mnist_arrays(n: int, seed: int, size=(28, 28)):
    """Images whose every pixel encodes (label, index) so splits can be checked exactly.

    Pixel value = 20 * label + 1 everywhere except pixel (0, 0) which holds the image index;
    a constant image stays constant under resizing, so the label is recoverable after
    preprocessing too.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    x = np.empty((n, *size), dtype=np.uint8)
    x[:] = (20 * y + 1)[:, None, None]
    x[:, 0, 0] = np.arange(n)
    return x, y.astype(np.uint8)


def write_mnist(folder, n_train=60, n_test=20, gz_files=MIXED_GZ):
    folder.mkdir(parents=True, exist_ok=True)
    tx, ty = mnist_arrays(n_train, 1)
    sx, sy = mnist_arrays(n_test, 2)
    sx[:, 0, 0] += 100  # test images are distinguishable from train images by this pixel
    for base, arr in (
        ("train-images-idx3-ubyte", tx),
        ("train-labels-idx1-ubyte", ty),
        ("t10k-images-idx3-ubyte", sx),
        ("t10k-labels-idx1-ubyte", sy),
    ):
        gz = base in gz_files
        write_idx(folder / (base + (".gz" if gz else "")), arr, gz=gz)
    return tx, ty, sx, sy


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2's cPickle wrote the real CIFAR-10 batches.

    Python 2 ``str`` is bytes and was written with SHORT_BINSTRING/BINSTRING opcodes
    ('U'/'T'), which Python 3 reads back as bytes with ``encoding="bytes"``; numpy was
    addressed as ``numpy.core.multiarray``. (Python 3's protocol 2 would instead go through
    ``_codecs.encode``, which the real files never contain.)
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(b"U" + bytes([len(data)]) + data)
        else:
            self.write(b"T" + struct.pack("<I", len(data)) + data)

    def save_py2_bool(self, obj):
        self.save_long(int(obj))

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str
    dispatch[bool] = save_py2_bool


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(n: int, offset: int, seed: int):
    """A batch like the real ones; image i is constant per colour plane so checks are exact:
    R = 20 * label + 5, G = 100 + (offset + i) % 100 (identity), B = 250."""
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    data = np.empty((n, 3072), dtype=np.uint8)
    for i, lab in enumerate(labels):
        data[i, :1024] = 20 * lab + 5
        data[i, 1024:2048] = 100 + (offset + i) % 100
        data[i, 2048:] = 250
    return {
        b"batch_label": b"training batch",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{offset + i}.png".encode() for i in range(n)],
    }


def write_cifar(folder, per_batch=8, n_test=10, writer=py2_pickle):
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for b in range(5):
        batch = cifar_batch(per_batch, b * per_batch, seed=b)
        (folder / f"data_batch_{b + 1}").write_bytes(writer(batch))
        batches.append(batch)
    test = cifar_batch(n_test, 1000, seed=9)
    (folder / "test_batch").write_bytes(writer(test))
    return batches, test


def labels_from_pixels(x: torch.Tensor) -> np.ndarray:
    """Recover the label encoded as 20 * label + 1 from the bottom-right pixel (mnist_arrays)."""
    return np.rint((x[:, 0, -1, -1].numpy() * 255 - 1) / 20).astype(int)


# --------------------------------------------------------------------------- to_intensity


def test_to_intensity_grey_to_rgb_repeats_and_rgb_to_grey_uses_luminance():
    grey = torch.rand(2, 1, 5, 5)
    rgb = to_intensity(grey, image_size=(5, 5), channels=3)
    assert rgb.shape == (2, 3, 5, 5) and rgb.dtype == torch.float32
    for c in range(3):
        assert torch.equal(rgb[:, c], grey[:, 0])

    img = torch.zeros(3, 3, 4, 4)
    for c in range(3):
        img[c, c] = 1.0  # pure red, pure green, pure blue
    lum = to_intensity(img, image_size=(4, 4), channels=1)
    assert lum.shape == (3, 1, 4, 4)
    assert torch.allclose(lum[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114]), atol=1e-6)
    white = to_intensity(torch.ones(1, 3, 4, 4), image_size=(4, 4), channels=1)
    assert torch.allclose(white, torch.ones_like(white), atol=1e-6)


def test_to_intensity_resizes_with_antialiasing_and_clamps():
    # A 1-pixel checkerboard shrunk 3x must average to grey; plain bilinear samples single
    # pixels here (source positions 1, 4, 7, ...) and would alias to a 0/1 pattern.
    checker = ((torch.arange(15)[:, None] + torch.arange(15)[None, :]) % 2).float()[None, None]
    small = to_intensity(checker, image_size=(5, 5), channels=1)
    assert small.shape == (1, 1, 5, 5)
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)

    up = to_intensity(torch.full((1, 1, 8, 8), 0.25), image_size=(20, 30), channels=3)
    assert up.shape == (1, 3, 20, 30) and torch.allclose(up, torch.full_like(up, 0.25))

    out = to_intensity(torch.tensor([[[[-0.5, 1.5]]]]), image_size=(1, 2), channels=1)
    assert out.min() >= 0 and out.max() <= 1 and out.flatten().tolist() == [0.0, 1.0]


def test_to_intensity_accepts_uint8_and_rejects_bad_channels_and_sizes():
    out = to_intensity(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8), image_size=(2, 2), channels=1)
    assert torch.equal(out, torch.ones(1, 1, 2, 2))
    with pytest.raises(UserError, match="channels"):
        to_intensity(torch.zeros(1, 1, 2, 2), image_size=(2, 2), channels=2)
    with pytest.raises(UserError, match="image_size"):
        to_intensity(torch.zeros(1, 1, 2, 2), image_size=(0, 2), channels=1)
    with pytest.raises(ValueError):
        to_intensity(torch.zeros(1, 4, 2, 2), image_size=(2, 2), channels=1)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    "type_byte,dtype",
    [
        (0x08, np.uint8),
        (0x09, np.int8),
        (0x0B, np.int16),
        (0x0C, np.int32),
        (0x0D, np.float32),
        (0x0E, np.float64),
    ],
)
def test_read_idx_round_trips_every_type_raw_and_gzipped(tmp_path, gz, type_byte, dtype):
    # Signed types get negative values and multi-byte types values > 255, so byte order matters.
    values = np.arange(24) if dtype == np.uint8 else np.arange(24) * 37 - 5
    arr = values.astype(dtype).reshape(2, 3, 4)
    path = tmp_path / "x-idx3"
    write_idx(path, arr, type_byte, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_read_idx_detects_gzip_by_magic_not_suffix(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    write_idx(tmp_path / "no-suffix", arr, gz=True)
    write_idx(tmp_path / "raw.gz", arr, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), arr)


def test_read_idx_rejects_corrupt_files_naming_them(tmp_path):
    good = np.zeros((3, 4, 4), dtype=np.uint8)
    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x01\x02\x08\x03" + b"\x00" * 60)
    with pytest.raises(UserError, match="bad-magic.*not an IDX file"):
        read_idx(bad_magic)

    truncated = tmp_path / "truncated"
    write_idx(truncated, good)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated.*is truncated"):
        read_idx(truncated)

    trailing = tmp_path / "trailing"
    write_idx(trailing, good)
    trailing.write_bytes(trailing.read_bytes() + b"xx")
    with pytest.raises(UserError, match="trailing.*longer than"):
        read_idx(trailing)

    bad_gz = tmp_path / "broken.gz"
    bad_gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-10])
    with pytest.raises(UserError, match="broken.gz.*gzip"):
        read_idx(bad_gz)

    with pytest.raises(UserError, match="missing-file.*not found"):
        read_idx(tmp_path / "missing-file")


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST


def test_mnist_reads_raw_and_gz_files_and_keeps_official_test_split(tmp_path):
    tx, ty, sx, sy = write_mnist(tmp_path / "mnist")
    d = load_classification_dataset(
        "mnist", image_size=(28, 28), channels=1, data_dir=tmp_path / "mnist", seed=3
    )
    assert isinstance(d, DatasetSplits)
    assert d.name == "mnist" and d.channels == 1 and d.image_size == (28, 28)
    assert d.classes == tuple("0123456789") and d.num_classes == 10
    xtr, ytr = d.train.tensors
    xv, yv = d.val.tensors
    xte, yte = d.test.tensors
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert xtr.shape[1:] == (1, 28, 28)
    # Test split is exactly the official t10k files, in order.
    np.testing.assert_array_equal(yte.numpy(), sy)
    np.testing.assert_allclose(xte[:, 0].numpy(), sx / 255.0, atol=1e-6)
    # Val is 10% carved out of the 60 training images; together they are all of them, once.
    assert len(xv) == 6 and len(xtr) == 54
    ids = np.rint(torch.cat([xtr, xv])[:, 0, 0, 0].numpy() * 255).astype(int)
    assert sorted(ids) == list(range(60))
    # Images and labels stay aligned through the split.
    for x, y in ((xtr, ytr), (xv, yv), (xte, yte)):
        np.testing.assert_array_equal(labels_from_pixels(x), y.numpy())
        assert x.min() >= 0 and x.max() <= 1


def test_mnist_resizes_to_rgb_and_caps_training_set(tmp_path):
    write_mnist(tmp_path)
    d = load_classification_dataset("mnist", image_size=(14, 10), channels=3, data_dir=tmp_path, max_train=20)
    xtr, ytr = d.train.tensors
    assert xtr.shape == (20, 3, 14, 10)
    assert len(d.val) == 6 and len(d.test) == 20  # max_train leaves val and test alone
    assert torch.equal(xtr[:, 0], xtr[:, 1]) and torch.equal(xtr[:, 1], xtr[:, 2])
    np.testing.assert_array_equal(labels_from_pixels(xtr), ytr.numpy())


def test_fashion_mnist_class_names_and_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", gz_files=tuple(ds.MNIST_FILES))
    d = load_classification_dataset("fashion-mnist", image_size=(28, 28), channels=1, data_dir=tmp_path)
    assert d.classes[0] == "T-shirt/top" and d.classes[-1] == "Ankle boot" and len(d.classes) == 10
    assert len(d.test) == 20


def test_mnist_missing_and_inconsistent_files_name_the_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte\(\.gz\) not found.*task.data_dir"):
        load_classification_dataset("mnist", image_size=(28, 28), channels=1, data_dir=tmp_path)

    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))  # 20 images, 7 labels
    with pytest.raises(UserError, match="t10k-images-idx3-ubyte.*20 images.*7 labels"):
        load_classification_dataset("mnist", image_size=(28, 28), channels=1, data_dir=tmp_path)

    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(20, 12, dtype=np.uint8))
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.*label 12"):
        load_classification_dataset("mnist", image_size=(28, 28), channels=1, data_dir=tmp_path)

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip and not idx")
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz.*not an IDX file"):
        load_classification_dataset("mnist", image_size=(28, 28), channels=1, data_dir=tmp_path)

    with pytest.raises(UserError, match="task.data_dir: dataset .* needs their folder"):
        load_classification_dataset("mnist", image_size=(28, 28), channels=1)
    with pytest.raises(UserError, match="nowhere.*does not exist"):
        load_classification_dataset("mnist", image_size=(28, 28), channels=1, data_dir=tmp_path / "nowhere")


# --------------------------------------------------------------------------- CIFAR-10


def test_py2_pickler_writes_the_real_cifar_opcodes():
    """Guard the test fixture itself: it must look like the real batch files' header."""
    raw = py2_pickle({b"data": np.zeros((1, 3072), np.uint8)})
    assert raw.startswith(b"\x80\x02}")
    assert b"U\x04data" in raw and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw


def test_cifar10_reads_real_format_with_channel_order_and_meta(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches, test = write_cifar(folder)
    (folder / "batches.meta").write_bytes(
        py2_pickle(
            {
                b"num_cases_per_batch": 8,
                b"label_names": [c.encode() for c in ds.CIFAR10_CLASSES[::-1]],
                b"num_vis": 3072,
            }
        )
    )
    tx, ty, sx, sy = read_cifar10_batches(tmp_path)  # finds the cifar-10-batches-py subfolder
    assert tx.shape == (40, 32, 32, 3) and tx.dtype == np.uint8 and sx.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(ty, sum((b[b"labels"] for b in batches), []))
    np.testing.assert_array_equal(tx[:, 5, 7, 0], 20 * ty + 5)  # red plane first
    np.testing.assert_array_equal(tx[:, 31, 0, 1], 100 + np.arange(40))  # then green, in file order
    assert (tx[..., 2] == 250).all()  # then blue

    d = load_classification_dataset("cifar10", image_size=(16, 16), channels=3, data_dir=tmp_path, seed=1)
    assert d.classes == ds.CIFAR10_CLASSES[::-1]  # from batches.meta, not the built-in list
    xtr, ytr = d.train.tensors
    assert xtr.shape == (36, 3, 16, 16) and len(d.val) == 4 and len(d.test) == 10
    np.testing.assert_allclose(xtr[:, 0, 3, 3].numpy(), (20 * ytr.numpy() + 5) / 255, atol=1e-5)
    np.testing.assert_allclose(xtr[:, 2].numpy(), 250 / 255, atol=1e-5)
    np.testing.assert_array_equal(d.test.tensors[1].numpy(), test[b"labels"])

    grey = load_classification_dataset("cifar10", image_size=(32, 32), channels=1, data_dir=folder, seed=1)
    xg, yg = grey.test.tensors
    red, green, blue = 20 * yg.numpy() + 5, 100 + np.arange(10), 250  # test ids are 1000.. -> 100 + i
    expected = (0.299 * red + 0.587 * green + 0.114 * blue) / 255
    np.testing.assert_allclose(xg[:, 0, 10, 10].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_accepts_batches_re_saved_by_python3(tmp_path, protocol, str_keys):
    """Protocols 3-4 rebuild numpy arrays with _reconstruct, protocol 5 (Python 3.14's
    default) with _frombuffer; both are allowed, and keys may be str instead of bytes."""

    def writer(batch):
        return pickle.dumps({(k.decode() if str_keys else k): v for k, v in batch.items()}, protocol=protocol)

    write_cifar(tmp_path, writer=writer)
    tx, ty, _, _ = read_cifar10_batches(tmp_path)
    assert tx.shape == (40, 32, 32, 3)
    np.testing.assert_array_equal(tx[:, 0, 0, 0], 20 * ty + 5)


def test_cifar10_python3_protocol2_is_refused_with_a_hint(tmp_path):
    # Python 3 writes bytes under protocol 2 as calls to _codecs.encode: not on the allow-list.
    write_cifar(tmp_path, writer=lambda b: pickle.dumps(b, protocol=2))
    with pytest.raises(UserError, match="data_batch_1 was refused.*_codecs.encode.*protocol 3"):
        read_cifar10_batches(tmp_path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_pickle_that_runs_code(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"payload": _Evil(marker)}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(UserError, match=r"data_batch_3 was refused.*system"):
        read_cifar10_batches(tmp_path)
    assert not marker.exists()

    # The same through the top-level loader, and hidden in a Python-2 style file.
    (tmp_path / "data_batch_3").write_bytes(py2_pickle(evil))
    with pytest.raises(UserError, match="data_batch_3 was refused"):
        load_classification_dataset("cifar10", image_size=(32, 32), channels=3, data_dir=tmp_path)
    assert not marker.exists()


def test_cifar10_missing_and_corrupt_batches_name_the_file(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch not found.*data_batch_1"):
        load_classification_dataset("cifar10", image_size=(32, 32), channels=3, data_dir=tmp_path)

    write_cifar(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(b"garbage, not a pickle")
    with pytest.raises(UserError, match="data_batch_2 is not a valid pickle"):
        read_cifar10_batches(tmp_path)

    (tmp_path / "data_batch_2").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(UserError, match="data_batch_2 holds a pickled list"):
        read_cifar10_batches(tmp_path)

    bad = tmp_path / "data_batch_2"
    bad.write_bytes(py2_pickle({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(UserError, match=r"data_batch_2: b'data' is a uint8 array of shape \(2, 1024\)"):
        read_cifar10_batches(tmp_path)

    bad.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(UserError, match="data_batch_2: b'labels' must be 2 integers"):
        read_cifar10_batches(tmp_path)

    bad.write_bytes(py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(UserError, match="data_batch_2 has b'fine_labels'.*CIFAR-100"):
        read_cifar10_batches(tmp_path)

    (tmp_path / "data_batch_2").write_bytes(py2_pickle(cifar_batch(8, 8, 1))[:-40])
    with pytest.raises(UserError, match="data_batch_2 is not a valid pickle"):
        read_cifar10_batches(tmp_path)


# --------------------------------------------------------------------------- folder


def make_folder(root):
    """bird: 4 red RGB PNGs; cat: 4 grey PNGs (mode L, different size); dog: 4 blue JPEGs."""
    for name in ("bird", "cat", "dog"):
        (root / name).mkdir(parents=True)
    for i in range(4):
        red = np.zeros((12, 10, 3), np.uint8)
        red[..., 0] = 255
        Image.fromarray(red).save(root / "bird" / f"b{i}.png")
        Image.fromarray(np.full((20, 20), 128, np.uint8), mode="L").save(root / "cat" / f"c{i}.PNG")
        blue = np.zeros((16, 16, 3), np.uint8)
        blue[..., 2] = 255
        Image.fromarray(blue).save(root / "dog" / f"d{i}.jpg", quality=95)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    (root / "cat" / ".DS_Store").write_bytes(b"\x00junk")


def test_read_image_folder_keeps_grey_and_colour(tmp_path):
    make_folder(tmp_path)
    images, labels, classes = read_image_folder(tmp_path)
    assert classes == ("bird", "cat", "dog")
    np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4 + [2] * 4)
    assert images[0].shape == (3, 12, 10) and images[0].dtype == np.float32
    np.testing.assert_array_equal(images[0][0], 1.0)
    np.testing.assert_array_equal(images[0][1:], 0.0)
    assert images[4].shape == (1, 20, 20)
    np.testing.assert_allclose(images[4], 128 / 255)
    assert images[8].shape == (3, 16, 16)
    assert images[8][2].mean() > 0.95 and images[8][:2].mean() < 0.05  # JPEG: blue up to compression


def test_folder_dataset_preprocesses_and_splits(tmp_path):
    make_folder(tmp_path)
    d = load_classification_dataset(
        "folder", image_size=(8, 8), channels=3, data_dir=tmp_path, val_fraction=0.25, test_fraction=0.25
    )
    assert d.classes == ("bird", "cat", "dog")
    assert (len(d.train), len(d.val), len(d.test)) == (6, 3, 3)
    x = torch.cat([d.train.tensors[0], d.val.tensors[0], d.test.tensors[0]])
    y = torch.cat([d.train.tensors[1], d.val.tensors[1], d.test.tensors[1]])
    assert x.shape == (12, 3, 8, 8)
    assert sorted(y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    for split in (d.train, d.val, d.test):  # stratified: every class in every split
        assert sorted(set(split.tensors[1].tolist())) == [0, 1, 2]
    red, grey, blue = (x[y == k] for k in range(3))
    assert torch.allclose(red[:, 0], torch.ones(1)) and red[:, 1:].max() == 0
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255), atol=1e-6)  # grey repeated to RGB
    assert blue[:, 2].mean() > 0.95
    lum = load_classification_dataset("folder", image_size=(8, 8), channels=1, data_dir=tmp_path)
    xl = torch.cat([s.tensors[0] for s in (lum.train, lum.val, lum.test)])
    yl = torch.cat([s.tensors[1] for s in (lum.train, lum.val, lum.test)])
    assert torch.allclose(xl[yl == 0], torch.full((1,), 0.299), atol=1e-5)


def test_folder_errors_name_the_file_or_folder(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(UserError, match="broken.png is not a readable image"):
        load_classification_dataset("folder", image_size=(8, 8), channels=3, data_dir=tmp_path)
    (tmp_path / "cat" / "broken.png").unlink()

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty contains no images"):
        read_image_folder(tmp_path)

    with pytest.raises(UserError, match="no class subfolders"):
        read_image_folder(tmp_path / ".hidden")
    tiny = tmp_path / "tiny"
    for name in ("a", "b"):
        (tiny / name).mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tiny / "a" / "1.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tiny / "b" / "1.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tiny / "b" / "2.png")
    with pytest.raises(UserError, match=r"dataset 'folder': cannot split 1 image\(s\)"):
        load_classification_dataset(
            "folder", image_size=(8, 8), channels=1, data_dir=tiny, test_fraction=0.5, val_fraction=0.3
        )

    only = tmp_path / "only"
    (only / "one").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(only / "one" / "a.png")
    with pytest.raises(UserError, match="only the class folder 'one'"):
        load_classification_dataset("folder", image_size=(8, 8), channels=3, data_dir=only)


# --------------------------------------------------------------------------- digits / shapes-rgb


def test_digits_real_data_stratified_and_deterministic():
    a = load_classification_dataset("digits", image_size=(16, 16), channels=1, seed=0)
    b = load_classification_dataset("digits", image_size=(16, 16), channels=1, seed=0)
    c = load_classification_dataset("digits", image_size=(16, 16), channels=1, seed=1)
    assert a.classes == tuple("0123456789")
    sizes = (len(a.train), len(a.val), len(a.test))
    assert sum(sizes) == 1797 and sizes == (1257, 180, 360)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).tensors[0], getattr(b, split).tensors[0])
        assert torch.equal(getattr(a, split).tensors[1], getattr(b, split).tensors[1])
        assert set(getattr(a, split).tensors[1].tolist()) == set(range(10))
    assert not torch.equal(a.test.tensors[0], c.test.tensors[0])
    x = a.train.tensors[0]
    assert x.shape[1:] == (1, 16, 16) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    counts = np.bincount(a.test.tensors[1].numpy(), minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~36 per class

    # Unresized digits are exactly scikit-learn's images / 16.
    from sklearn.datasets import load_digits

    raw = load_classification_dataset(
        "digits", image_size=(8, 8), channels=1, seed=0, val_fraction=0, test_fraction=0
    )
    assert len(raw.val) == 0 and len(raw.test) == 0 and raw.val.tensors[0].shape == (0, 1, 8, 8)
    np.testing.assert_allclose(raw.train.tensors[0][:, 0].numpy(), load_digits().images / 16, atol=1e-7)


def test_shapes_rgb_deterministic_from_seed_balanced_and_colour_independent():
    a = load_classification_dataset("shapes-rgb", image_size=(24, 24), channels=3, seed=5)
    b = load_classification_dataset("shapes-rgb", image_size=(24, 24), channels=3, seed=5)
    c = load_classification_dataset("shapes-rgb", image_size=(24, 24), channels=3, seed=6)
    assert a.classes == ds.SHAPES_RGB_CLASSES and 6 <= len(a.classes) <= 10
    assert len(a.train) + len(a.val) + len(a.test) == ds.SHAPES_RGB_COUNT
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])

    x = torch.cat([a.train.tensors[0], a.val.tensors[0], a.test.tensors[0]])
    y = torch.cat([a.train.tensors[1], a.val.tensors[1], a.test.tensors[1]]).numpy()
    assert x.shape == (3000, 3, 24, 24) and x.min() >= 0 and x.max() <= 1
    counts = np.bincount(y)
    assert len(counts) == len(a.classes) and counts.max() - counts.min() <= 1
    # Colour varies within a class (channels carry different signals) ...
    peak = x.amax(dim=(2, 3))  # the shape's colour, roughly
    assert (peak.max(1).values - peak.min(1).values).mean() > 0.3
    # ... but not between classes: each class's mean chromaticity is near the overall one.
    chroma = (peak / peak.sum(1, keepdim=True)).numpy()
    overall = chroma.mean(0)
    for k in range(len(a.classes)):
        assert np.abs(chroma[y == k].mean(0) - overall).max() < 0.03
    # Shapes differ in geometry: mean foreground area per class spans a wide range.
    area = ((x.max(1).values > 0.45).float().mean(dim=(1, 2))).numpy()
    per_class = np.array([area[y == k].mean() for k in range(len(a.classes))])
    assert per_class.max() > 2 * per_class.min()


def test_shapes_rgb_grey_and_max_train():
    d = load_classification_dataset("shapes-rgb", image_size=(16, 20), channels=1, seed=0, max_train=50)
    assert d.train.tensors[0].shape == (50, 1, 16, 20)
    assert len(d.val) == 300 and len(d.test) == 600
    assert set(d.train.tensors[1].tolist()) == set(range(len(d.classes)))  # stratified subset


# --------------------------------------------------------------------------- arguments


def test_catalogue_and_argument_errors():
    names = {"digits", "shapes-rgb", "mnist", "fashion-mnist", "cifar10", "folder"}
    assert set(CLASSIFICATION_DATASETS) == names
    assert all(isinstance(v, str) and "\n" not in v for v in CLASSIFICATION_DATASETS.values())
    kw = dict(image_size=(8, 8), channels=1)
    with pytest.raises(UserError, match="dataset 'imagenet' is unknown; allowed: digits, shapes-rgb"):
        load_classification_dataset("imagenet", **kw)
    with pytest.raises(UserError, match="channels 2"):
        load_classification_dataset("digits", image_size=(8, 8), channels=2)
    with pytest.raises(UserError, match="image_size"):
        load_classification_dataset("digits", image_size=8, channels=1)
    with pytest.raises(UserError, match="val_fraction 1.5"):
        load_classification_dataset("digits", val_fraction=1.5, **kw)
    with pytest.raises(UserError, match="no training data"):
        load_classification_dataset("digits", val_fraction=0.5, test_fraction=0.5, **kw)
    with pytest.raises(UserError, match="max_train 0"):
        load_classification_dataset("digits", max_train=0, **kw)
    with pytest.raises(UserError, match="seed"):
        load_classification_dataset("digits", seed="x", **kw)
    # Names are forgiving about case and underscores.
    assert load_classification_dataset("Digits", **kw).name == "digits"


# --------------------------------------------------------------------------- reader registry


def test_registry_lists_the_formats_in_order():
    from onnx_run.tasks.formats import registry

    order = ["digits", "shapes-rgb", "mnist", "fashion-mnist", "cifar10", "folder"]
    assert list(CLASSIFICATION_DATASETS) == order == list(registry.READERS)
    assert CLASSIFICATION_DATASETS == {n: r.description for n, r in registry.READERS.items()}
    official = {n for n, r in registry.READERS.items() if r.official_test}
    needs_dir = {n for n, r in registry.READERS.items() if r.needs_data_dir}
    assert official == {"mnist", "fashion-mnist", "cifar10"}
    assert needs_dir == official | {"folder"}
    with pytest.raises(ValueError, match="already registered"):
        ds.register_reader(attrs.evolve(registry.READERS["digits"]))


@pytest.fixture
def registered():
    """Register readers for one test and take them out of the registry afterwards."""
    from onnx_run.tasks.formats import registry

    names = []

    def register(reader):
        names.append(reader.name)
        return ds.register_reader(reader)

    yield register
    for n in names:
        registry.READERS.pop(n, None)
        registry.DESCRIPTIONS.pop(n, None)


def test_a_registered_format_is_split_like_the_built_ins(registered):
    def read(data_dir, *, seed, image_size, channels):
        labels = np.arange(40) % 4
        images = torch.from_numpy(np.linspace(0, 1, 40 * 36, dtype=np.float32).reshape(40, 1, 6, 6))
        return ds.FormatData(images=images, labels=labels.astype(np.int64), classes=["a", "b", "c", "d"])

    registered(ds.DatasetReader(name="ramp", description="a test ramp", needs_data_dir=False,
                                official_test=False, read=read))
    assert CLASSIFICATION_DATASETS["ramp"] == "a test ramp"
    d = load_classification_dataset("Ramp", image_size=(6, 6), channels=3, seed=1)
    assert (len(d.train), len(d.val), len(d.test)) == (28, 4, 8)
    assert d.classes == ("a", "b", "c", "d") and d.train.tensors[0].shape == (28, 3, 6, 6)


def test_an_official_test_reader_must_return_its_test_set(registered):
    def read(data_dir, **_):
        return ds.FormatData(images=np.zeros((4, 5, 5), np.uint8), labels=np.arange(4) % 2, classes="ab")

    registered(ds.DatasetReader(name="no-test", description="broken", needs_data_dir=False,
                                official_test=True, read=read))
    with pytest.raises(TypeError, match="no test_images"):
        load_classification_dataset("no-test", image_size=(5, 5), channels=1)
    with pytest.raises(ValueError, match="lower case"):
        ds.DatasetReader(name="Bad_Name", description="x", needs_data_dir=False, official_test=False, read=read)
