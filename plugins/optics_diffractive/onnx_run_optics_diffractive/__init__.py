"""onnx-run plugin: multi-layer diffractive networks (D2NN) as optical frontends."""

#: public name -> the module that defines it
_PUBLIC = {
    "PRESETS": "onnx_run_optics_diffractive.config",
    "DiffractiveConfig": "onnx_run_optics_diffractive.config",
    "Geometry": "onnx_run_optics_diffractive.config",
    "resolve": "onnx_run_optics_diffractive.config",
    "DiffractiveFrontend": "onnx_run_optics_diffractive.frontend",
    "layout_for": "onnx_run_optics_diffractive.frontend",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):  # the public API, imported on first use: importing the package stays light
    import importlib

    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
