"""Registers the segmentation task and its U-Net teacher with onnx-run.

Components are named as ``"module:attribute"``: listing them imports nothing heavy.
"""

from onnx_run.hookspecs import hookimpl


@hookimpl
def register_tasks(register):
    register("segmentation", "onnx_run_tasks_segmentation.task:SegmentationTask",
             config="onnx_run_tasks_segmentation.config:SegmentationConfig",
             description="binary segmentation, mIoU/Dice (embedded textured shapes, Carvana, image+mask folder)")


@hookimpl
def register_teachers(register):
    register("unet", "onnx_run_tasks_segmentation.teachers:unet", config="onnx_run_tasks_segmentation.config:UNetConfig",
             description="small U-Net (segmentation): conv blocks, max-pool down, up-convolution up, skips")
