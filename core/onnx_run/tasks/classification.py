"""The built-in classification task."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from onnx_run.components import Task
from onnx_run.tasks.backends import FCBackend
from onnx_run.tasks.settings import COLOUR_DATASETS, ClassificationConfig  # noqa: F401 - the task's config


class ClassificationTask(Task):
    """Image classification; its suggestions for the other sections are on its config
    (:class:`~onnx_run.tasks.settings.ClassificationConfig`)."""

    kind = "classification"
    primary_metric = "accuracy"

    def datasets(self, *, image_size: tuple[int, int], channels: int, seed: int) -> Any:
        from onnx_run.tasks.datasets import load_classification_dataset

        c = self.config
        return load_classification_dataset(
            c.dataset, image_size=tuple(image_size), channels=channels, seed=seed,
            data_dir=c.data_dir or None, val_fraction=c.val_fraction, test_fraction=c.test_fraction,
        )

    def num_outputs(self, splits: Any) -> int:
        return len(splits.classes)

    def chance_score(self, splits: Any) -> float | None:
        labels = splits.val.tensors[1]
        return float(torch.bincount(labels).max()) / len(labels) if len(labels) else None

    def build_backend(self, feature_shape, num_outputs):
        c = self.config
        return FCBackend(feature_shape, num_outputs, hidden=c.hidden, pool=c.pool, batchnorm=c.batchnorm)

    def backend_for_estimate(self, feature_shape, num_outputs, width_multiplier):
        c = self.config
        return FCBackend(feature_shape, num_outputs, hidden=[h * width_multiplier for h in c.hidden], pool=c.pool,
                         batchnorm=False)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        pred = outputs.argmax(1)
        return {
            "accuracy": float((pred == targets).float().mean()),
            "loss": float(F.cross_entropy(outputs, targets)),
        }
