"""Your own segmentation data: ``images/<name>.<ext>`` with ``masks/<name>.<ext>``, same ``<name>``.

Any nonzero mask pixel is foreground; images are independent (no groups).
"""

from __future__ import annotations

from pathlib import Path

from onnx_run_tasks_segmentation.pairs import MASK_EXTENSIONS, PairFormat, find_pairs, require_dir

__all__ = ["FOLDER", "FOLDER_LAYOUT", "folder_pairs"]

FOLDER_LAYOUT = ("expected data_dir/images/<name>.<png|jpg|...> with data_dir/masks/<name>.<png|gif|bmp|tif> "
                 "(same <name>; any nonzero mask pixel is foreground)")


def folder_pairs(data_dir: Path) -> list[tuple[Path, Path]]:
    """Image/mask pairs of ``data_dir/images`` and ``data_dir/masks``."""
    data_dir = require_dir(Path(data_dir).expanduser(), "folder", FOLDER_LAYOUT)
    return find_pairs(data_dir / "images", data_dir / "masks", lambda stem: [stem + e for e in MASK_EXTENSIONS],
                      "folder", FOLDER_LAYOUT)


FOLDER = PairFormat(name="folder", layout=FOLDER_LAYOUT, pairs=folder_pairs)
