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

from onnx_run.components import DistillationLoss, DistillContext, GlobalBatch, Logs, RunInfo, Task
from onnx_run.config import TrainSettings
from onnx_run.errors import UserError
from onnx_run.files import atomic_write_text, write_json
from onnx_run.precision import autocast, check_precision, float32_region, make_grad_scaler, to_float32
from onnx_run.progress import bar as progress_bar
from onnx_run.progress import log_line
from onnx_run.train import distributed as dist
from onnx_run.train.checkpoint import UnreadableCheckpoint, load_checkpoint, save_checkpoint


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


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


def _busy_cores() -> float:
    """Cores other processes keep busy now: the runnable tasks in /proc/loadavg, less this one,
    the least of three looks 10 ms apart (a passing spike is no neighbour). The load average
    would lag a minute behind (a job that just ended would still count); it is the fallback
    where there is no /proc."""
    import os

    try:
        looks = []
        for i in range(3):
            with open("/proc/loadavg") as fh:
                looks.append(int(fh.read().split()[3].split("/")[0]) - 1)
            if i < 2:
                time.sleep(0.01)
        return float(max(0, min(looks)))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:  # no load average on this platform
            return 0.0


def auto_threads() -> int:
    """torch's CPU threads for ``run.threads = 0``: the cores this process may use, less those
    other processes keep busy now, at least 1. torch's own default, one thread per core, fights
    any neighbour for the cores: beside 2 busy processes on 2 cores, 2 threads trained 1.9-3x
    slower than 1 (benchmarks/bench_threads.py)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, cores - round(_busy_cores())))


def apply_threads(threads: int) -> int:
    """Set torch's CPU threads (``run.threads``; 0: :func:`auto_threads`) and return the number."""
    n = threads or auto_threads()
    torch.set_num_threads(n)
    return n


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
              progress: float = 0.0, teacher_outputs: torch.Tensor | None = None) -> tuple[torch.Tensor, Logs]:
    """One training step's objective: the forward passes (the digital parts under autocast) and
    ``loss_fn``; ``net`` is ``model`` or its DDP wrapper. ``global_batch`` (torchrun with several
    processes): (indices, a function giving the images) of the whole batch, of which
    ``x``/``index`` are this process's share. ``teacher_outputs``: the teacher's outputs on
    this batch, looked up from a table (no teacher forward then). Returns (loss, logs); nothing
    here waits for the device."""
    # a loss that computes the outputs itself (ntkd's kernel pass) saves a forward; DDP needs
    # its own forward to synchronise gradients
    skip_forward = getattr(loss_fn, "computes_outputs", False) and dist.world_size() == 1
    with autocast(device, precision):  # the digital parts; optics and NTKs stay float32
        out = None if skip_forward else _float32_outputs(net(student_input))
        t_out = teacher_outputs
        if t_out is None and teacher is not None and loss_fn.needs_teacher and loss_fn.needs_teacher_outputs:
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
#: the frozen teacher's outputs on the training images are computed once, before the first
#: epoch, when they fit in this many bytes (classification: 54 000 x 10 floats = 2 MB); larger
#: (dense) outputs are computed per step
TEACHER_OUTPUTS_MAX_BYTES = 2**30


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


@attrs.define
class Trainee:
    """What to train: the model, its loss, and what that loss needs (a frozen teacher, the
    teacher's batch kernel ``teacher_kernel(x, index)``). Only ``param_names`` train when given;
    ``keep_initial`` counts the starting weights as a candidate for best.pt (fine-tuning must
    never end worse on validation than where it started)."""

    model: nn.Module
    loss_fn: DistillationLoss
    teacher: nn.Module | None = None
    teacher_kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    param_names: list[str] | None = None
    keep_initial: bool = False
    #: the teacher's outputs on every training image (rows as the training split), e.g. the
    #: out-of-fold targets of ``DistillationLoss.teacher_folds``; None: the loop computes the
    #: teacher's own once before training (or per step, if they are too large to keep)
    teacher_outputs: torch.Tensor | None = None


@attrs.define
class TrainData:
    """On what: the task and its splits. ``train_inputs`` replaces what the student sees for the
    training images (e.g. captured feature maps after fabrication); the teacher always sees the
    raw images. The transforms map student inputs before the model (in float32)."""

    task: Task
    splits: Any
    train_inputs: torch.Tensor | None = None
    train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None


@attrs.define
class Recipe:
    """How: the train.* settings, the seed, the device and ``run.precision`` ("fp32", "bf16" or
    "fp16": forward passes and losses under autocast, optics and NTKs in float32; fp16 scales
    the loss with a GradScaler whose state goes into last.pt)."""

    settings: TrainSettings
    seed: int
    device: torch.device
    precision: str = "fp32"


@attrs.define
class Output:
    """Where to write: the run directory, the name shown and given to lifecycle hooks, whether
    progress bars show and whether the hooks are called (a cached teacher calls none)."""

    run_dir: Path
    desc: str = "train"
    progress: bool = True
    hooks: bool = True


@attrs.define
class Training:
    """One training run: what to train, on what, how, and where to write.

    The run directory receives metrics.jsonl (one line per epoch), last.pt (every epoch, for
    resume), best.pt (best validation primary metric) and summary.json (test metrics of the
    best model). An existing summary.json means the run is done: :meth:`run` returns it as is.
    The pipeline, fine-tuning, teachers and the distributed path all train through this.
    """

    trainee: Trainee
    data: TrainData
    recipe: Recipe
    output: Output

    def run(self) -> dict[str, Any]:
        """Train (or resume, or return the finished summary) and return the summary."""
        check_precision(self.recipe.precision, self.recipe.device)
        run_dir = Path(self.output.run_dir)
        summary_path = run_dir / "summary.json"
        if summary_path.exists():
            return json.loads(summary_path.read_text())
        if dist.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        loop = _Loop(self, run_dir)
        loop.resume()
        loop.start()
        for epoch in range(loop.start_epoch, self.recipe.settings.epochs):
            loop.epoch(epoch)
        return loop.finish()


class _Loop:
    """The mutable state of one :class:`Training` while it runs (optimizer, schedule, best
    metric, elapsed time), with one method per phase."""

    def __init__(self, training: Training, run_dir: Path):
        self.t, self.run_dir = training, run_dir
        trainee, data, recipe = training.trainee, training.data, training.recipe
        self.settings, self.device, self.seed = recipe.settings, recipe.device, recipe.seed
        self.main = dist.is_main()
        self.metrics_path, self.last_path = run_dir / "metrics.jsonl", run_dir / "last.pt"
        x_all, y_all = data.splits.train.tensors[0], data.splits.train.tensors[1]
        student_x = data.train_inputs if data.train_inputs is not None else x_all
        if self.device.type != "cpu" and _nbytes(x_all, y_all, student_x) <= DATA_ON_DEVICE_MAX_BYTES:
            # the training set once on the accelerator (MNIST: 0.2 GB, CIFAR-10: 0.6 GB), not a copy per step
            x_all, y_all, student_x = x_all.to(self.device), y_all.to(self.device), student_x.to(self.device)
        self.x_all, self.y_all, self.student_x = x_all, y_all, student_x
        n = x_all.shape[0]
        if self.settings.max_train and self.settings.max_train < n:
            keep = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[: self.settings.max_train]
            self.keep = keep.sort().values
        else:
            self.keep = torch.arange(n)
        self.steps_per_epoch = max(1, math.ceil(len(self.keep) / self.settings.batch_size))

        seed_everything(self.seed)
        model = trainee.model
        model.to(self.device)
        if trainee.teacher is not None:
            trainee.teacher.to(self.device).eval()
        if trainee.param_names is not None:
            wanted = set(trainee.param_names)
            for name, p in model.named_parameters():
                if name not in wanted:
                    p.requires_grad_(False)
        self.teacher_outputs = self._teacher_outputs()
        self.net = dist.wrap(model, self.device)  # DDP when launched by torchrun; gradients averaged over ranks
        self.opt = make_optimizer(model, self.settings, trainee.param_names)
        self.sched = make_scheduler(self.opt, self.settings, self.steps_per_epoch)
        self.scaler = make_grad_scaler(self.device, recipe.precision)  # a no-op unless fp16
        self.start_epoch, self.best_metric, self.elapsed = 0, -math.inf, 0.0
        self.primary = data.task.primary_metric
        self.info = RunInfo(run_dir=run_dir, name=training.output.desc, seed=self.seed)

    def _teacher_outputs(self) -> torch.Tensor | None:
        """The teacher's outputs on the training images, as a table indexed like them: given
        (out-of-fold targets), or computed once here, for the images this run trains on, when
        the loss reads them and they fit TEACHER_OUTPUTS_MAX_BYTES (a frozen teacher gives every
        image the same output in every epoch, so E epochs need one pass, not E)."""
        trainee = self.t.trainee
        loss_fn = trainee.loss_fn
        if trainee.teacher is None or not (loss_fn.needs_teacher and loss_fn.needs_teacher_outputs):
            return None
        if trainee.teacher_outputs is not None:
            if trainee.teacher_outputs.shape[0] != self.x_all.shape[0]:
                raise UserError(f"{self.t.output.desc}: {trainee.teacher_outputs.shape[0]} teacher outputs for "
                                f"{self.x_all.shape[0]} training images")
            return trainee.teacher_outputs.to(self.device)
        precision = self.t.recipe.precision
        probe = predict(trainee.teacher, self.x_all[:1], device=self.device, precision=precision)
        if probe.numel() * 4 * self.x_all.shape[0] > TEACHER_OUTPUTS_MAX_BYTES:
            return None
        table = torch.zeros((self.x_all.shape[0], *probe.shape[1:]), dtype=torch.float32, device=self.device)
        table[self.keep.to(self.device)] = predict(trainee.teacher, self.x_all[self.keep], device=self.device,
                                                   precision=precision).to(self.device)
        return table

    def _evaluate(self, split) -> dict[str, float]:
        data = self.t.data
        return evaluate(self.t.trainee.model, data.task, split, device=self.device,
                        transform=data.eval_transform, precision=self.t.recipe.precision)

    def _hook(self, name: str, **kwargs: Any) -> None:
        from onnx_run.plugins import call_lifecycle

        if self.t.output.hooks and self.main:
            call_lifecycle(name, run=self.info, **kwargs)

    def resume(self) -> None:
        """Continue from last.pt if one exists (metrics after its epoch are dropped and redone)."""
        model = self.t.trainee.model
        if self.last_path.exists():
            try:
                state = load_checkpoint(self.last_path, map_location=self.device)
                model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["optimizer"])
                self.sched.load_state_dict(state["scheduler"])
                self.start_epoch = int(state["epoch"]) + 1
                self.best_metric = float(state["best_metric"])
                self.elapsed = float(state.get("elapsed_s", 0.0))
                if self.scaler.is_enabled() and "scaler" in state:
                    self.scaler.load_state_dict(state["scaler"])
                torch.set_rng_state(state["rng"])
            except (UnreadableCheckpoint, KeyError, TypeError, ValueError, RuntimeError) as exc:
                why = exc.why if isinstance(exc, UnreadableCheckpoint) else \
                    f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
                raise UserError(f"{self.last_path}: this training's last checkpoint cannot be read ({why}); "
                                f"delete it to redo this training from its start, then --resume") from None
            rows = [r for r in _read_metrics(self.metrics_path) if r.get("epoch", -1) < self.start_epoch]
            if self.main:
                atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        elif self.metrics_path.exists() and self.main:
            self.metrics_path.unlink()  # a previous attempt died before its first checkpoint
        dist.barrier()

    def start(self) -> None:
        if self.t.trainee.keep_initial and self.start_epoch == 0:
            self.best_metric = self._evaluate(self.t.data.splits.val)[self.primary]
            if self.main:
                save_checkpoint(self.run_dir / "best.pt", {"model": self.t.trainee.model.state_dict(), "epoch": -1,
                                                           self.primary: self.best_metric})
            dist.barrier()
        self._hook("on_run_start")

    def _step(self, epoch: int, step: int, perm: torch.Tensor) -> tuple[float, Logs]:
        trainee, data, s = self.t.trainee, self.t.data, self.settings
        batch = perm[step * s.batch_size:(step + 1) * s.batch_size]
        idx = dist.local_slice(batch)
        xb = self.x_all[idx].to(self.device)
        yb = self.y_all[idx].to(self.device)
        sb = self.student_x[idx].to(self.device) if data.train_inputs is not None else xb
        if data.train_transform is not None:
            sb = data.train_transform(sb)
        x_all, device = self.x_all, self.device
        loss, logs = step_loss(self.net, trainee.model, trainee.loss_fn, data.task, x=xb, y=yb, index=idx,
                               student_input=sb, teacher=trainee.teacher, teacher_kernel=trainee.teacher_kernel,
                               param_names=trainee.param_names, device=device, precision=self.t.recipe.precision,
                               global_batch=((batch, lambda: x_all[batch].to(device)) if dist.world_size() > 1
                                             else None),
                               progress=(epoch * self.steps_per_epoch + step) / (s.epochs * self.steps_per_epoch),
                               teacher_outputs=None if self.teacher_outputs is None else self.teacher_outputs[idx])
        loss_value = float(loss.detach())  # the step's one wait for the device
        if not dist.all_finite(math.isfinite(loss_value)):
            kept = (f"{f'epochs 1-{epoch} are' if epoch > 1 else 'epoch 1 is'} kept in {self.last_path}"
                    if epoch and self.last_path.exists()
                    else "no epoch of it was finished, nothing kept")
            raise TrainingDiverged(
                f"{self.t.output.desc}: the loss became {loss_value} at epoch {epoch + 1}, step {step + 1} "
                f"(lr {s.lr:g}, optics lr {s.optics_lr:g}); stopped, {kept}; allowed: a lower learning rate, "
                f"in a new run (e.g. half of it)"
            )
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # unscaled unless fp16
        if s.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], s.grad_clip)
        self.scaler.step(self.opt)  # fp16: skipped when a gradient is inf/NaN
        self.scaler.update()
        self.sched.step()
        return loss_value, logs

    def epoch(self, epoch: int) -> None:
        """One epoch: the steps, validation, best.pt / last.pt / metrics.jsonl, on_epoch_end."""
        t0 = time.perf_counter()
        model, s = self.t.trainee.model, self.settings
        model.train()
        perm = self.keep[torch.randperm(len(self.keep), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))]
        sums: dict[str, float] = {}
        shown = self.t.output.progress and self.main
        bar = progress_bar(range(self.steps_per_epoch), desc=f"{self.t.output.desc} epoch {epoch + 1}/{s.epochs}",
                           enabled=shown)
        for step in bar:
            loss_value, logs = self._step(epoch, step, perm)
            for k, val in {"loss": loss_value, **logs}.items():
                sums[k] = sums.get(k, 0.0) + (val.detach() if isinstance(val, torch.Tensor) else val)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        bar.close()
        sums = {k: dist.all_mean(float(x)) for k, x in sums.items()}
        val = self._evaluate(self.t.data.splits.val)
        self.elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, **{f"train_{k}": v / self.steps_per_epoch for k, v in sums.items()},
               **{f"val_{k}": x for k, x in val.items()}, "lr": self.opt.param_groups[0]["lr"],
               "elapsed_s": round(self.elapsed, 3)}
        improved = val[self.primary] > self.best_metric
        if improved:
            self.best_metric = val[self.primary]
        if self.main:  # checkpoints are written once, by rank 0
            if improved:
                save_checkpoint(self.run_dir / "best.pt", {"model": model.state_dict(), "epoch": epoch,
                                                           self.primary: self.best_metric})
            state = {
                "model": model.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "epoch": epoch, "best_metric": self.best_metric, "elapsed_s": self.elapsed,
                "rng": torch.get_rng_state(),
            }
            if self.scaler.is_enabled():
                state["scaler"] = self.scaler.state_dict()
            save_checkpoint(self.last_path, state)
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        log_line(f"{self.t.output.desc} epoch {epoch + 1}/{s.epochs}: train loss {row['train_loss']:.4f}, "
                 f"val {self.primary} {val[self.primary]:.4f}, {time.perf_counter() - t0:.1f} s", enabled=shown)
        self._hook("on_epoch_end", epoch=epoch, metrics=row)
        dist.barrier()

    def finish(self) -> dict[str, Any]:
        """Test the best checkpoint, write summary.json, call on_run_end."""
        model = self.t.trainee.model
        if (self.run_dir / "best.pt").exists():
            model.load_state_dict(load_checkpoint(self.run_dir / "best.pt", map_location=self.device)["model"])
        test = self._evaluate(self.t.data.splits.test)
        val = self._evaluate(self.t.data.splits.val)
        summary = {"name": self.t.output.desc, "seed": self.seed, "epochs": self.settings.epochs,
                   "wall_time_s": round(self.elapsed, 2),
                   **{f"test_{k}": x for k, x in test.items()}, **{f"val_{k}": x for k, x in val.items()}}
        if self.main:
            write_json(self.run_dir / "summary.json", summary)
        self._hook("on_run_end", summary=summary)
        dist.barrier()
        return summary


def train_model(model: nn.Module, task: Task, splits: Any, settings: TrainSettings, run_dir: Path,
                **kwargs: Any) -> dict[str, Any]:
    """Deprecated: build a :class:`Training` (trainee, data, recipe, output) and call ``run()``."""
    import warnings

    warnings.warn("onnx_run.train.train_model is deprecated; use onnx_run.train.Training(...).run()",
                  DeprecationWarning, stacklevel=2)
    groups = {Trainee: {}, TrainData: {}, Recipe: {}, Output: {}}
    for key, value in kwargs.items():
        cls = next((c for c in groups if key in attrs.fields_dict(c)), None)
        if cls is None:
            raise TypeError(f"train_model() got an unexpected keyword argument {key!r}")
        groups[cls][key] = value
    return Training(trainee=Trainee(model=model, **groups[Trainee]), data=TrainData(task=task, splits=splits, **groups[TrainData]),
                    recipe=Recipe(settings=settings, **groups[Recipe]),
                    output=Output(run_dir=Path(run_dir), **groups[Output])).run()
