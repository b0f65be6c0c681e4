"""All-optical classification (Lin et al. 2018): one detector region per class, no hidden layer.

The class scores are the optical powers collected by the K = classes readout regions; a
digital division by their sum makes them insensitive to the source power, and a per-detector
gain (a responsivity calibration, K numbers, initialised to 1) is the only thing that can
still be tuned after fabrication. The decision is the brightest (calibrated) detector. It is a
task rather than an optics option because in the core the task builds the backend.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from attrs import validators as v
from torch import nn

from onnx_run.errors import UserError
from onnx_run.tasks.classification import ClassificationTask
from onnx_run.tasks.datasets import CLASSIFICATION_DATASETS, SHAPES_RGB_CLASSES

#: classes of the datasets whose class count is known before loading them
KNOWN_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10,
                 "shapes-rgb": len(SHAPES_RGB_CLASSES)}


def _dataset(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in CLASSIFICATION_DATASETS:
        raise ValueError(f"'{attribute.name}' must be one of {', '.join(CLASSIFICATION_DATASETS)} (got {value!r})")


@attrs.define(kw_only=True)
class AllOpticalConfig:
    """Dataset settings as in ``classification``; ``temperature``: logits = temperature *
    gain_k * P_k / sum_j P_j (softmax cross-entropy on normalised detector signals);
    ``learn_gains``: whether the per-detector gains train (False: a fixed identity readout)."""

    dataset: str = attrs.field(default="digits", validator=_dataset)
    data_dir: str = ""
    val_fraction: float = attrs.field(default=0.1, validator=[v.gt(0), v.lt(0.5)])
    test_fraction: float = attrs.field(default=0.2, validator=[v.gt(0), v.lt(0.5)])
    temperature: float = attrs.field(default=10.0, validator=v.gt(0))
    learn_gains: bool = True

    @classmethod
    def run_presets(cls, settings: Any) -> dict[str, dict[str, Any]]:
        """``paper``: nothing of its own (no digital backend; the stack's size is the optics')."""
        return {"paper": {}}


class DetectorBackend(nn.Module):
    """(B, K, h, w) region maps -> (B, K) class logits: total power per region, normalised."""

    def __init__(self, num_outputs: int, temperature: float, learn_gains: bool = True):
        super().__init__()
        self.temperature = temperature
        self.log_gain = nn.Parameter(torch.zeros(num_outputs), requires_grad=learn_gains)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        power = features.flatten(2).sum(-1)
        share = power / power.sum(1, keepdim=True).clamp_min(1e-12)
        return self.temperature * share * self.log_gain.exp()


class AllOpticalTask(ClassificationTask):
    """Classification read by one optical detector per class (see module docstring)."""

    def optics_defaults(self) -> dict[str, Any]:
        out = dict(super().optics_defaults())
        if self.config.dataset in KNOWN_CLASSES:
            out["num_kernels"] = KNOWN_CLASSES[self.config.dataset]
        return out

    def build_backend(self, feature_shape, num_outputs):
        k = feature_shape[0]
        if k != num_outputs:
            raise UserError(f"task all-optical: the optics read {k} regions but the dataset has {num_outputs} "
                            f"classes; set optics.num_kernels = {num_outputs}")
        return DetectorBackend(num_outputs, self.config.temperature, self.config.learn_gains)

    def backend_for_estimate(self, feature_shape, num_outputs, width_multiplier):
        return self.build_backend(feature_shape, num_outputs)
