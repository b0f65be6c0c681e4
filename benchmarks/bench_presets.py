"""Training-step cost of each optics x task at the default and the paper's sizes, on a device.

For each case it builds the student, the teacher and (for NTKD) the teacher's kernel cache the
way the pipeline does (``--preset``, the task's suggestions, the embedded data at the preset's
image size), then times full training steps (``step_loss``: forward passes, the loss, backward,
optimiser step) for the distillation losses ``none``, ``kd`` and ``ntkd``, and the fabricated
device's backend-only fine-tuning (``e2e`` and ``ntkd`` on captured feature maps). The steps of
all five interleave, round by round. Printed, from one run: median step time (ms) of each,
NTKD / none and fine-tuning NTKD / e2e, steps per epoch of the paper's dataset
(MNIST / CIFAR-10: 60k / 50k training images; Carvana: 5088) and the time that epoch would take
(median step x steps), and the teacher-cache build time per 1000 images.

Usage (CPU; on a GPU add ``--device cuda``, and ``--precision bf16`` to time autocast)::

    .venv/bin/python benchmarks/bench_presets.py --cases 4f/classification,metasurface/segmentation \\
        --presets default,paper --steps 5
    .venv/bin/python benchmarks/bench_presets.py --cases 4f/classification --set task.dataset=shapes-rgb

Steps are timed with the device synchronised before and after each one (CUDA: the wait for the
queue to drain is part of the step, as in training, where the loss is read every step).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

from onnx_run.config import load_config
from onnx_run.ntk.teacher_cache import bounded_cache
from onnx_run.pipeline import Pipeline
from onnx_run.precision import check_precision
from onnx_run.train.loop import make_optimizer, resolve_device, step_loss
from onnx_run.train.teacher import build_teacher, teacher_spec

#: training images of the paper's datasets (steps per epoch = these / batch size)
PAPER_TRAIN_IMAGES = {"classification": 60000, "classification-rgb": 50000, "segmentation": 5088}
ALL_CASES = ("4f/classification", "metasurface/classification", "diffractive/classification",
             "4f/segmentation", "metasurface/segmentation")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_case(optics: str, task: str, preset: str, method: str, sets: tuple[str, ...] = ()):
    """(config, task, data, student, teacher) built as the pipeline builds them (on the CPU)."""
    overrides = ([] if preset == "default" else [f"run.preset={preset}"]) + list(sets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(None, [*overrides, "run.device=cpu"], {"optics": optics, "task": task, "distill": method})
        pipe = Pipeline(cfg, Path("unused"))  # nothing is written before prepare()
        student = pipe.build_student(0)
    return cfg, pipe.task, pipe.splits, student, build_teacher(cfg, teacher_spec(pipe.task, pipe.splits), 0)


class _Stepper:
    """One loss's training steps on one case: the student, its optimiser and (for NTKD) the
    teacher's kernel cache, built as the pipeline builds them. ``backend_only``: the fabricated
    device's case, the frontend fixed and its feature maps captured once (finetune.py), only
    the backend trained."""

    def __init__(self, case: tuple[str, str, str], method: str, device: torch.device, precision: str,
                 cache_images: int, sets: tuple[str, ...], backend_only: bool = False):
        optics, task, preset = case
        cfg, self.task, splits, student, self.teacher = build_case(optics, task, preset, method, sets)
        self.loss_fn = cfg.methods["distill"][method].build()
        self.batch, self.device, self.precision = cfg.train.batch_size, device, precision
        student.to(device)
        self.teacher.to(device).eval().requires_grad_(False)
        x_all, self.y_all = splits.train.tensors
        self.n = min(len(x_all), max(cache_images, self.batch))
        self.x_all = x_all[: self.n].to(device)
        self.inputs = self.x_all
        self.model = student
        if backend_only:
            with torch.no_grad():
                self.inputs = torch.cat([student.frontend(c) for c in self.x_all.split(256)])
            self.model = student.backend
        self.kernel = None
        self.info: dict = {"params_M": sum(p.numel() for p in student.parameters()) / 1e6,
                           "teacher_M": sum(p.numel() for p in self.teacher.parameters()) / 1e6,
                           "rgb": student.frontend.in_channels == 3}
        if self.loss_fn.needs_teacher_kernel:
            _sync(device)
            t0 = time.perf_counter()
            cache = bounded_cache(self.teacher, self.x_all, reduce=self.task.ntk_reduce)
            _sync(device)
            self.info["cache_s_per_1000"] = (time.perf_counter() - t0) * 1000 / self.n
            self.info["cache_mode"] = cache.mode
            self.kernel = lambda xb, idx, c=cache: c.kernel(idx)  # noqa: E731
        self.opt = make_optimizer(self.model, cfg.train, None)
        self.step_no = 0

    def __call__(self) -> float:
        """One step's time in seconds."""
        idx = torch.arange(self.step_no * self.batch, (self.step_no + 1) * self.batch) % self.n
        self.step_no += 1
        xb, inb, yb = self.x_all[idx], self.inputs[idx], self.y_all[idx].to(self.device)
        needs_teacher = self.loss_fn.needs_teacher
        _sync(self.device)
        t0 = time.perf_counter()
        loss, _ = step_loss(self.model, self.model, self.loss_fn, self.task, x=xb, y=yb, index=idx,
                            student_input=inb, device=self.device, teacher=self.teacher if needs_teacher else None,
                            teacher_kernel=self.kernel, precision=self.precision)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        float(loss.detach())
        _sync(self.device)
        return time.perf_counter() - t0


def interleaved_medians(steppers: dict[str, _Stepper], steps: int) -> dict[str, float]:
    """Median step (ms) of each; the rounds interleave them, so a change of load hits all alike.
    The first round warms up (allocations, cuDNN/cuFFT plans)."""
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for round_no in range(steps + 1):
        for k, step in steppers.items():
            t = step()
            if round_no:
                times[k].append(t)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def time_case(optics: str, task: str, preset: str, device: torch.device, precision: str, steps: int,
              cache_images: int, sets: tuple[str, ...] = ()) -> dict:
    case = (optics, task, preset)
    steppers = {m: _Stepper(case, m, device, precision, cache_images, sets) for m in ("none", "kd", "ntkd")}
    steppers["ft_e2e"] = _Stepper(case, "none", device, precision, cache_images, sets, backend_only=True)
    steppers["ft_ntkd"] = _Stepper(case, "ntkd", device, precision, cache_images, sets, backend_only=True)
    row: dict = {"case": f"{optics}/{task}", "preset": preset, **interleaved_medians(steppers, steps),
                 **steppers["ntkd"].info, "batch": steppers["none"].batch}
    key = "classification-rgb" if task == "classification" and row["rgb"] else task
    row["epoch_steps"] = -(-PAPER_TRAIN_IMAGES[key] // row["batch"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(ALL_CASES), help="optics/task pairs, comma-separated")
    ap.add_argument("--presets", default="default,paper")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (CUDA)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per loss (after one warm-up step)")
    ap.add_argument("--cache-images", type=int, default=512, help="images in the timed teacher kernel cache")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every case, e.g. task.dataset=shapes-rgb")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    check_precision(args.precision, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; precision {args.precision}; median of {args.steps} steps (ms)"
          + (f"; --set {' '.join(args.sets)}" if args.sets else ""))
    print("| case | preset | batch | student / teacher (M params) | none | kd | ntkd | ntkd / none "
          "| fine-tune e2e | fine-tune ntkd | ntkd / e2e "
          "| steps per paper epoch | ntkd epoch (min) | teacher NTK cache (s / 1000 images) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        optics, task = case.split("/")
        for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
            r = time_case(optics, task, preset, device, args.precision, args.steps, args.cache_images,
                          tuple(args.sets))
            print(f"| {r['case']} | {preset} | {r['batch']} | {r['params_M']:.2f} / {r['teacher_M']:.2f} "
                  f"| {r['none']:.1f} | {r['kd']:.1f} | {r['ntkd']:.1f} | {r['ntkd'] / r['none']:.2f} "
                  f"| {r['ft_e2e']:.2f} | {r['ft_ntkd']:.2f} | {r['ft_ntkd'] / r['ft_e2e']:.2f} "
                  f"| {r['epoch_steps']} | {r['ntkd'] * r['epoch_steps'] / 60000:.1f} "
                  f"| {r.get('cache_s_per_1000', float('nan')):.2f} ({r.get('cache_mode', '-')}) |", flush=True)


if __name__ == "__main__":
    main()
