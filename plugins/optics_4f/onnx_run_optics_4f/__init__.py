"""onnx-run plugin: 4f Fourier-plane optics (SLM/DOE mask)."""
