"""Peak memory and time of the segmentation teacher's kernel cache, the step that made the default
segmentation job peak at 13 GB: the U-Net teacher's exact NTK over the training images
(`onnx-run --optics 4f --task segmentation` defaults), built within ``--budget-gb``.

One build per process (peak RSS is per process): run it once per budget, e.g.

    .venv/bin/python benchmarks/bench_teacher_kernel_memory.py --budget-gb 8   # all factors held at once
    .venv/bin/python benchmarks/bench_teacher_kernel_memory.py --budget-gb 2   # the default: row blocks
    .venv/bin/python benchmarks/bench_teacher_kernel_memory.py --budget-gb 2 --projection-dim 16  # former P

The teacher is at its seeded initialisation: the cost does not depend on its weights.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def main() -> None:
    from onnx_run.components import TeacherSpec
    from onnx_run.config import load_config
    from onnx_run.ntk.teacher_cache import bounded_cache

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-gb", type=float, default=2.0)
    parser.add_argument("--projection-dim", type=int, default=None,
                        help="P of the NTK projection (task.ntk_projection_dim; default: the task's)")
    args = parser.parse_args()
    sets = [] if args.projection_dim is None else [f"task.ntk_projection_dim={args.projection_dim}"]
    cfg = load_config(None, sets, {"optics": "4f", "task": "segmentation"})
    task = cfg.task.build()
    front = cfg.optics.build()
    splits = task.datasets(image_size=front.input_size, channels=front.in_channels, seed=0)
    x = splits.train.tensors[0]
    torch.manual_seed(0)
    teacher = cfg.teacher.build(TeacherSpec("segmentation", front.in_channels, tuple(front.input_size), 2))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    cache = bounded_cache(teacher, x, reduce=task.ntk_reduce, max_memory_gb=args.budget_gb)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    p = cfg.task.config.ntk_projection_dim
    print(f"| P = {p} | {args.budget_gb:g} GB | {cache.mode} | {x.shape[0]} | {seconds:.0f} | {before:.2f} | {peak:.2f} |")


if __name__ == "__main__":
    main()
