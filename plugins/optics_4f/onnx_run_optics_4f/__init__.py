"""onnx-run plugin: 4f Fourier-plane optics (SLM/DOE mask)."""

from onnx_run_optics_4f.config import Optics4fConfig
from onnx_run_optics_4f.frontend import Frontend4f
from onnx_run_optics_4f.geometry import layout_for

__all__ = ["Frontend4f", "Optics4fConfig", "layout_for"]
