"""onnx-run plugin: 4f Fourier-plane optics (SLM/DOE mask)."""

from onnx_run.lazy import lazy_exports

#: public name -> the module that defines it (imported on first use: importing the package stays light)
__getattr__, __all__ = lazy_exports(__name__, {
    "Frontend4f": "onnx_run_optics_4f.frontend",
    "Optics4fConfig": "onnx_run_optics_4f.config",
    "layout_for": "onnx_run_optics_4f.geometry",
})
