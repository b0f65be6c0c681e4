"""Kaggle's Carvana car masks: ``train/<id>.jpg`` + ``train_masks/<id>_mask.gif``, or ``images/`` + ``masks/``.

Every car is photographed from 16 views (``<car>_<view>``); the views of one car are one
group, so no car is both trained and tested on.
"""

from __future__ import annotations

from pathlib import Path

from onnx_run.errors import UserError
from onnx_run_tasks_segmentation.pairs import MASK_EXTENSIONS, PairFormat, find_pairs, require_dir

__all__ = ["CARVANA", "CARVANA_LAYOUT", "car_groups", "carvana_pairs"]

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
