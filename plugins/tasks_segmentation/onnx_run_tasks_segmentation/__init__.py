"""onnx-run plugin: the segmentation task (binary masks, mIoU), its datasets and a U-Net teacher.

Public API: :class:`SegmentationTask`, :class:`SegmentationConfig`, :func:`save_mask_figure`,
:func:`threshold_baseline`, :class:`UNet`, :class:`UpConvDecoder`.
"""

from onnx_run.lazy import lazy_exports

#: public name -> the module that defines it (imported on first use: importing the package stays light)
__getattr__, __all__ = lazy_exports(__name__, {
    "PRESETS": "onnx_run_tasks_segmentation.config",
    "SEGMENTATION_DATASETS": "onnx_run_tasks_segmentation.config",
    "SegmentationConfig": "onnx_run_tasks_segmentation.config",
    "UNetConfig": "onnx_run_tasks_segmentation.config",
    "SegmentationTask": "onnx_run_tasks_segmentation.task",
    "UNet": "onnx_run_tasks_segmentation.teachers",
    "UpConvDecoder": "onnx_run_tasks_segmentation.backends",
    "save_mask_figure": "onnx_run_tasks_segmentation.figures",
    "segmentation_scores": "onnx_run_tasks_segmentation.metrics",
    "threshold_baseline": "onnx_run_tasks_segmentation.metrics",
})
