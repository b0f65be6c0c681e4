"""onnx-run plugin: 4f Fourier-plane optics (SLM/DOE mask)."""

#: public name -> the module that defines it
_PUBLIC = {
    "Frontend4f": "onnx_run_optics_4f.frontend",
    "Optics4fConfig": "onnx_run_optics_4f.config",
    "layout_for": "onnx_run_optics_4f.geometry",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):  # the public API, imported on first use: importing the package stays light
    import importlib

    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
