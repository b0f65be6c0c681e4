"""onnx-run plugin: multi-layer diffractive phase masks."""
