"""One figure style for everything onnx-run draws: the style sheet ``data/onnx-run.mplstyle``,
applied around each figure-making function (``@styled``), so that a user's own matplotlib
settings outside stay as they were. Plugins decorate their previews the same way."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, TypeVar

__all__ = ["METHOD_COLOURS", "STYLE_SHEET", "styled"]

#: one colour per training method (and the teacher) in every figure
METHOD_COLOURS = {"none": "tab:gray", "kd": "tab:orange", "ntkd": "tab:blue", "e2e": "tab:green", "teacher": "k"}

#: the style sheet (a matplotlib ``.mplstyle`` file shipped in the package)
STYLE_SHEET = Path(__file__).parent / "data" / "onnx-run.mplstyle"

F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Run ``fn`` (which makes and saves figures) under the onnx-run style sheet."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib.style

        with matplotlib.style.context(STYLE_SHEET):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
