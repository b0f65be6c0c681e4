"""Design before training: kernel layout from physical size, and an NTK accuracy estimate."""

from onnx_run.estimate.layout import grid_layout, smallest_size_for_one

__all__ = ["grid_layout", "smallest_size_for_one"]
