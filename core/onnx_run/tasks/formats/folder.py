"""Your own images, one subfolder per class (like torchvision's ``ImageFolder``).

Images may differ in size and colour mode, so each is read with Pillow and converted to
intensities on its own; classes are sorted by folder name so label indices don't depend
on the filesystem's listing order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnx_run.errors import UserError
from onnx_run.tasks.formats.reader import DatasetReader, FormatData

__all__ = ["IMAGE_EXTENSIONS", "READERS", "read_image_folder"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

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
        "expected task.data_dir/<class_name>/<image> with one subfolder per class "
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


def _read(data_dir: Path, *, image_size: tuple[int, int], channels: int, **_) -> FormatData:
    import torch  # here, not above: listing the dataset names imports no torch

    from onnx_run.tasks.intensity import to_intensity

    arrays, labels, classes = read_image_folder(data_dir)
    if len(classes) < 2:
        raise UserError(
            f"dataset 'folder': {data_dir} has only the class folder {classes[0]!r}; "
            "expected at least 2 class subfolders"
        )
    # Images may differ in size, so each is resized on its own.
    images = torch.cat(
        [to_intensity(torch.from_numpy(a)[None], image_size=image_size, channels=channels) for a in arrays]
    )
    return FormatData(images=images, labels=labels, classes=classes)


READERS: tuple[DatasetReader, ...] = (
    DatasetReader(
        name="folder",
        description="your own images in task.data_dir/<class_name>/*.png|jpg|..., one subfolder per class",
        needs_data_dir=True,
        official_test=False,
        read=_read,
    ),
)
