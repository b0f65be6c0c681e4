"""onnx-run plugin: PSF-engineered metasurface (meta-atom library, PSF design, GDSII export)."""

__version__ = "0.1.0"
