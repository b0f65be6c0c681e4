"""The training loop: seeded, checkpointed every epoch, resumable with identical results.

Batches come from a permutation drawn from a generator seeded by (seed, epoch), so an epoch
replays the same batches after a resume; the global RNG state is saved with the checkpoint
for anything else random (estimator directions, noise).

``precision`` (``run.precision``) puts the forward passes and the loss under ``torch.autocast``
(bf16, or fp16 with a GradScaler whose state is checkpointed); the optics and the NTK stay in
float32 (see :mod:`onnx_run.precision`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import attrs
import torch
from torch import nn
from tqdm.auto import tqdm

from onnx_run.components import DistillationLoss, DistillContext, GlobalBatch, Logs, Task
from onnx_run.config import TrainSettings
from onnx_run.errors import UserError
from onnx_run.precision import autocast, check_precision, float32_region, make_grad_scaler, to_float32
from onnx_run.train import distributed as dist
from onnx_run.train.checkpoint import load_checkpoint, save_checkpoint, write_json


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@attrs.define
class RunInfo:
    """What lifecycle hooks see about a run."""

    run_dir: Path
    name: str
    seed: int
    config: dict[str, Any] = attrs.field(factory=dict)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device: 'cuda' was asked for but CUDA is not available here; use 'cpu' or 'auto'")
    return torch.device(name)


def make_optimizer(model: nn.Module, settings: TrainSettings, param_names: list[str] | None) -> torch.optim.Optimizer:
    """Optical parameters (``frontend.*``) get ``optics_lr``: phases and kernels move on other scales."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if param_names is not None:
        wanted = set(param_names)
        named = [(n, p) for n, p in named if n in wanted]
    optics = [p for n, p in named if n.startswith("frontend.")]
    digital = [p for n, p in named if not n.startswith("frontend.")]
    groups = []
    if digital:
        groups.append({"params": digital, "lr": settings.lr})
    if optics:
        groups.append({"params": optics, "lr": settings.optics_lr})
    if not groups:
        raise UserError("nothing to train: the model has no trainable parameters in the chosen set")
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=0.9, weight_decay=settings.weight_decay)
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, weight_decay=settings.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, settings: TrainSettings, steps_per_epoch: int):
    total = max(1, settings.epochs * steps_per_epoch)
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if settings.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, total // 3), gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256, device: torch.device | None = None,
            transform: Callable[[torch.Tensor], torch.Tensor] | None = None, precision: str = "fp32") -> torch.Tensor:
    """Outputs of ``model`` on ``x`` in eval mode, batched, as float32; ``transform`` maps inputs
    first (in float32); ``precision`` as in ``run.precision`` (autocast for the model only)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    outs = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        if transform is not None:
            xb = transform(xb)
        with autocast(device, precision):
            outs.append(model(xb).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, task: Task, dataset, *, device: torch.device, batch_size: int = 256,
             transform=None, precision: str = "fp32") -> dict[str, float]:
    x, y = dataset.tensors[0], dataset.tensors[1]
    return task.metrics(predict(model, x, batch_size=batch_size, device=device, transform=transform,
                                precision=precision), y)


def _float32_outputs(out: Any) -> Any:
    """Model outputs computed under autocast, back in float32 for the losses (softmax, KL)."""
    return to_float32(out) if isinstance(out, torch.Tensor) else out


def _float32_kernel(teacher_kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], xb: torch.Tensor,
                    idx: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The teacher NTK of a batch, looked up (or computed) with autocast off: NTKs are float32."""
    def kernel() -> torch.Tensor:
        with float32_region():
            return teacher_kernel(xb, idx)
    return kernel


def step_loss(net: nn.Module, model: nn.Module, loss_fn: DistillationLoss, task: Task, *, x: torch.Tensor,
              y: torch.Tensor, index: torch.Tensor, student_input: torch.Tensor, device: torch.device,
              teacher: nn.Module | None = None,
              teacher_kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
              param_names: list[str] | None = None, precision: str = "fp32",
              global_batch: tuple[torch.Tensor, Callable[[], torch.Tensor]] | None = None,
              progress: float = 0.0) -> tuple[torch.Tensor, Logs]:
    """One training step's objective: the forward passes (the digital parts under autocast) and
    ``loss_fn``; ``net`` is ``model`` or its DDP wrapper. ``global_batch`` (torchrun with several
    processes): (indices, a function giving the images) of the whole batch, of which
    ``x``/``index`` are this process's share. Returns (loss, logs); nothing here waits for the
    device."""
    # a loss that computes the outputs itself (ntkd's kernel pass) saves a forward; DDP needs
    # its own forward to synchronise gradients
    skip_forward = getattr(loss_fn, "computes_outputs", False) and dist.world_size() == 1
    with autocast(device, precision):  # the digital parts; optics and NTKs stay float32
        out = None if skip_forward else _float32_outputs(net(student_input))
        t_out = None
        if teacher is not None and loss_fn.needs_teacher:
            with torch.no_grad():
                t_out = _float32_outputs(teacher(x))
        ctx = DistillContext(
            x=x, y=y, index=index, student=model, student_outputs=out, task=task, teacher=teacher,
            teacher_outputs=t_out,
            teacher_kernel=(_float32_kernel(teacher_kernel, x, index) if teacher_kernel else None),
            ntk_params=param_names, student_input=student_input, progress=progress,
        )
        if global_batch is not None:
            gidx, images = global_batch
            ctx.global_batch = GlobalBatch(
                rows=lambda t: dist.gather_rows(t, int(gidx.shape[0])),
                teacher_kernel=(lambda: _float32_kernel(teacher_kernel, images(), gidx)()) if teacher_kernel else None)
        return loss_fn(ctx)


#: a training set up to this size is moved to the accelerator once, before the first epoch
DATA_ON_DEVICE_MAX_BYTES = 2 * 2**30


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
    return rows


def train_model(
    model: nn.Module,
    task: Task,
    splits: Any,
    settings: TrainSettings,
    run_dir: Path,
    *,
    loss_fn: DistillationLoss,
    seed: int,
    device: torch.device,
    teacher: nn.Module | None = None,
    teacher_kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    param_names: list[str] | None = None,
    train_inputs: torch.Tensor | None = None,
    train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str = "train",
    progress: bool = True,
    hooks: bool = True,
    keep_initial: bool = False,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Train ``model`` (only ``param_names`` if given) and return the summary.

    The run directory receives metrics.jsonl (one line per epoch), last.pt (every epoch,
    for resume), best.pt (best validation primary metric) and summary.json (test metrics of
    the best model). An existing summary.json means the run is done: it is returned as is.
    ``train_inputs`` replaces what the student sees for the training images (e.g. captured
    feature maps after fabrication); the teacher always sees the raw images.
    ``teacher_kernel(x, index)`` gives the teacher NTK of a batch. ``keep_initial`` counts the
    starting weights as a candidate for best.pt (fine-tuning must never end worse on the
    validation set than where it started). ``precision``: "fp32", "bf16" or "fp16" (CUDA only):
    forward passes and losses run under autocast (the optics and NTKs stay float32); fp16 scales
    the loss with a GradScaler (overflowing steps are skipped), whose state goes into last.pt.
    """
    from onnx_run.plugins import call_lifecycle

    check_precision(precision, device)
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    main = dist.is_main()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    metrics_path = run_dir / "metrics.jsonl"
    last_path = run_dir / "last.pt"

    x_all, y_all = splits.train.tensors[0], splits.train.tensors[1]
    student_x = train_inputs if train_inputs is not None else x_all
    if device.type != "cpu" and _nbytes(x_all, y_all, student_x) <= DATA_ON_DEVICE_MAX_BYTES:
        # the training set once on the accelerator (MNIST: 0.2 GB, CIFAR-10: 0.6 GB), not a copy per step
        x_all, y_all, student_x = x_all.to(device), y_all.to(device), student_x.to(device)
    n = x_all.shape[0]
    if settings.max_train and settings.max_train < n:
        keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: settings.max_train]
        keep = keep.sort().values
    else:
        keep = torch.arange(n)
    steps_per_epoch = max(1, math.ceil(len(keep) / settings.batch_size))

    seed_everything(seed)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    if param_names is not None:
        wanted = set(param_names)
        for name, p in model.named_parameters():
            if name not in wanted:
                p.requires_grad_(False)
    net = dist.wrap(model, device)  # DDP when launched by torchrun; gradients averaged over ranks
    opt = make_optimizer(model, settings, param_names)
    sched = make_scheduler(opt, settings, steps_per_epoch)
    scaler = make_grad_scaler(device, precision)  # a no-op unless fp16

    start_epoch, best_metric, elapsed = 0, -math.inf, 0.0
    if last_path.exists():
        state = load_checkpoint(last_path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_metric = float(state["best_metric"])
        elapsed = float(state.get("elapsed_s", 0.0))
        if scaler.is_enabled() and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        rows = [r for r in _read_metrics(metrics_path) if r.get("epoch", -1) < start_epoch]
        if main:
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif metrics_path.exists() and main:
        metrics_path.unlink()  # a previous attempt died before its first checkpoint
    dist.barrier()

    if keep_initial and start_epoch == 0:
        val0 = evaluate(model, task, splits.val, device=device, transform=eval_transform, precision=precision)
        best_metric = val0[task.primary_metric]
        if main:
            save_checkpoint(run_dir / "best.pt", {"model": model.state_dict(), "epoch": -1,
                                                  task.primary_metric: best_metric})
        dist.barrier()

    info = RunInfo(run_dir=run_dir, name=desc, seed=seed)
    if hooks and main:
        call_lifecycle("on_run_start", run=info)
    primary = task.primary_metric

    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed * 100003 + epoch))]
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{settings.epochs}",
                   disable=not progress or not main, leave=False, dynamic_ncols=True)
        for step in bar:
            batch = perm[step * settings.batch_size:(step + 1) * settings.batch_size]
            idx = dist.local_slice(batch)
            xb = x_all[idx].to(device)
            yb = y_all[idx].to(device)
            sb = student_x[idx].to(device) if train_inputs is not None else xb
            if train_transform is not None:
                sb = train_transform(sb)
            loss, logs = step_loss(net, model, loss_fn, task, x=xb, y=yb, index=idx, student_input=sb,
                                   teacher=teacher, teacher_kernel=teacher_kernel, param_names=param_names,
                                   device=device, precision=precision,
                                   global_batch=((batch, lambda: x_all[batch].to(device)) if dist.world_size() > 1
                                                 else None),
                                   progress=(epoch * steps_per_epoch + step) / (settings.epochs * steps_per_epoch))
            loss_value = float(loss.detach())  # the step's one wait for the device
            if not dist.all_finite(math.isfinite(loss_value)):
                raise TrainingDiverged(
                    f"{desc}: loss became {loss_value} at epoch {epoch + 1}, step {step + 1}; "
                    f"stopped, last good checkpoint kept in {last_path if last_path.exists() else run_dir}; "
                    f"lower train.lr / train.optics_lr"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # unscaled unless fp16
            if settings.grad_clip:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], settings.grad_clip)
            scaler.step(opt)  # fp16: skipped when a gradient is inf/NaN
            scaler.update()
            sched.step()
            for k, val in {"loss": loss_value, **logs}.items():
                sums[k] = sums.get(k, 0.0) + (val.detach() if isinstance(val, torch.Tensor) else val)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        bar.close()
        sums = {k: dist.all_mean(float(x)) for k, x in sums.items()}
        val = evaluate(model, task, splits.val, device=device, transform=eval_transform, precision=precision)
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, **{f"train_{k}": s / steps_per_epoch for k, s in sums.items()},
               **{f"val_{k}": x for k, x in val.items()}, "lr": opt.param_groups[0]["lr"],
               "elapsed_s": round(elapsed, 3)}
        improved = val[primary] > best_metric
        if improved:
            best_metric = val[primary]
        if main:  # checkpoints are written once, by rank 0
            if improved:
                save_checkpoint(run_dir / "best.pt", {"model": model.state_dict(), "epoch": epoch,
                                                      primary: best_metric})
            state = {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "epoch": epoch, "best_metric": best_metric, "elapsed_s": elapsed, "rng": torch.get_rng_state(),
            }
            if scaler.is_enabled():
                state["scaler"] = scaler.state_dict()
            save_checkpoint(last_path, state)
            with metrics_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            if hooks:
                call_lifecycle("on_epoch_end", run=info, epoch=epoch, metrics=row)
        dist.barrier()

    if (run_dir / "best.pt").exists():
        model.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device)["model"])
    test = evaluate(model, task, splits.test, device=device, transform=eval_transform, precision=precision)
    val = evaluate(model, task, splits.val, device=device, transform=eval_transform, precision=precision)
    summary = {"name": desc, "seed": seed, "epochs": settings.epochs, "wall_time_s": round(elapsed, 2),
               **{f"test_{k}": x for k, x in test.items()}, **{f"val_{k}": x for k, x in val.items()}}
    if main:
        write_json(summary_path, summary)
        if hooks:
            call_lifecycle("on_run_end", run=info, summary=summary)
    dist.barrier()
    return summary
