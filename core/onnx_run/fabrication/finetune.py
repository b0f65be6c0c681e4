"""Post-fabrication compensation: only the digital backend can still learn.

The backend of a trained student is fine-tuned on ``fraction`` of the training images as
captured through the fabricated (or measured) frontend. With ``ntkd`` the student's NTK is
taken w.r.t. the backend parameters only (the backend sees captured feature maps) and the
teacher's on the raw images, as in the paper.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import attrs
import torch
from torch.utils.data import TensorDataset

from onnx_run.distill.losses import NoDistillation
from onnx_run.errors import UserError
from onnx_run.files import write_json
from onnx_run.train.loop import Output, Recipe, TrainData, Trainee, Training, evaluate, predict

FINETUNE_METHODS = ("none", "e2e", "kd", "ntkd")


@attrs.frozen
class CapturedSplits:
    """Training split of raw images (for the teacher) + captured features for val/test."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    classes: tuple


def finetune_subset(n_train: int, fraction: float, seed: int) -> torch.Tensor:
    """The training indices captured through the device (seeded, sorted)."""
    n = max(1, round(n_train * fraction))
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:n].sort().values


def backend_state(student_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("backend."):]: v for k, v in student_state.items() if k.startswith("backend.")}


def finetune_backend(*, task, splits, backend: torch.nn.Module, train_idx: torch.Tensor, train_features: torch.Tensor,
                     val_features: torch.Tensor, test_features: torch.Tensor, method: str, settings, run_dir: Path,
                     seed: int, device: torch.device, teacher=None, loss_choices: dict[str, Any] | None = None,
                     progress: bool = True, precision: str = "fp32",
                     out_of_fold: Callable[[int], torch.Tensor | None] | None = None,
                     teacher_cache: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Fine-tune (or, for ``none``, just evaluate) a copy of ``backend`` on captured features;
    ``precision`` (``run.precision``) is the autocast of the backend and teacher; ``out_of_fold(K)``
    gives the out-of-fold teacher outputs of the whole training split for a loss that asks for
    them (``teacher_folds``); ``teacher_cache()`` the teacher's kernel cache over the captured
    training images, when the caller shares one between methods and learning rates."""
    if method not in FINETUNE_METHODS:
        raise UserError(f"finetune.methods: unknown method {method!r}; allowed: {', '.join(FINETUNE_METHODS)}")
    run_dir = Path(run_dir)
    y_train = splits.train.tensors[1][train_idx]
    data = CapturedSplits(
        train=TensorDataset(splits.train.tensors[0][train_idx], y_train),
        val=TensorDataset(val_features, splits.val.tensors[1]),
        test=TensorDataset(test_features, splits.test.tensors[1]),
        classes=tuple(getattr(splits, "classes", ())),
    )
    model = copy.deepcopy(backend).to(device)
    if method == "none":
        if (run_dir / "summary.json").exists():
            import json

            return json.loads((run_dir / "summary.json").read_text())
        test = evaluate(model, task, data.test, device=device, precision=precision)
        val = evaluate(model, task, data.val, device=device, precision=precision)
        summary = {"name": "none", "seed": seed, "epochs": 0, "wall_time_s": 0.0,
                   **{f"test_{k}": x for k, x in test.items()}, **{f"val_{k}": x for k, x in val.items()}}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "summary.json", summary)
        return summary
    choices = loss_choices or {}
    if method == "e2e":
        loss_fn = NoDistillation(None)
    else:
        if method not in choices:
            raise UserError(f"finetune.methods: {method!r} needs its settings in [distill.{method}]")
        loss_fn = choices[method].build()
    teacher_kernel = None
    if loss_fn.needs_teacher_kernel:
        from onnx_run.ntk.teacher_cache import bounded_cache

        cache = teacher_cache() if teacher_cache is not None else \
            bounded_cache(teacher, data.train.tensors[0].to(device), reduce=task.ntk_reduce, progress=progress)
        teacher_kernel = lambda xb, idx: cache.kernel(idx)  # noqa: E731  (idx on the CPU: checked there)
    outputs = None
    if loss_fn.teacher_folds:
        if out_of_fold is None:
            raise UserError(f"finetune.methods: {method!r} asks for out-of-fold teacher targets "
                            f"(folds = {loss_fn.teacher_folds}) that this fine-tuning cannot build; set folds = 0")
        outputs = out_of_fold(loss_fn.teacher_folds)[train_idx]
    elif teacher is not None and loss_fn.needs_teacher and loss_fn.needs_teacher_outputs:
        # a frozen teacher on fixed images: its outputs once, not on every batch of every epoch and lr
        outputs = predict(teacher, data.train.tensors[0], device=device, precision=precision)
    # positions in the captured subset: the training indexes train data and features alike
    return Training(
        trainee=Trainee(model=model, loss_fn=loss_fn, teacher=teacher if loss_fn.needs_teacher else None,
                        teacher_kernel=teacher_kernel, teacher_outputs=outputs,
                        param_names=[n for n, p in model.named_parameters() if p.requires_grad], keep_initial=True),
        data=TrainData(task=task, splits=data, train_inputs=train_features),
        recipe=Recipe(settings=settings, seed=seed, device=device, precision=precision),
        output=Output(run_dir=run_dir, desc=f"finetune {method} seed {seed}", progress=progress),
    ).run()
