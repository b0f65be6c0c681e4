"""Settings of the built-in classification task and its teachers (``[task]``, ``[teacher]``).

Apart from the task and the networks so that reading a config (``onnx-run config show``)
imports no torch. The task's suggestions for the other sections live here too, on its
config, for the same reason: resolving a run never has to build the task.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import attrs
from attrs import validators as v

__all__ = ["COLOUR_DATASETS", "AlexNetConfig", "ClassificationConfig", "LeNetConfig", "ResNetConfig"]

#: datasets of RGB images (the optics get 3 wavelength channels, the teacher is AlexNet)
COLOUR_DATASETS = ("cifar10", "shapes-rgb")


def _dataset_name(instance: Any, attribute: Any, value: str) -> None:
    from onnx_run.tasks.formats.registry import READERS as CLASSIFICATION_DATASETS

    if value not in CLASSIFICATION_DATASETS:
        raise ValueError(f"'{attribute.name}' must be one of {', '.join(CLASSIFICATION_DATASETS)} (got {value!r})")


@attrs.define(kw_only=True)
class ClassificationConfig:
    """Dataset and backend of a classification task.

    ``hidden``: widths of the backend's hidden FC layers (paper: one hidden layer for
    MNIST-like data, two for CIFAR-like); ``pool``: average pooling of the sensor maps
    before the FC layers.
    """

    dataset: str = attrs.field(default="digits", validator=_dataset_name)
    data_dir: str = ""
    hidden: list[int] = attrs.field(factory=lambda: [32], validator=v.deep_iterable(
        v.and_(v.instance_of(int), v.ge(1), v.le(100_000)), v.instance_of(list)))
    pool: int = attrs.field(default=2, validator=v.ge(1))
    batchnorm: bool = False
    val_fraction: float = attrs.field(default=0.1, validator=[v.gt(0), v.lt(0.5)])
    test_fraction: float = attrs.field(default=0.2, validator=[v.gt(0), v.lt(0.5)])

    #: what kind of task this configures: this config carries the task's suggestions below,
    #: so resolving a run never builds the task (components.Task reads them from here)
    task_kind: ClassVar[str] = "classification"

    def default_teacher(self) -> str:
        """AlexNet for colour datasets (the paper's CIFAR-10 teacher), LeNet for grey ones."""
        return "alexnet" if self.dataset in COLOUR_DATASETS else "lenet"

    def optics_defaults(self) -> dict[str, Any]:
        """Colour datasets ask for RGB optics (one PSF per wavelength channel)."""
        if self.dataset in COLOUR_DATASETS:
            return {"channels": 3, "input_size_px": 32}
        return {}

    def core_defaults(self) -> dict[str, dict[str, Any]]:
        """Backend learning rate 0.01: on digits (4f, 15 epochs, 5 seeds) it gave no
        distillation 96.2 %, KD 95.5 %, NTKD 96.5 %, against 94.6 / 93.1 / 94.7 % at the core's
        0.002 (a dense decoder wants the lower rate: segmentation keeps it)."""
        return {"train": {"lr": 0.01}}

    @classmethod
    def run_presets(cls, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """``paper``: the paper's backends, for feature maps of the input's size pooled 2x2.
        MNIST-like (grey): 2 FC layers, hidden 32: 8 x 14 x 14 -> 32 -> 10 = 0.05 M parameters;
        CIFAR-like (RGB): 3 FC layers, hidden 384, 128: 16 x 16 x 16 -> 384 -> 128 -> 10 = 1.62 M."""
        rgb = settings.get("dataset", attrs.fields(cls).dataset.default) in COLOUR_DATASETS
        return {"paper": {"hidden": [384, 128] if rgb else [32], "pool": 2, "batchnorm": False}}


@attrs.define(kw_only=True)
class LeNetConfig:
    """LeNet-5 widths."""

    conv1: int = attrs.field(default=6, validator=v.ge(1))
    conv2: int = attrs.field(default=16, validator=v.ge(1))
    fc1: int = attrs.field(default=120, validator=v.ge(1))
    fc2: int = attrs.field(default=84, validator=v.ge(1))

    @classmethod
    def run_presets(cls, settings):
        """``paper``: the defaults already are LeNet-5's."""
        return {"paper": {}}


@attrs.define(kw_only=True)
class AlexNetConfig:
    """An AlexNet-style stack scaled to small images: five convs, three FC layers."""

    width: int = attrs.field(default=32, validator=v.ge(4))
    fc: int = attrs.field(default=256, validator=v.ge(8))
    dropout: float = attrs.field(default=0.3, validator=[v.ge(0), v.lt(1)])
    #: "kaiming": He-normal weights (fan-in, ReLU gain), zero biases; "torch": PyTorch's
    #: default, whose weights are 1/sqrt(3) of He's: eight ReLU layers deep the signal starts
    #: ~80x too small, and on shapes-rgb 2 of 3 seeds stayed at chance (14.7 / 13.0 / 92.5 %
    #: test; He: 98.8 / 99.5 / 98.8 %)
    init: str = attrs.field(default="kaiming", validator=v.in_(("kaiming", "torch")))

    @classmethod
    def run_presets(cls, settings):
        """``paper``: a full-width CIFAR AlexNet (convs 64/128/256/256/128, FC 1024, dropout 0.5;
        4.4 M parameters at 32 px) for the paper's 85 % teacher instead of the CPU-sized default."""
        return {"paper": {"width": 64, "fc": 1024, "dropout": 0.5}}


@attrs.define(kw_only=True)
class ResNetConfig:
    """A CIFAR-style ResNet: 3 stages of ``blocks`` basic blocks (ResNet-(6n+2))."""

    width: int = attrs.field(default=16, validator=v.ge(4))
    blocks: int = attrs.field(default=1, validator=[v.ge(1), v.le(9)])
