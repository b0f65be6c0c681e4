"""Registers the built-in classification task and its teachers."""

from onnx_run.hookspecs import hookimpl
from onnx_run.tasks import teachers
from onnx_run.tasks.classification import ClassificationConfig, ClassificationTask


@hookimpl
def register_tasks(register):
    register("classification", ClassificationTask, config=ClassificationConfig,
             description="image classification (digits, shapes-rgb, MNIST, Fashion-MNIST, CIFAR-10, folder)")


@hookimpl
def register_teachers(register):
    register("lenet", teachers.lenet, config=teachers.LeNetConfig, description="LeNet-5 (MNIST-like)")
    register("alexnet", teachers.alexnet, config=teachers.AlexNetConfig,
             description="AlexNet-style 5 conv + 3 FC, scaled to small images (CIFAR-like)")
    register("resnet", teachers.resnet, config=teachers.ResNetConfig,
             description="CIFAR-style ResNet-(6n+2) with BatchNorm")
