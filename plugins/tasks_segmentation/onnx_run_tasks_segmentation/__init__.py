"""onnx-run plugin: the segmentation task (binary masks, mIoU), its datasets and a U-Net teacher.

Public API: :class:`SegmentationTask`, :class:`SegmentationConfig`, :func:`save_mask_figure`,
:func:`threshold_baseline`, :class:`UNet`, :class:`UpConvDecoder`.
"""

from onnx_run_tasks_segmentation.backends import UpConvDecoder
from onnx_run_tasks_segmentation.config import PRESETS, SEGMENTATION_DATASETS, SegmentationConfig
from onnx_run_tasks_segmentation.figures import save_mask_figure
from onnx_run_tasks_segmentation.metrics import segmentation_scores, threshold_baseline
from onnx_run_tasks_segmentation.task import SegmentationTask
from onnx_run_tasks_segmentation.teachers import UNet, UNetConfig

__all__ = ["PRESETS", "SEGMENTATION_DATASETS", "SegmentationConfig", "SegmentationTask", "UNet", "UNetConfig",
           "UpConvDecoder", "save_mask_figure", "segmentation_scores", "threshold_baseline"]
