"""Cost of an NTKD training step on the default segmentation system, against a plain step.

`onnx-run --optics metasurface --task segmentation` defaults (8 signed 3 x 3 PSFs on RGB 32 px
images, the up-convolution decoder, batch 64): one plain step (forward, cross entropy,
backward, Adam) and one NTKD step per kernel setting (the loss the training loop calls, with
the teacher's kernel given), interleaved, medians over ``--repeats``. Each row prints its
milliseconds and its ratio to the plain step, side by side from one run, and the relative
Frobenius error of its student kernel against the exact kernel of the same samples (P = 16,
16 samples), so a cheaper estimator's noise is read beside its speed.

    .venv/bin/python benchmarks/bench_segmentation_step.py [--repeats 5] [--threads 1]

The networks are at their seeded initialisation (a step's cost does not depend on the weights);
the teacher's kernel is the U-Net's exact kernel of the batch, computed once outside the timing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

#: (label, distill.ntkd settings, task settings) measured against the plain step
SETTINGS = [
    ("structured, 16 samples, P = 16 (before)", {"estimator": "structured", "max_samples": 16}, {}),
    ("structured, 8 samples, P = 16", {"estimator": "structured", "max_samples": 8}, {}),
    ("structured, 16 samples, P = 8", {"estimator": "structured", "max_samples": 16}, {"ntk_projection_dim": 8}),
    ("structured, 8 samples, P = 8", {"estimator": "structured", "max_samples": 8}, {"ntk_projection_dim": 8}),
    ("structured, 16 samples, P = 4", {"estimator": "structured", "max_samples": 16}, {"ntk_projection_dim": 4}),
    ("structured, 8 samples, P = 4", {"estimator": "structured", "max_samples": 8}, {"ntk_projection_dim": 4}),
    ("fd, 4 directions, 16 samples, P = 16", {"estimator": "fd", "directions": 4, "max_samples": 16}, {}),
    ("fd, 8 directions, 16 samples, P = 16", {"estimator": "fd", "directions": 8, "max_samples": 16}, {}),
    ("jvp, 4 directions, 16 samples, P = 16", {"estimator": "jvp", "directions": 4, "max_samples": 16}, {}),
]


def main() -> None:
    from onnx_run.components import DistillContext, HybridModel, TeacherSpec
    from onnx_run.config import load_config
    from onnx_run.ntk import empirical_ntk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--optics", default="metasurface")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def system(task_set: dict, ntkd_set: dict):
        sets = [f"task.{k}={v}" for k, v in task_set.items()] + [f"distill.ntkd.{k}={v}" for k, v in ntkd_set.items()]
        cfg = load_config(None, sets, {"optics": args.optics, "task": "segmentation"})
        return cfg, cfg.task.build()

    cfg, task = system({}, {})
    torch.manual_seed(0)
    front = cfg.optics.build()
    splits = task.datasets(image_size=front.input_size, channels=front.in_channels, seed=0)
    x, y = (t[: cfg.train.batch_size] for t in splits.train.tensors[:2])
    model = HybridModel(front, task.build_backend(front.feature_shape(), 2))
    teacher = cfg.teacher.build(TeacherSpec("segmentation", front.in_channels, tuple(front.input_size), 2)).eval()
    backend = model.backend_parameter_names()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}

    def plain():
        opt.zero_grad(set_to_none=True)
        task.loss(model(x), y).backward()
        opt.step()

    steps, errors = {"plain step": plain}, {}
    for label, ntkd_set, task_set in SETTINGS:
        run_cfg, run_task = system(task_set, ntkd_set)
        loss = run_cfg.methods["distill"]["ntkd"].build()
        m = loss.config.max_samples
        k_teacher = empirical_ntk(teacher, x[:m], reduce=run_task.ntk_reduce)
        exact = empirical_ntk(model, x[:m], params=backend, reduce=run_task.ntk_reduce)
        estimate = empirical_ntk(model, x[:m], params=backend, reduce=run_task.ntk_reduce,
                                 method=loss.config.estimator, directions=loss.config.directions)
        errors[label] = float((estimate - exact).norm() / exact.norm())

        def step(loss=loss, run_task=run_task, k_teacher=k_teacher):
            opt.zero_grad(set_to_none=True)
            ctx = DistillContext(x=x, y=y, index=torch.arange(x.shape[0]), student=model, student_outputs=None,
                                 task=run_task, teacher_kernel=lambda: k_teacher)
            value, _ = loss(ctx)
            value.backward()
            opt.step()

        steps[label] = step

    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            model.load_state_dict(snapshot)
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain step"])
    print(f"optics {args.optics}, batch {x.shape[0]}, {args.threads} thread(s), median of {args.repeats}\n")
    print("| step | ms | / plain step | student kernel error vs exact |")
    print("|---|---|---|---|")
    for name, t in times.items():
        err = f"{errors[name]:.3f}" if name in errors else ""
        print(f"| {name} | {1000 * statistics.median(t):.0f} | {statistics.median(t) / base:.2f}x | {err} |")


if __name__ == "__main__":
    main()
