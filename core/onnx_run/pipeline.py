"""The pipeline: stages run in order, each skipping work already done in the run directory.

Stages: teacher -> students -> report. Every stage is resumable: a student whose
summary.json exists is not retrained; one with a last.pt continues from it.
Everything that can fail on user input (config, plugins, data files, checkpoint shapes) is
checked before the run directory is created, so bad input never leaves half a run behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from onnx_run.components import HybridModel
from onnx_run.config import RunConfig, load_toml, resolve
from onnx_run.errors import UserError
from onnx_run.train.checkpoint import atomic_write_text, write_json
from onnx_run.train.loop import resolve_device, seed_everything, train_model

STAGES: tuple[str, ...] = ("teacher", "students", "report")


def default_run_dir(cfg: RunConfig) -> Path:
    name = cfg.run.name or f"{cfg.optics.name}-{cfg.task.name}-{getattr(cfg.task.config, 'dataset', 'data')}"
    return Path(cfg.run.out) / name


def parse_stages(text: str | None) -> tuple[str, ...]:
    if not text:
        return STAGES
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in chosen:
        if s not in STAGES:
            raise UserError(f"--stages: unknown stage {s!r}; stages are {', '.join(STAGES)}")
    return chosen


class Pipeline:
    """One run directory, its config, and the stages that fill it."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, teacher_checkpoint: str | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.teacher_checkpoint = teacher_checkpoint
        self.device = resolve_device(cfg.run.device)
        self.progress = cfg.run.progress
        self.task = cfg.task.build()
        seed_everything(cfg.run.seed)
        probe = cfg.optics.build()
        self.channels = probe.in_channels
        self.input_size = tuple(probe.input_size)
        self.feature_shape = probe.feature_shape()
        self.splits = self.task.datasets(image_size=self.input_size, channels=self.channels, seed=cfg.run.seed)
        self.num_outputs = self.task.num_outputs(self.splits)
        self.dataset = getattr(cfg.task.config, "dataset", cfg.task.name)
        self._teacher: tuple[torch.nn.Module, dict[str, Any]] | None = None
        self._teacher_kernel = None
        if teacher_checkpoint and not Path(teacher_checkpoint).is_file():
            raise UserError(f"--teacher-checkpoint {teacher_checkpoint}: file not found")

    # -- run directory -----------------------------------------------------------------------
    @classmethod
    def from_run_dir(cls, run_dir: Path, **kwargs: Any) -> "Pipeline":
        path = Path(run_dir) / "config.toml"
        if not path.exists():
            raise UserError(f"run directory {run_dir}: no config.toml; is this an onnx-run run directory?")
        return cls(resolve(load_toml(path)), Path(run_dir), **kwargs)

    def prepare(self) -> None:
        """Create the run directory and write the resolved config (refuse a different one)."""
        text = self.cfg.to_toml()
        path = self.run_dir / "config.toml"
        if path.exists() and path.read_text() != text:
            raise UserError(
                f"run directory {self.run_dir} holds a different config; choose another --out/--set run.name, "
                f"or continue it with --resume {self.run_dir}"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)

    def seeds(self) -> list[int]:
        return [self.cfg.run.seed + i for i in range(self.cfg.run.seeds)]

    # -- components ----------------------------------------------------------------------------
    def build_student(self, seed: int) -> HybridModel:
        seed_everything(seed)
        frontend = self.cfg.optics.build()
        backend = self.task.build_backend(frontend.feature_shape(), self.num_outputs)
        return HybridModel(frontend, backend)

    def teacher(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        if self._teacher is None:
            from onnx_run.train.teacher import get_teacher

            self._teacher = get_teacher(self.cfg, self.task, self.splits, dataset=self.dataset,
                                        seed=self.cfg.run.seed, device=self.device,
                                        checkpoint=self.teacher_checkpoint, progress=self.progress)
        return self._teacher

    def teacher_kernel(self):
        """Teacher NTK per batch, from a cache computed once for the training set."""
        if self._teacher_kernel is None:
            from onnx_run.ntk import TeacherKernelCache

            teacher, _ = self.teacher()
            x = self.splits.train.tensors[0].to(self.device)
            cache = TeacherKernelCache(teacher, x, reduce=self.task.ntk_reduce)
            self._teacher_kernel = lambda xb, idx: cache.kernel(idx.to(self.device))
        return self._teacher_kernel

    # -- stages -----------------------------------------------------------------------------
    def stage_teacher(self) -> dict[str, Any]:
        _, info = self.teacher()
        write_json(self.run_dir / "teacher.json", info)
        return info

    def student_dir(self, method: str, seed: int) -> Path:
        return self.run_dir / "students" / method / f"seed{seed}"

    def stage_students(self) -> dict[str, list[dict[str, Any]]]:
        results: dict[str, list[dict[str, Any]]] = {}
        for method, choice in self.cfg.methods["distill"].items():
            loss_fn = choice.build()
            for seed in self.seeds():
                run_dir = self.student_dir(method, seed)
                if (run_dir / "summary.json").exists():
                    results.setdefault(method, []).append(json.loads((run_dir / "summary.json").read_text()))
                    continue
                teacher = self.teacher()[0] if loss_fn.needs_teacher else None
                kernel = self.teacher_kernel() if loss_fn.needs_teacher_kernel else None
                model = self.build_student(seed)
                summary = train_model(model, self.task, self.splits, self.cfg.train, run_dir, loss_fn=loss_fn,
                                      seed=seed, device=self.device, teacher=teacher, teacher_kernel=kernel,
                                      desc=f"student {method} seed {seed}", progress=self.progress)
                results.setdefault(method, []).append(summary)
        return results

    def stage_report(self) -> dict[str, Any]:
        from onnx_run.report.tables import write_results

        return write_results(self.run_dir, primary=self.task.primary_metric)

    def run(self, stages: tuple[str, ...] = STAGES, echo=print) -> dict[str, Any]:
        self.prepare()
        out: dict[str, Any] = {}
        for stage in stages:
            t0 = time.perf_counter()
            echo(f"[{stage}] ...")
            out[stage] = getattr(self, f"stage_{stage}")()
            echo(f"[{stage}] done in {time.perf_counter() - t0:.1f} s")
        return out
