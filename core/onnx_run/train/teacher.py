"""Teachers: built from the registry, trained once and cached, or loaded from a user file.

The cache key holds everything that changes the trained weights: dataset, image size and
channels, architecture and its config, training settings and seed. The cache directory is
``$ONNX_RUN_CACHE`` (default ``~/.cache/onnx-run``); a cached teacher is a finished training
run directory (metrics.jsonl, best.pt, summary.json with its accuracy).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from onnx_run.components import TeacherSpec
from onnx_run.config import RunConfig, unstructure
from onnx_run.train.checkpoint import load_checkpoint, load_state_dict_checked
from onnx_run.train.loop import Output, Recipe, TrainData, Trainee, Training, seed_everything


def cache_root() -> Path:
    return Path(os.environ.get("ONNX_RUN_CACHE") or Path.home() / ".cache" / "onnx-run")


def teacher_spec(task: Any, splits: Any) -> TeacherSpec:
    x = splits.train.tensors[0]
    return TeacherSpec(task_kind=task.kind, channels=int(x.shape[1]), image_size=(int(x.shape[2]), int(x.shape[3])),
                       num_outputs=task.num_outputs(splits))


def build_teacher(cfg: RunConfig, spec: TeacherSpec, seed: int) -> nn.Module:
    seed_everything(seed)
    return cfg.teacher.factory(cfg.teacher.config, spec)


def teacher_key(cfg: RunConfig, spec: TeacherSpec, dataset: str, seed: int) -> str:
    ident = {
        "dataset": dataset, "spec": [spec.task_kind, spec.channels, list(spec.image_size), spec.num_outputs],
        "teacher": cfg.teacher.name,
        "config": unstructure(cfg.teacher.config) if cfg.teacher.config is not None else None,
        "train": unstructure(cfg.teacher_train), "seed": seed,
    }
    if cfg.run.precision != "fp32":  # mixed precision trains other weights (fp32 keys unchanged)
        ident["precision"] = cfg.run.precision
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    return f"{dataset}-{cfg.teacher.name}-seed{seed}-{digest}"


def get_teacher(cfg: RunConfig, task: Any, splits: Any, *, dataset: str, seed: int, device: torch.device,
                checkpoint: str | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher and its info (accuracy, where it came from)."""
    from onnx_run.distill.losses import NoDistillation
    from onnx_run.train.loop import evaluate

    spec = teacher_spec(task, splits)
    model = build_teacher(cfg, spec, seed)
    if checkpoint:
        load_state_dict_checked(model, load_checkpoint(Path(checkpoint)), f"--teacher-checkpoint {checkpoint}")
        model.to(device).eval()
        test = evaluate(model, task, splits.test, device=device, precision=cfg.run.precision)
        info = {"source": str(checkpoint), "name": cfg.teacher.name,
                **{f"test_{k}": x for k, x in test.items()}}
    else:
        run_dir = cache_root() / "teachers" / teacher_key(cfg, spec, dataset, seed)
        summary = Training(
            trainee=Trainee(model=model, loss_fn=NoDistillation(None)), data=TrainData(task=task, splits=splits),
            recipe=Recipe(settings=cfg.teacher_train, seed=seed, device=device, precision=cfg.run.precision),
            output=Output(run_dir=run_dir, desc=f"teacher {cfg.teacher.name}", progress=progress, hooks=False),
        ).run()
        model.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device)["model"])
        info = {**summary, "source": str(run_dir), "name": cfg.teacher.name}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info
