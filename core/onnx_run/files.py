"""Writes that cannot leave half a file: each file is written beside its place under a
temporary name and renamed over it only when complete (a rename is atomic on one file system).
A kill, a full disk or an unwritable folder leaves the old file (or none), never a torn one.

Plugins write their exports through these too (``atomic_path`` for libraries that write to a
path themselves: ``np.save``, ``savefig``, ``gdstk``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "file_in_the_way", "save_array", "save_arrays",
           "save_figure", "write_json"]


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file (not a folder) at ``folder`` or above it that would stop it being created, if any."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` with the same suffix (writers that pick the format from
    it still do); renamed to ``path`` when the block ends without an exception, removed if not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def save_array(path: str | Path, array: Any) -> None:
    """``np.save``, whole or not at all (``path`` should end in .npy)."""
    import numpy as np

    with atomic_path(path) as tmp:
        np.save(tmp, array)


def save_arrays(path: str | Path, **arrays: Any) -> None:
    """``np.savez`` (an .npz of named arrays), whole or not at all."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """``fig.savefig(path, **kwargs)``, whole or not at all; the format from the suffix."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or None, **kwargs)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0):  # tensors and arrays
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
