"""The three built-in training objectives compared throughout the project.

- ``none``: the task loss only.
- ``kd``: Hinton et al. knowledge distillation, alpha * T^2 * KL(teacher_T || student_T)
  + (1 - alpha) * task loss.
- ``ntkd``: alpha * task loss + beta * D(Theta_student, Theta_teacher), where Theta are the
  empirical NTKs of the batch (n x n, the parameter axis contracted away, so teacher and
  student sizes need not match) and D a kernel discrepancy.
"""

from __future__ import annotations

import math

import attrs
import torch
import torch.nn.functional as F
from attrs import validators as v

from onnx_run.components import DistillationLoss, DistillContext, Logs
from onnx_run.precision import float32_region, to_float32


class NoDistillation(DistillationLoss):
    """Task loss only: the baseline without a teacher. Its search spends the same budget on the
    learning rates, its only settings (a strong baseline is part of a fair comparison)."""

    search_space = {"train.lr": [0.003, 0.01, 0.03], "train.optics_lr": [0.01, 0.05]}

    def __call__(self, ctx: DistillContext) -> tuple[torch.Tensor, Logs]:
        loss = ctx.task.loss(ctx.student_outputs, ctx.y)
        return loss, {"task_loss": loss.detach()}


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


def standardized(logits: torch.Tensor) -> torch.Tensor:
    """Each row z-scored: (z - mean) / std (a constant row stays constant)."""
    centred = logits - logits.mean(-1, keepdim=True)
    return centred / centred.std(-1, keepdim=True).clamp_min(1e-6)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, *,
            standardize: bool = False) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over rows (N, classes); with
    ``standardize`` both logits are z-scored per row first."""
    t = temperature
    student_logits, teacher_logits = to_float32(student_logits), to_float32(teacher_logits)  # mixed precision
    if standardize:
        student_logits, teacher_logits = standardized(student_logits), standardized(teacher_logits)
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    return t * t * kl


class KDLoss(DistillationLoss):
    needs_teacher = True
    search_space = {"distill.kd.temperature": [1.0, 2.0, 4.0], "distill.kd.folds": [0, 2]}

    @property
    def teacher_folds(self) -> int:
        return self.config.folds

    def __call__(self, ctx: DistillContext) -> tuple[torch.Tensor, Logs]:
        cfg: KDConfig = self.config
        task_loss = ctx.task.loss(ctx.student_outputs, ctx.y)
        assert ctx.teacher_outputs is not None
        soft = kd_loss(ctx.task.soft_targets(ctx.student_outputs),
                       ctx.task.soft_targets(ctx.teacher_outputs), cfg.temperature, standardize=cfg.standardize)
        loss = cfg.alpha * soft + (1 - cfg.alpha) * task_loss
        return loss, {"task_loss": task_loss.detach(), "kd_loss": soft.detach()}


NTK_METHODS = ("exact", "jvp", "fd", "structured")
DISCREPANCIES = ("mse", "mse_normalized", "alignment", "alignment_centered")
BETA_SCHEDULES = ("constant", "linear", "cosine")


def scheduled(weight: float, schedule: str, progress: float) -> float:
    """``weight`` at ``progress`` (0 = first step, 1 = end) of training under ``schedule``."""
    if schedule == "linear":
        return weight * (1.0 - progress)
    if schedule == "cosine":
        return weight * 0.5 * (1.0 + math.cos(math.pi * progress))
    return weight


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

    @classmethod
    def run_presets(cls, settings):
        """``paper``: sizes only; the kernel estimate keeps the measured defaults (the paper's full
        random-direction kernel is ``params = "all"``, ``estimator = "jvp"``: set them yourself)."""
        return {"paper": {}}


class NTKDLoss(DistillationLoss):
    needs_teacher = True
    needs_teacher_outputs = False  # the kernel alone: no teacher forward per step
    needs_teacher_kernel = True
    search_space = {"distill.ntkd.beta": [0.3, 1.0, 3.0], "distill.ntkd.beta_schedule": ["constant", "cosine"]}
    #: the structured NTK pass also yields the outputs: the loop may skip its own forward
    computes_outputs = True

    def __call__(self, ctx: DistillContext) -> tuple[torch.Tensor, Logs]:
        from onnx_run.ntk import kernel_discrepancy

        cfg: NTKDConfig = self.config
        assert ctx.teacher_kernel is not None
        x = ctx.student_input if ctx.student_input is not None else ctx.x
        names = ctx.ntk_params
        if names is None and cfg.params == "backend" and hasattr(ctx.student, "backend_parameter_names"):
            names = ctx.student.backend_parameter_names()
        if ctx.global_batch is not None and cfg.estimator in ("structured", "exact"):
            k_student, k_teacher = self._whole_batch_kernels(ctx, x, names)
        else:
            k_student, k_teacher = self._batch_kernels(ctx, x, names)
        task_loss = ctx.task.loss(ctx.student_outputs, ctx.y)
        disc = kernel_discrepancy(k_student, k_teacher.to(k_student), kind=cfg.discrepancy)
        loss = cfg.alpha * task_loss + scheduled(cfg.beta, cfg.beta_schedule, ctx.progress) * disc
        return loss, {"task_loss": task_loss.detach(), "ntk_loss": disc.detach()}

    def _batch_kernels(self, ctx: DistillContext, x: torch.Tensor, names) -> tuple[torch.Tensor, torch.Tensor]:
        """(student, teacher) NTKs of this process's batch (its first ``max_samples``); sets the
        student's outputs when the kernel pass yields them."""
        from onnx_run.ntk import empirical_ntk, empirical_ntk_with_outputs

        cfg: NTKDConfig = self.config
        assert ctx.teacher_kernel is not None
        with float32_region():  # under run.precision bf16/fp16 too: both kernels are float32
            k_teacher = ctx.teacher_kernel()
        subset = bool(cfg.max_samples) and x.shape[0] > cfg.max_samples
        if subset:
            k_teacher = k_teacher[: cfg.max_samples, : cfg.max_samples]
        if ctx.student_outputs is None and cfg.estimator == "structured" and not subset:
            # one forward for both the task loss and the kernel
            k_student, outputs = empirical_ntk_with_outputs(ctx.student, x, params=names,
                                                            reduce=ctx.task.ntk_reduce, create_graph=True)
            ctx.student_outputs = outputs
            return k_student, k_teacher
        if ctx.student_outputs is None:
            ctx.student_outputs = to_float32(ctx.student(x))
        xs = x[: cfg.max_samples] if subset else x
        k_student = empirical_ntk(
            ctx.student, xs, params=names, reduce=ctx.task.ntk_reduce,
            method=cfg.estimator, directions=cfg.directions, eps=cfg.eps, create_graph=True,
        )
        return k_student, k_teacher

    def _whole_batch_kernels(self, ctx: DistillContext, x: torch.Tensor, names) -> tuple[torch.Tensor, torch.Tensor]:
        """Under torchrun: each process computes the kernel factors of its own samples, the
        factors of all processes are gathered (differentiably) into the whole batch's, and every
        process forms the same n x n kernels as one process would; DDP's average of the
        gradients is then that of the single-process loss (tested)."""
        from onnx_run.ntk import ntk_factors
        from onnx_run.ntk.factors import cross_kernel

        cfg: NTKDConfig = self.config
        gb = ctx.global_batch
        assert gb is not None and gb.teacher_kernel is not None
        with float32_region():
            k_teacher = gb.teacher_kernel()
        fac = ntk_factors(ctx.student, x, params=names, reduce=ctx.task.ntk_reduce, method=cfg.estimator,
                          create_graph=True)
        if ctx.student_outputs is None:
            ctx.student_outputs = fac.model_output
        whole = fac.map_rows(gb.rows)
        if cfg.max_samples and k_teacher.shape[0] > cfg.max_samples:  # the first samples, as in one process
            whole = whole.select(slice(0, cfg.max_samples))
            k_teacher = k_teacher[: cfg.max_samples, : cfg.max_samples]
        return cross_kernel(whole, whole), k_teacher
