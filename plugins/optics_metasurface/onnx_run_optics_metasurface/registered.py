"""The metasurface frontend as registered: with its exporter attached.

export.py reads the frontend and the frontend never imports its exporter (no import circle);
this module, which knows both, wires them, and is what the registration names.
"""

from __future__ import annotations

from onnx_run_optics_metasurface.export import export_frontend
from onnx_run_optics_metasurface.frontend import MetasurfaceFrontend

MetasurfaceFrontend.export = export_frontend  # type: ignore[method-assign]

__all__ = ["MetasurfaceFrontend"]
