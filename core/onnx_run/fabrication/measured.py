"""A real device's data: measured PSFs and captured feature maps.

Measured PSFs (``--measured-psfs DIR``): ``DIR/manifest.json`` maps files to kernels::

    {"kernels": [
        {"index": 0, "positive": "k0_pos.png", "negative": "k0_neg.png"},
        {"index": 1, "positive": "k1.tiff"},                      # unsigned kernel
        {"index": 2, "positive": ["k2_r.npy", "k2_g.npy", "k2_b.npy"]}   # one file per wavelength
    ]}

Files are PNG/TIFF (8 or 16 bit, read as linear intensity) or NPY (2-D float arrays).
Registration: frames already the design's kernel size are taken as cut; larger frames have
their median background subtracted (negatives clipped to 0) and one window of the kernel's
size is cut from all frames of a kernel (positive, negative, channels) around the intensity
centroid of their sum, so a signed pair keeps its relative position (integer pixels; a
sub-pixel residual is part of the misalignment the fine-tuning corrects). Normalisation: all PSFs are
divided by one common factor (the largest PSF sum) so relative kernel efficiencies stay as
measured, then a single gain is calibrated so that the mean absolute feature on a few
training images equals that of the realised design (the camera's exposure is arbitrary).

Captures (``--captures FILE``): a NumPy ``.npz`` with ``indices`` (N,) int, positions in the
training split, and ``features`` (N, K, H', W') float, the recorded feature maps after
signed-pair subtraction, shaped like the design's feature maps; optionally
``test_features`` (N_test, K, H', W') for the whole test split in order (otherwise the test
split is evaluated through the measured or simulated frontend).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from onnx_run.components import Layout, OpticalFrontend
from onnx_run.errors import UserError
from onnx_run.files import atomic_write_text, save_array, save_arrays

PSF_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


def read_psf_image(path: Path) -> np.ndarray:
    """One measured PSF as a 2-D float64 array of linear intensities."""
    if not path.exists():
        raise UserError(f"measured PSF {path}: file not found (listed in manifest.json)")
    suffix = path.suffix.lower()
    if suffix not in PSF_SUFFIXES:
        raise UserError(f"measured PSF {path}: unsupported format {suffix!r}; use PNG, TIFF or NPY")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as img:
                arr = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise UserError(f"measured PSF {path}: unreadable ({' '.join(str(exc).split())[:120]})") from None
    if not np.issubdtype(np.asarray(arr).dtype, np.number):
        raise UserError(f"measured PSF {path}: holds {np.asarray(arr).dtype} values; allowed: numbers (intensities)")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and suffix != ".npy" and arr.shape[-1] in (3, 4):  # an RGB(A) picture of a monochrome PSF
        arr = arr[..., :3].sum(-1)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise UserError(f"measured PSF {path}: expected a 2-D image (one file per kernel and wavelength, "
                        f"listed in manifest.json), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise UserError(f"measured PSF {path}: contains NaN or inf; allowed: finite intensities")
    peak = float(np.abs(arr).max())
    if peak > 0 and float(arr.min()) < -0.05 * peak:
        raise UserError(f"measured PSF {path}: an intensity image, but its minimum {arr.min():.4g} is beyond 5 % of "
                        f"its peak below zero; allowed: intensities (dark-frame noise may dip below 0 by a little)")
    return arr


def register_psfs(arrays: list[np.ndarray], size: int, where: str = "measured PSF") -> list[np.ndarray]:
    """Cut one ``size`` window out of the frames of one kernel (its positive and negative PSFs,
    or its wavelength channels): frames already ``size`` wide are taken as registered; larger
    ones are background-subtracted and cut around the intensity centroid of their sum, one
    window for all, so the PSFs of a pair keep their relative position (each centred on its
    own centroid, a signed kernel's halves would slide onto each other)."""
    shapes = {a.shape for a in arrays}
    small = [a.shape for a in arrays if min(a.shape) < size]
    if small:
        raise UserError(f"{where}: {small[0][0]} x {small[0][1]} px is smaller than the design's {size} x {size} "
                        f"kernel; allowed: an image at least the kernel's size, the PSF inside it")
    if len(shapes) > 1:
        raise UserError(f"{where}: the frames of one kernel differ in size ({', '.join(map(str, sorted(shapes)))}); "
                        f"allowed: frames cut alike, so that their relative position holds")
    if arrays[0].shape == (size, size):
        imgs = [np.clip(a, 0, None) for a in arrays]
        if sum(float(i.sum()) for i in imgs) <= 0:
            raise UserError(f"{where}: every value is zero or below; allowed: a PSF with light in it")
        return imgs
    imgs = [np.clip(a - np.median(a), 0, None) for a in arrays]
    total_img = sum(imgs)
    total = float(total_img.sum())
    if total <= 0:
        raise UserError(f"{where}: empty after background subtraction; allowed: a PSF brighter than the frame's median")
    ys, xs = np.indices(total_img.shape)
    cy, cx = int(round((ys * total_img).sum() / total)), int(round((xs * total_img).sum() / total))
    half = size // 2
    return [np.pad(img, half)[cy:cy + size, cx:cx + size] for img in imgs]


def write_measured_psfs(psfs: torch.Tensor, directory: Path) -> Path:
    """Signed PSFs (K, C, k, k) as the files a lab would hand over: each kernel's positive and
    negative parts as intensity images (NPY, one per wavelength channel) and manifest.json, the
    layout :func:`load_measured_psfs` reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arr = psfs.detach().double().cpu().numpy()
    entries = []
    for k in range(arr.shape[0]):
        entry: dict[str, Any] = {"index": k}
        for part, values in (("positive", np.clip(arr[k], 0, None)), ("negative", np.clip(-arr[k], 0, None))):
            if part == "negative" and not values.any():
                continue  # an unsigned kernel
            names = []
            for c in range(arr.shape[1]):
                name = f"k{k}_{part}_c{c}.npy"
                save_array(directory / name, values[c])
                names.append(name)
            entry[part] = names if len(names) > 1 else names[0]
        entries.append(entry)
    path = directory / "manifest.json"
    atomic_write_text(path, json.dumps({"kernels": entries}, indent=1))
    return path


def write_captures(path: Path, *, indices: torch.Tensor, features: torch.Tensor,
                   test_features: torch.Tensor | None = None) -> Path:
    """Captured feature maps in the layout :func:`read_captures` reads (.npz)."""
    arrays = {"indices": indices.cpu().numpy().astype(np.int64), "features": features.cpu().numpy()}
    if test_features is not None:
        arrays["test_features"] = test_features.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_arrays(path, **arrays)
    return path


@torch.no_grad()
def impulse_psfs(frontend: torch.nn.Module, *, in_channels: int, input_size: tuple[int, int],
                 kernel_size: int) -> torch.Tensor:
    """A device's signed PSFs as a lab measures them: a point source at the field's centre in
    each input channel, the read-out (errors included, noise excluded) cut to the kernel
    window around it. (K, C, k, k), in the convolution's orientation."""
    h, w = input_size
    half = kernel_size // 2
    dev = next(itertools.chain(frontend.parameters(), frontend.buffers()), torch.empty(0)).device
    out = []
    for c in range(in_channels):
        x = torch.zeros(1, in_channels, h, w)
        x[0, c, h // 2, w // 2] = 1.0
        feats = frontend(x.to(dev))[0].cpu()
        if tuple(feats.shape[-2:]) != (h, w):
            raise UserError(f"measuring PSFs: the feature maps ({feats.shape[-2]} x {feats.shape[-1]}) are not "
                            f"sampled like the input ({h} x {w}); a point-source PSF needs the same grid")
        out.append(feats[:, h // 2 - half:h // 2 + half + 1, w // 2 - half:w // 2 + half + 1])
    return torch.stack(out, 1)


class MeasuredPSFFrontend(OpticalFrontend):
    """A fixed frontend made of measured PSFs: incoherent convolution, signed pairs subtracted."""

    def __init__(self, psfs: torch.Tensor, signs: list[tuple[int, int | None]], *, in_channels: int,
                 input_size: tuple[int, int], feature_hw: tuple[int, int], gain: float = 1.0):
        super().__init__(None)
        self.in_channels = in_channels
        self.input_size = tuple(input_size)
        self.register_buffer("psfs", psfs.float())  # (P, C, k, k)
        self.signs = signs  # per kernel: (index of positive PSF, index of negative PSF or None)
        self.feature_hw = tuple(feature_hw)
        self.gain = float(gain)

    def layout(self) -> Layout:
        return Layout(len(self.signs), 1, len(self.signs), int(self.psfs.shape[-1]), {"source": "measured PSFs"})

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        k = self.psfs.shape[-1]
        # F.conv2d correlates: flip the PSFs for a true convolution
        out = F.conv2d(x, self.psfs.flip(-1, -2).to(x), padding=k // 2)
        maps = []
        for pos, neg in self.signs:
            maps.append(out[:, pos] - (out[:, neg] if neg is not None else 0))
        feats = torch.stack(maps, 1)
        if tuple(feats.shape[-2:]) != self.feature_hw:
            feats = F.interpolate(feats, size=self.feature_hw, mode="area")
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.raw(x)

    def kernels(self) -> torch.Tensor:
        return torch.stack([self.psfs[p] - (self.psfs[n] if n is not None else 0) for p, n in self.signs])

    def load_realised(self, state):
        self.load_state_dict(state)
        return self


def _files(entry: Any, channels: int, where: str) -> list[str]:
    files = entry if isinstance(entry, list) else [entry]
    if not all(isinstance(f, str) for f in files):
        raise UserError(f"{where}: expected a file name or a list of {channels} file names")
    if len(files) == 1 and channels > 1:
        raise UserError(f"{where}: the design has {channels} wavelength channels; give a list of {channels} files")
    if len(files) != channels:
        raise UserError(f"{where}: expected {channels} file(s), got {len(files)}")
    return files


def load_measured_psfs(directory: Path, *, num_kernels: int, channels: int, kernel_size: int
                       ) -> tuple[torch.Tensor, list[tuple[int, int | None]]]:
    """Read, register and normalise the PSFs listed in ``directory/manifest.json``."""
    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise UserError(f"--measured-psfs {directory}: no manifest.json (see docs/fabrication.md for the layout)")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["kernels"]
        assert isinstance(entries, list)
    except (json.JSONDecodeError, KeyError, AssertionError, TypeError):
        raise UserError(f"{manifest_path}: expected JSON {{\"kernels\": [{{\"index\": 0, \"positive\": FILE, "
                        f"\"negative\": FILE}}, ...]}}") from None
    by_index: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int) or "positive" not in entry:
            raise UserError(f"{manifest_path}: kernels[{i}] needs an integer 'index' and a 'positive' file")
        if entry["index"] in by_index:
            raise UserError(f"{manifest_path}: kernel {entry['index']} listed twice")
        by_index[entry["index"]] = entry
    missing = [k for k in range(num_kernels) if k not in by_index]
    extra = [k for k in by_index if not 0 <= k < num_kernels]
    if missing or extra:
        raise UserError(f"{manifest_path}: the design has kernels 0..{num_kernels - 1}; "
                        f"missing {missing}" + (f", unexpected {extra}" if extra else ""))
    psfs: list[np.ndarray] = []
    signs: list[tuple[int, int | None]] = []
    for k in range(num_kernels):
        entry = by_index[k]
        ids: list[int | None] = []
        frames: list[tuple[str, Path]] = []
        for part in ("positive", "negative"):
            if part not in entry:
                continue
            files = _files(entry[part], channels, f"{manifest_path}: kernel {k} {part}")
            frames.extend((part, directory / f) for f in files)
        cut = register_psfs([read_psf_image(f) for _, f in frames], kernel_size,
                            f"measured PSF {frames[0][1]}" if len(frames) == 1 else f"measured PSFs of kernel {k}")
        for part in ("positive", "negative"):
            chosen = [img for (p, _), img in zip(frames, cut) if p == part]
            if chosen:
                psfs.append(np.stack(chosen))
                ids.append(len(psfs) - 1)
            else:
                ids.append(None)
        signs.append((ids[0], ids[1]))  # type: ignore[arg-type]
    arr = np.stack(psfs)  # (P, C, k, k)
    arr = arr / arr.reshape(arr.shape[0], -1).sum(1).max()
    return torch.from_numpy(arr), signs


def measured_frontend(directory: Path, *, like: OpticalFrontend, calibration: torch.Tensor) -> MeasuredPSFFrontend:
    """A frontend from measured PSFs, shaped and calibrated like the realised design ``like``."""
    kernels = like.kernels()
    k_count, channels, size = int(kernels.shape[0]), int(kernels.shape[1]), int(kernels.shape[-1])
    psfs, signs = load_measured_psfs(directory, num_kernels=k_count, channels=channels, kernel_size=size)
    feat = like.feature_shape()
    front = MeasuredPSFFrontend(psfs, signs, in_channels=like.in_channels, input_size=tuple(like.input_size),
                                feature_hw=tuple(feat[1:]))
    with torch.no_grad():
        dev = next(iter(like.parameters()), torch.empty(0)).device
        ref = like(calibration.to(dev)).abs().mean()
        raw = front.raw(calibration.to(dev).float()).abs().mean()
    front.gain = float(ref / raw) if raw > 0 else 1.0
    return front


def read_captures(path: Path, *, n_train: int, feature_shape: tuple[int, ...],
                  n_test: int | None = None, intensities: bool = False) -> dict[str, torch.Tensor]:
    """Captured feature maps for fine-tuning (see the module docstring for the .npz layout);
    ``n_test``: the test split's size, which 'test_features' must match; ``intensities``: the
    design's features are intensities (no signed pairs subtracted), so they cannot be negative."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--captures {path}: file not found")
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"--captures {path}: not a readable .npz ({' '.join(str(exc).split())[:100]})") from None
    for key in ("indices", "features"):
        if key not in arrays:
            raise UserError(f"--captures {path}: missing array {key!r}; expected 'indices' (N,) and "
                            f"'features' (N, {', '.join(map(str, feature_shape))})")
    idx, feats = arrays["indices"], arrays["features"]
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise UserError(f"--captures {path}: 'indices' must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    if idx.size == 0 or idx.min() < 0 or idx.max() >= n_train or len(set(idx.tolist())) != idx.size:
        raise UserError(f"--captures {path}: 'indices' must be distinct positions in the training split 0..{n_train - 1}")
    if tuple(feats.shape) != (idx.size, *feature_shape):
        raise UserError(f"--captures {path}: 'features' has shape {tuple(feats.shape)}; expected "
                        f"({idx.size}, {', '.join(map(str, feature_shape))}) to match 'indices' and the design")
    _check_finite(path, "features", feats)
    if intensities:
        _check_nonnegative(path, "features", feats)
    out = {"indices": torch.from_numpy(idx.astype(np.int64)), "features": torch.from_numpy(feats.astype(np.float32))}
    if "test_features" in arrays:
        tf = arrays["test_features"]
        rows = "N_test" if n_test is None else str(n_test)
        if tf.ndim != 4 or tuple(tf.shape[1:]) != tuple(feature_shape) or (n_test is not None and len(tf) != n_test):
            raise UserError(f"--captures {path}: 'test_features' has shape {tuple(tf.shape)}; expected "
                            f"({rows}, {', '.join(map(str, feature_shape))}): one capture per test image")
        _check_finite(path, "test_features", tf)
        if intensities:
            _check_nonnegative(path, "test_features", tf)
        out["test_features"] = torch.from_numpy(tf.astype(np.float32))
    return out


def _check_finite(path: Path, key: str, values: np.ndarray) -> None:
    """A camera never records NaN or infinity: such a capture is a processing fault upstream."""
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        bad = int(values.size - np.isfinite(values).sum()) if np.issubdtype(values.dtype, np.number) else values.size
        raise UserError(f"--captures {path}: '{key}' holds {bad} values that are not finite numbers; allowed: "
                        f"finite intensities (check the export that wrote it)")


def _check_nonnegative(path: Path, key: str, values: np.ndarray) -> None:
    """Intensities are >= 0; a background subtraction may leave noise a little below zero
    (the same 5 % of the peak that measured PSFs are allowed)."""
    peak = float(np.abs(values).max())
    low = float(values.min())
    if low < -0.05 * peak or (peak == 0 and low < 0):
        raise UserError(f"--captures {path}: '{key}' goes down to {low:.4g}, beyond 5 % of its peak {peak:.4g} below "
                        f"zero; this design's features are intensities (no signed kernel pairs): allowed: values >= 0 "
                        f"(noise of a background subtraction within 5 % of the peak)")
