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
import warnings
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from torch.utils.data import TensorDataset

from onnx_run.components import TeacherSpec
from onnx_run.config import RunConfig, unstructure
from onnx_run.train.checkpoint import load_checkpoint, load_state_dict_checked
from onnx_run.train.loop import (Output, Recipe, TrainData, Trainee, Training, evaluate, predict,
                                 seed_everything)


def cache_root() -> Path:
    return Path(os.environ.get("ONNX_RUN_CACHE") or Path.home() / ".cache" / "onnx-run")


def teacher_spec(task: Any, splits: Any) -> TeacherSpec:
    x = splits.train.tensors[0]
    return TeacherSpec(task_kind=task.kind, channels=int(x.shape[1]), image_size=(int(x.shape[2]), int(x.shape[3])),
                       num_outputs=task.num_outputs(splits))


def build_teacher(cfg: RunConfig, spec: TeacherSpec, seed: int) -> nn.Module:
    seed_everything(seed)
    return cfg.teacher.factory(cfg.teacher.config, spec)


def teacher_key(cfg: RunConfig, spec: TeacherSpec, dataset: str, seed: int,
                fold: tuple[int, int] | None = None) -> str:
    """The cache name of a teacher; ``fold`` (k, K): the one trained without fold k of K."""
    ident = {
        "dataset": dataset, "spec": [spec.task_kind, spec.channels, list(spec.image_size), spec.num_outputs],
        "teacher": cfg.teacher.name,
        "config": unstructure(cfg.teacher.config) if cfg.teacher.config is not None else None,
        "train": unstructure(cfg.teacher_train), "seed": seed,
    }
    if cfg.run.precision != "fp32":  # mixed precision trains other weights (fp32 keys unchanged)
        ident["precision"] = cfg.run.precision
    if fold is not None:  # whole-split teachers keep their keys
        ident["fold"] = list(fold)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{dataset}-{cfg.teacher.name}-seed{seed}"
    return f"{name}-fold{fold[0] + 1}of{fold[1]}-{digest}" if fold is not None else f"{name}-{digest}"


def _trained_teacher(cfg: RunConfig, task: Any, splits: Any, spec: TeacherSpec, run_dir: Path, *, seed: int,
                     device: torch.device, progress: bool, desc: str) -> tuple[nn.Module, dict[str, Any]]:
    """A teacher trained on ``splits`` (or the finished run in ``run_dir``), best weights loaded."""
    from onnx_run.distill.losses import NoDistillation

    model = build_teacher(cfg, spec, seed)
    summary = Training(
        trainee=Trainee(model=model, loss_fn=NoDistillation(None)), data=TrainData(task=task, splits=splits),
        recipe=Recipe(settings=cfg.teacher_train, seed=seed, device=device, precision=cfg.run.precision),
        output=Output(run_dir=run_dir, desc=desc, progress=progress, hooks=False),
    ).run()
    model.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device)["model"])
    return model, summary


def folds_of(n: int, folds: int, seed: int) -> list[torch.Tensor]:
    """``folds`` disjoint, sorted index sets covering range(n), from a permutation seeded by ``seed``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [perm[k::folds].sort().values for k in range(folds)]


#: a fold teacher more than this far below the whole-split teacher on validation (primary
#: metric, as a fraction) has failed to train (an AlexNet on half of shapes-rgb's 2 400 images
#: once stayed at chance): its fold gets the whole-split teacher's outputs instead, with a warning
OUT_OF_FOLD_MAX_DROP = 0.10


def out_of_fold_outputs(cfg: RunConfig, task: Any, splits: Any, *, dataset: str, seed: int, device: torch.device,
                        folds: int, progress: bool = True,
                        fallback: tuple[nn.Module, float] | None = None) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Teacher outputs on every training image, each from a teacher that never trained on it.

    A teacher's outputs on its own training images carry what it memorised: the widened LeNet
    on Fashion-MNIST fits 99.6 % of them, with 0.02 nats of entropy left, so its "soft" targets
    there are the labels again. The training split is cut into ``folds`` folds (seeded); teacher
    k (same architecture and training, cached like the main teacher) trains on every fold but k
    and gives fold k its targets: soft targets that show how the teacher generalises, as its
    outputs on new images do (stacking's out-of-fold rule). ``fallback``: (the whole-split
    teacher, its validation metric); a fold teacher more than OUT_OF_FOLD_MAX_DROP below it gives
    its fold that teacher's outputs instead (a warning says so; its info has ``"targets":
    "teacher"``). Returns (outputs as float32 on the CPU, rows as the training split; one info
    dict per fold teacher).
    """
    spec = teacher_spec(task, splits)
    x, y = splits.train.tensors[0], splits.train.tensors[1]
    parts = folds_of(x.shape[0], folds, seed)
    outputs: torch.Tensor | None = None
    infos = []
    for k, held_out in enumerate(parts):
        keep = torch.ones(x.shape[0], dtype=torch.bool)
        keep[held_out] = False
        fold_splits = attrs.evolve(splits, train=TensorDataset(x[keep], y[keep]))
        run_dir = cache_root() / "teachers" / teacher_key(cfg, spec, dataset, seed, fold=(k, folds))
        model, summary = _trained_teacher(cfg, task, fold_splits, spec, run_dir, seed=seed + k, device=device,
                                          progress=progress, desc=f"teacher {cfg.teacher.name} fold {k + 1}/{folds}")
        model.eval()
        val = summary[f"val_{task.primary_metric}"]
        failed = fallback is not None and val < fallback[1] - OUT_OF_FOLD_MAX_DROP
        if failed:
            warnings.warn(f"out-of-fold KD targets: fold teacher {k + 1}/{folds} reached {task.primary_metric} "
                          f"{val:.3f} on validation against the teacher's {fallback[1]:.3f}; its fold gets the "
                          f"teacher's own outputs (more data per fold teacher: raise distill.kd.folds)", stacklevel=2)
        held = predict(fallback[0] if failed else model, x[held_out], device=device, precision=cfg.run.precision)
        if outputs is None:
            outputs = torch.zeros((x.shape[0], *held.shape[1:]), dtype=torch.float32)
        outputs[held_out] = held
        test = evaluate(model, task, splits.test, device=device, precision=cfg.run.precision)
        infos.append({"fold": k + 1, "folds": folds, "images": int(keep.sum()), "source": str(run_dir),
                      "targets": "teacher" if failed else "fold teacher",
                      **{f"test_{m}": v for m, v in test.items()},
                      **{k2: v for k2, v in summary.items() if k2.startswith("val_")}})
    assert outputs is not None
    return outputs, infos


def check_teacher_checkpoint(cfg: RunConfig, task: Any, splits: Any, checkpoint: str, seed: int) -> None:
    """Load ``--teacher-checkpoint`` into the configured teacher once, before a run directory
    is written: a file that is not a state dict, or one of another network, is one line."""
    load_state_dict_checked(build_teacher(cfg, teacher_spec(task, splits), seed), load_checkpoint(Path(checkpoint)),
                            f"--teacher-checkpoint {checkpoint}")


def check_teacher_input(cfg: RunConfig, task: Any, splits: Any) -> None:
    """Run the configured teacher once on two blank images of the run's size, before anything
    is written: a network that cannot take them (LeNet's 5 x 5 convolutions and pooling need 10
    px; the images follow the optics' input size) is one line naming the keys, not a traceback
    at the teacher stage."""
    from onnx_run.errors import UserError

    spec = teacher_spec(task, splits)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # the run's random state is left as it was
            cfg.teacher.factory(cfg.teacher.config, spec).eval()(torch.zeros((2, spec.channels, *spec.image_size)))
    except (RuntimeError, ValueError) as exc:  # torch's shape errors; a plugin teacher's own checks
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"teacher.name: {cfg.teacher.name!r} cannot take the run's {spec.image_size[0]} x "
                        f"{spec.image_size[1]} px images (optics.input_size_px): {reason}; raise the input size, "
                        f"choose another teacher, or run without one (--distill none --stages students)") from None


def get_teacher(cfg: RunConfig, task: Any, splits: Any, *, dataset: str, seed: int, device: torch.device,
                checkpoint: str | None = None, progress: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The frozen teacher and its info (accuracy, where it came from)."""
    spec = teacher_spec(task, splits)
    if checkpoint:
        model = build_teacher(cfg, spec, seed)
        load_state_dict_checked(model, load_checkpoint(Path(checkpoint)), f"--teacher-checkpoint {checkpoint}")
        model.to(device).eval()
        test = evaluate(model, task, splits.test, device=device, precision=cfg.run.precision)
        info = {"source": str(checkpoint), "name": cfg.teacher.name,
                **{f"test_{k}": x for k, x in test.items()}}
    else:
        run_dir = cache_root() / "teachers" / teacher_key(cfg, spec, dataset, seed)
        model, summary = _trained_teacher(cfg, task, splits, spec, run_dir, seed=seed, device=device,
                                          progress=progress, desc=f"teacher {cfg.teacher.name}")
        info = {**summary, "source": str(run_dir), "name": cfg.teacher.name}
    info["parameters"] = sum(p.numel() for p in model.parameters())
    _warn_at_chance(task, splits, info)
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, info


def _warn_at_chance(task: Any, splits: Any, info: dict[str, Any]) -> None:
    """A teacher within 5 points of a predictor that ignores the image learned nothing, and
    KD or NTKD from it teaches nothing: say so (one line; also in teacher.json)."""
    chance = task.chance_score(splits) if hasattr(task, "chance_score") else None
    metric = task.primary_metric
    score = info.get(f"val_{metric}", info.get(f"test_{metric}"))
    if chance is None or score is None or score > chance + 0.05:
        return
    info["warning"] = (f"teacher {info['name']}: {metric} {score * 100:.1f} % is at chance (the most frequent class "
                       f"gives {chance * 100:.1f} %): its training failed, and distillation from it teaches "
                       f"nothing; try teacher_train.lr lower, another --seed, or --teacher-checkpoint")
    warnings.warn(info["warning"], stacklevel=2)
