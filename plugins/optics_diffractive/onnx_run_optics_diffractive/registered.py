"""The diffractive frontend as registered: with its exporter attached.

export.py reads the frontend and the frontend never imports its exporter (no import circle);
this module, which knows both, wires them, and is what the registration names.
"""

from __future__ import annotations

from onnx_run_optics_diffractive.export import export_stack
from onnx_run_optics_diffractive.frontend import DiffractiveFrontend

DiffractiveFrontend.export = export_stack  # type: ignore[method-assign]

__all__ = ["DiffractiveFrontend"]
