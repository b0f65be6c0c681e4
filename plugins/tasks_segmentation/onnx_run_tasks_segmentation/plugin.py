"""Registers the segmentation task and its U-Net teacher with onnx-run."""

from onnx_run.hookspecs import hookimpl
from onnx_run_tasks_segmentation import teachers
from onnx_run_tasks_segmentation.config import SegmentationConfig
from onnx_run_tasks_segmentation.task import SegmentationTask


@hookimpl
def register_tasks(register):
    register("segmentation", SegmentationTask, config=SegmentationConfig,
             description="binary segmentation, mIoU/Dice (embedded textured shapes, Carvana, image+mask folder)")


@hookimpl
def register_teachers(register):
    register("unet", teachers.unet, config=teachers.UNetConfig,
             description="small U-Net (segmentation): conv blocks, max-pool down, up-convolution up, skips")
