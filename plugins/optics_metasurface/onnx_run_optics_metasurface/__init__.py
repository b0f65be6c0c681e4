"""onnx-run plugin: PSF-engineered metasurface."""
