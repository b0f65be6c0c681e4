"""A package's public names imported on first use (PEP 562): importing the package stays light.

onnx-run imports every plugin package whenever it lists plugins (``--help``, ``plugins``); a
package ``__init__`` that imports its components would import torch with them::

    from onnx_run.lazy import lazy_exports

    __getattr__, __all__ = lazy_exports(__name__, {"Frontend4f": "onnx_run_optics_4f.frontend"})
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, public: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """(a module ``__getattr__`` that imports ``public[name]`` and returns its ``name``, the names)."""

    def __getattr__(name: str) -> Any:
        if name in public:
            return getattr(importlib.import_module(public[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(public)
