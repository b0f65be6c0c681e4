"""Settings of the ``all-optical`` task (``[task]``), apart from the task so that reading a
config imports no torch; its suggestions for the optics live here too, for the same reason."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from attrs import validators as v

from onnx_run.tasks.formats.registry import READERS as CLASSIFICATION_DATASETS
from onnx_run.tasks.formats.shapes_rgb import SHAPES_RGB_CLASSES
from onnx_run.tasks.settings import ClassificationConfig

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

    #: this config carries the task's suggestions (below): resolving a run never builds the task
    task_kind: ClassVar[str] = "classification"
    default_teacher = ClassificationConfig.default_teacher
    core_defaults = ClassificationConfig.core_defaults

    def optics_defaults(self) -> dict[str, Any]:
        """As classification's, and one readout region per class where the class count is known."""
        out = ClassificationConfig.optics_defaults(self)  # type: ignore[arg-type]
        if self.dataset in KNOWN_CLASSES:
            out["num_kernels"] = KNOWN_CLASSES[self.dataset]
        return out

    @classmethod
    def run_presets(cls, settings: Any) -> dict[str, dict[str, Any]]:
        """``paper``: nothing of its own (no digital backend; the stack's size is the optics')."""
        return {"paper": {}}
