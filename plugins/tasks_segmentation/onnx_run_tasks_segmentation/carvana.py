"""Kaggle's Carvana car masks: ``train/<id>.jpg`` + ``train_masks/<id>_mask.gif``, or ``images/`` + ``masks/``.

Every car is photographed from 16 views (``<car>_<view>``); the views of one car are one
group, so no car is both trained and tested on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from onnx_run.errors import UserError
from onnx_run_tasks_segmentation.pairs import MASK_EXTENSIONS, PairFormat, find_pairs, require_dir

__all__ = ["CARVANA", "CARVANA_LAYOUT", "car_groups", "carvana_pairs", "write_carvana_folder"]

CARVANA_LAYOUT = ("expected data_dir/train/<id>.jpg with data_dir/train_masks/<id>_mask.gif (Kaggle Carvana), "
                  "or data_dir/images/<id>.<jpg|png> with data_dir/masks/<id>_mask.gif or <id>.<png|gif>")


def carvana_pairs(data_dir: Path) -> list[tuple[Path, Path]]:
    """Image/mask pairs of a Carvana folder in either accepted layout."""
    data_dir = require_dir(Path(data_dir).expanduser(), "carvana", CARVANA_LAYOUT)

    def names(stem: str) -> list[str]:
        return [f"{stem}_mask.gif", f"{stem}_mask.png"] + [stem + e for e in MASK_EXTENSIONS]

    if (data_dir / "train").is_dir() or (data_dir / "train_masks").is_dir():
        return find_pairs(data_dir / "train", data_dir / "train_masks", names, "carvana", CARVANA_LAYOUT)
    if (data_dir / "images").is_dir() or (data_dir / "masks").is_dir():
        return find_pairs(data_dir / "images", data_dir / "masks", names, "carvana", CARVANA_LAYOUT)
    raise UserError(f"dataset 'carvana': {data_dir} has neither train/ + train_masks/ nor images/ + masks/; "
                    f"{CARVANA_LAYOUT}")


def car_groups(pairs: list[tuple[Path, Path]]) -> list[str]:
    """The car of each image: ``<car id>`` of ``<car id>_<view 01..16>``."""
    return [img.stem.rsplit("_", 1)[0] for img, _ in pairs]


CARVANA = PairFormat(name="carvana", layout=CARVANA_LAYOUT, pairs=carvana_pairs, groups=car_groups)


#: the palette of Carvana's masks: index 0 black (background), 1 white (car)
_MASK_PALETTE = [0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254


def write_carvana_folder(root: Path, pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], *,
                         quality: int = 90) -> Path:
    """Write ``(stem, image (H, W, 3) uint8, mask (H, W) bool)`` pairs in Kaggle's layout:
    ``train/<stem>.jpg`` (JPEG at ``quality``, as Carvana's photographs are) and
    ``train_masks/<stem>_mask.gif`` (a palette GIF, as Carvana's masks are). For benchmarks
    and tests of the real-file path; ``stem`` is ``<car>_<view>``."""
    from PIL import Image

    from onnx_run.files import atomic_path

    root = Path(root)
    images, masks = root / "train", root / "train_masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for stem, image, mask in pairs:
        with atomic_path(images / f"{stem}.jpg") as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=quality)
        gif = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
        gif.putpalette(_MASK_PALETTE)
        with atomic_path(masks / f"{stem}_mask.gif") as tmp:
            gif.save(tmp, format="GIF")
    return root
