"""Registers the built-in classification task and its teachers.

Factories and configs are named as ``"module:attribute"``: listing them imports nothing heavy.
"""

from onnx_run.hookspecs import hookimpl

_SETTINGS = "onnx_run.tasks.settings"


@hookimpl
def register_tasks(register):
    register("classification", "onnx_run.tasks.classification:ClassificationTask",
             config=f"{_SETTINGS}:ClassificationConfig",
             description="image classification (digits, shapes-rgb, MNIST, Fashion-MNIST, CIFAR-10, folder)")


@hookimpl
def register_teachers(register):
    register("lenet", "onnx_run.tasks.teachers:lenet", config=f"{_SETTINGS}:LeNetConfig",
             description="LeNet-5 (MNIST-like)")
    register("alexnet", "onnx_run.tasks.teachers:alexnet", config=f"{_SETTINGS}:AlexNetConfig",
             description="AlexNet-style 5 conv + 3 FC, scaled to small images (CIFAR-like)")
    register("resnet", "onnx_run.tasks.teachers:resnet", config=f"{_SETTINGS}:ResNetConfig",
             description="CIFAR-style ResNet-(6n+2) with BatchNorm")
