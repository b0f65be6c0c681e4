"""onnx-run plugin: segmentation task."""
