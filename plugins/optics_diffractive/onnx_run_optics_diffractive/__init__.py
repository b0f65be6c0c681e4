"""onnx-run plugin: multi-layer diffractive networks (D2NN) as optical frontends."""

from onnx_run.lazy import lazy_exports

#: public name -> the module that defines it (imported on first use: importing the package stays light)
__getattr__, __all__ = lazy_exports(__name__, {
    "PRESETS": "onnx_run_optics_diffractive.config",
    "DiffractiveConfig": "onnx_run_optics_diffractive.config",
    "Geometry": "onnx_run_optics_diffractive.config",
    "resolve": "onnx_run_optics_diffractive.config",
    "DiffractiveFrontend": "onnx_run_optics_diffractive.frontend",
    "layout_for": "onnx_run_optics_diffractive.frontend",
})
