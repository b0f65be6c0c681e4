"""Settings of the built-in distillation losses (``[distill.kd]``, ``[distill.ntkd]``).

Apart from the losses so that reading a config (``onnx-run config show``) imports no torch.
The names of the NTK estimators and discrepancies are repeated from onnx_run.ntk, which a
test keeps in step.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

__all__ = ["BETA_SCHEDULES", "DISCREPANCIES", "KDConfig", "NTKDConfig", "NTK_METHODS"]

NTK_METHODS = ("exact", "jvp", "fd", "structured")
DISCREPANCIES = ("mse", "mse_normalized", "alignment", "alignment_centered")
BETA_SCHEDULES = ("constant", "linear", "cosine")


def _folds(instance, attribute, value: int) -> None:
    if value == 1 or not 0 <= value <= 20:
        raise ValueError(f"'{attribute.name}' must be 0 (the teacher's own targets) or a number of folds from 2 "
                         f"to 20 (got {value!r})")


@attrs.define(kw_only=True)
class KDConfig:
    """Hinton KD. Default T = 1, alpha = 0.5, out-of-fold targets from 2 fold teachers: the point
    ``onnx-run compare`` chose on validation for both the 4f and the metasurface on
    Fashion-MNIST (docs/ntk.md); the group's earlier T = 10 with the teacher's own targets put
    KD 3 points below no distillation there (``--preset paper`` keeps it)."""

    temperature: float = attrs.field(default=1.0, validator=v.gt(0))
    alpha: float = attrs.field(default=0.5, validator=[v.ge(0), v.le(1)])
    #: z-score each row of logits (teacher and student) before the temperature softmax (Sun et
    #: al., "Logit Standardization in Knowledge Distillation", CVPR 2024): the student matches the
    #: teacher's ranking and relative margins, not the scale of an over-confident teacher's logits,
    #: which a small student cannot reach; the temperature then acts on unit-variance logits
    standardize: bool = False
    #: soft targets on the training images: 0 from the teacher itself, K >= 2 out of fold (each
    #: image's from one of K extra teachers trained without it, cached): a teacher's outputs on
    #: images it trained on are close to the labels (docs/ntk.md, "Why the teacher's targets")
    folds: int = attrs.field(default=2, validator=_folds)

    @classmethod
    def run_presets(cls, settings):
        """``paper``: the group's earlier KD (T = 10, alpha = 0.5, the teacher's own targets)."""
        return {"paper": {"temperature": 10.0, "alpha": 0.5, "standardize": False, "folds": 0}}


@attrs.define(kw_only=True)
class NTKDConfig:
    """NTKD: L = alpha * L_task + beta * D(student NTK, teacher NTK) on each batch.

    ``discrepancy``: how the very different scales of the two kernels are reconciled (the
    paper is silent): ``mse`` on raw kernels (the paper's wording), ``mse_normalized``,
    ``alignment`` (1 - cosine) or ``alignment_centered``. ``estimator``: ``structured``
    (exact and cheap: per-layer structure), ``exact`` (Jacobians), ``jvp`` / ``fd`` (random
    parameter directions, ``directions`` of them; ``fd`` steps by ``eps``).
    """

    alpha: float = attrs.field(default=1.0, validator=v.ge(0))
    #: default beta 1 with a cosine decay: the best mean over the 4f and metasurface searches of
    #: ``onnx-run compare`` on Fashion-MNIST (docs/ntk.md; beta 0.3 constant within 0.05 points)
    beta: float = attrs.field(default=1.0, validator=v.ge(0))
    discrepancy: str = attrs.field(default="alignment_centered", validator=v.in_(DISCREPANCIES))
    estimator: str = attrs.field(default="structured", validator=v.in_(NTK_METHODS))
    directions: int = attrs.field(default=16, validator=v.ge(1))
    eps: float = attrs.field(default=1e-3, validator=v.gt(0))
    max_samples: int = attrs.field(default=0, validator=v.ge(0))  # 0: the whole batch
    #: the student parameters the NTK is taken over: "backend" (the digital layers; the kernel
    #: still depends on the optics through the features they see, so the loss trains the optics
    #: too) or "all" (the paper's full kernel; exact per-sample Jacobians of a large optical
    #: parametrisation such as a 216 x 216 phase mask cost minutes per step on 2 CPU cores)
    params: str = attrs.field(default="backend", validator=v.in_(["backend", "all"]))
    #: how beta changes over training: "constant", or decaying to 0 at the end ("linear",
    #: "cosine"): the teacher's kernel shapes the features early, the task loss has the last word
    beta_schedule: str = attrs.field(default="cosine", validator=v.in_(BETA_SCHEDULES))
    #: weight of a Hinton KD term on the outputs, kd_weight * T^2 * KL(teacher_T || student_T) at
    #: T = ``kd_temperature`` (the teacher's own outputs), added to the kernel term; 0 is the
    #: paper's NTKD. The kernel says how the network responds to a change of its parameters, the
    #: outputs what it should compute: after fabrication, distilling from the design
    #: (``finetune.teacher = "design"``) both are known (docs/fabrication.md measures each alone)
    kd_weight: float = attrs.field(default=0.0, validator=v.ge(0))
    kd_temperature: float = attrs.field(default=1.0, validator=v.gt(0))

    @classmethod
    def run_presets(cls, settings):
        """``paper``: sizes only; the kernel estimate keeps the measured defaults (the paper's full
        random-direction kernel is ``params = "all"``, ``estimator = "jvp"``: set them yourself)."""
        return {"paper": {}}
