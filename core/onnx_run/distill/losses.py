"""The three built-in training objectives compared throughout the project.

- ``none``: the task loss only.
- ``kd``: Hinton et al. knowledge distillation, alpha * T^2 * KL(teacher_T || student_T)
  + (1 - alpha) * task loss.
- ``ntkd``: alpha * task loss + beta * D(Theta_student, Theta_teacher), where Theta are the
  empirical NTKs of the batch (n x n, the parameter axis contracted away, so teacher and
  student sizes need not match) and D a kernel discrepancy; optionally + kd_weight * the KD
  term on the outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from onnx_run.components import DistillationLoss, DistillContext, Logs
from onnx_run.distill.settings import KDConfig, NTKDConfig
from onnx_run.precision import float32_region, to_float32


class NoDistillation(DistillationLoss):
    """Task loss only: the baseline without a teacher. Its search spends the same budget on the
    learning rates, its only settings (a strong baseline is part of a fair comparison)."""

    search_space = {"train.lr": [0.003, 0.01, 0.03], "train.optics_lr": [0.01, 0.05]}

    def __call__(self, ctx: DistillContext) -> tuple[torch.Tensor, Logs]:
        loss = ctx.task.loss(ctx.student_outputs, ctx.y)
        return loss, {"task_loss": loss.detach()}


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




def scheduled(weight: float, schedule: str, progress: float) -> float:
    """``weight`` at ``progress`` (0 = first step, 1 = end) of training under ``schedule``."""
    if schedule == "linear":
        return weight * (1.0 - progress)
    if schedule == "cosine":
        return weight * 0.5 * (1.0 + math.cos(math.pi * progress))
    return weight


class NTKDLoss(DistillationLoss):
    needs_teacher = True
    needs_teacher_kernel = True
    search_space = {"distill.ntkd.beta": [0.3, 1.0, 3.0], "distill.ntkd.beta_schedule": ["constant", "cosine"]}
    #: the structured NTK pass also yields the outputs: the loop may skip its own forward
    computes_outputs = True

    @property
    def needs_teacher_outputs(self) -> bool:  # the kernel alone needs no teacher forward per step
        return self.config.kd_weight > 0

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
        logs = {"task_loss": task_loss.detach(), "ntk_loss": disc.detach()}
        if cfg.kd_weight:
            assert ctx.teacher_outputs is not None
            soft = kd_loss(ctx.task.soft_targets(ctx.student_outputs), ctx.task.soft_targets(ctx.teacher_outputs),
                           cfg.kd_temperature)
            loss = loss + cfg.kd_weight * soft
            logs["kd_loss"] = soft.detach()
        return loss, logs

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
