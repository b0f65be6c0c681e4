"""onnx-run plugin: multi-layer diffractive networks (D2NN) as optical frontends."""

from onnx_run_optics_diffractive.config import PRESETS, DiffractiveConfig, Geometry, resolve
from onnx_run_optics_diffractive.frontend import DiffractiveFrontend, layout_for

__all__ = ["PRESETS", "DiffractiveConfig", "DiffractiveFrontend", "Geometry", "layout_for", "resolve"]
