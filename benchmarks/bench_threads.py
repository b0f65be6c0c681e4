"""Torch's CPU threads against a machine's load: training steps per second of the LeNet teacher
and of a 4f student (no distillation), with 1 thread, with all cores (torch's default) and
with onnx-run's automatic choice (``run.threads = 0``), on an idle machine and with as many
busy processes as cores beside it (another job, a CI neighbour).

Prints one table from one run: medians over ``--repeats`` timed blocks of ``--steps`` steps,
blocks of the settings interleaved so that drifts in the machine's load hit each alike.

    .venv/bin/python benchmarks/bench_threads.py [--steps 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F


def _spin(stop) -> None:  # a busy neighbour: one core of pure Python work
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2**31


def _workloads():
    from onnx_run.components import HybridModel, TeacherSpec
    from onnx_run.config import load_config

    cfg = load_config(None, [], {"optics": "4f", "task": "classification"})
    task = cfg.task.build()
    torch.manual_seed(0)
    teacher = cfg.teacher.build(TeacherSpec("classification", 1, (28, 28), 10))
    front = cfg.optics.build()
    student = HybridModel(front, task.build_backend(front.feature_shape(), 10))
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    return {"LeNet teacher": teacher, "4f student": student}, x, y


def _steps_per_s(model, x, y, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    from onnx_run.train.loop import auto_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    models, x, y = _workloads()
    print(f"| machine | threads | {' | '.join(f'{m} (steps/s)' for m in models)} |")
    print("|---|---|" + "---|" * len(models))
    for load in ("idle", f"{cores} busy processes"):
        stop = mp.Event()
        busy = [mp.Process(target=_spin, args=(stop,)) for _ in range(cores if load != "idle" else 0)]
        for p in busy:
            p.start()
        time.sleep(2.0 if busy else 0.0)  # let the load average see them
        auto = auto_threads()
        settings = {"1": 1, f"{cores} (torch's default)": cores, f"auto ({auto})": auto}
        rates = {(s, m): [] for s in settings for m in models}
        for _ in range(args.repeats):
            for s, n in settings.items():
                torch.set_num_threads(n)
                for m, model in models.items():
                    rates[(s, m)].append(_steps_per_s(model, x, y, args.steps))
        stop.set()
        for p in busy:
            p.join()
        for s in settings:
            print(f"| {load} | {s} | " + " | ".join(f"{statistics.median(rates[(s, m)]):.1f}" for m in models) + " |")


if __name__ == "__main__":
    main()
