"""Why distillation pays or not: what the teacher's targets and kernels hold beyond the labels.

Reads a run or comparison directory (its config, its cached teacher, the students' best.pt) and
prints two tables (Markdown), writing nothing:

1. Soft targets: the teacher's accuracy, the mean entropy of softmax(z / T) and the mean
   largest probability, on training images (which the teacher trained on), on validation
   images, and, with --folds K, the out-of-fold targets (``distill.kd.folds``: each training
   image's from a teacher that never saw it). Targets with ~0 entropy on the training images
   are the labels again: KD on them adds nothing the task loss lacks.
2. Kernels on a fixed batch of validation images: centred kernel alignment (1 = same up to
   scale) of the teacher's NTK with the label kernel Y Y^T, and of each student's NTK (over its
   backend, as NTKD takes it, and over all its parameters) with the teacher's NTK and with the
   labels. NTKD can only pass on what the teacher's kernel knows about the classes beyond what
   the student's own kernel learns from the labels.

    .venv/bin/python benchmarks/distill_diagnostics.py runs/4f-classification-fashion-mnist-compare --folds 2

Segmentation runs too: the targets table is then per pixel (pixel accuracy, per-pixel
entropy), Y is each image's one-hot mask flattened (Y Y^T counts the pixels two images agree
on, per class), and the kernels are taken over the logits through a fixed Gaussian projection
to ``--projection`` outputs (an unbiased estimate of the per-pixel trace NTK, as NTKD's own
``task.ntk_projection_dim``, with more outputs for a steadier estimate); the per-layer rows of
the teacher are left out there (one kernel pass per layer of a U-Net).

    .venv/bin/python benchmarks/distill_diagnostics.py runs/seg-compare --n 64

--folds trains the fold teachers if they are not cached yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from onnx_run.errors import UserError
from onnx_run.ntk import empirical_ntk, kernel_discrepancy
from onnx_run.pipeline import Pipeline, run_dir_config
from onnx_run.train.checkpoint import load_checkpoint
from onnx_run.train.loop import predict

TEMPERATURES = (1.0, 2.0, 4.0)


def alignment(a: torch.Tensor, b: torch.Tensor) -> float:
    """Centred kernel alignment in [-1, 1]: 1 - the ``alignment_centered`` discrepancy."""
    return 1.0 - float(kernel_discrepancy(a.double(), b.double(), kind="alignment_centered"))


def target_row(name: str, logits: torch.Tensor, labels: torch.Tensor) -> str:
    cells = [f"{float((logits.argmax(1) == labels).float().mean()) * 100:.2f}"]
    for t in TEMPERATURES:
        p = (logits / t).softmax(1)
        entropy = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())
        cells.append(f"{entropy:.3f} / {float(p.max(1).values.mean()):.3f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def student_checkpoints(run_dir: Path) -> list[tuple[str, Path]]:
    """(method, best.pt) of the first seed of each method: a comparison's final/ or a run's students/."""
    found = []
    for group in ("final", "students"):
        for method_dir in sorted((run_dir / group).glob("*")):
            seeds = sorted(method_dir.glob("seed*/best.pt"))
            if seeds:
                found.append((method_dir.name, seeds[0]))
        if found:
            break
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--folds", type=int, default=0, help="also the out-of-fold targets of K fold teachers")
    ap.add_argument("--n", type=int, default=256, help="validation images in the kernel batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--projection", type=int, default=32,
                    help="dense outputs (segmentation): the logits projected to this many outputs for the kernels")
    args = ap.parse_args()
    if args.projection < 1 or args.n < 2:
        ap.error(f"--projection must be at least 1 and --n at least 2 (got {args.projection} and {args.n})")
    torch.set_num_threads(args.threads)
    cfg = run_dir_config(args.run_dir)
    cfg.run.progress = False
    pipe = Pipeline(cfg, args.run_dir)  # nothing is written: no stage runs
    teacher, info = pipe.teacher()
    x_train, y_train = pipe.splits.train.tensors
    x_val, y_val = pipe.splits.val.tensors

    metric = pipe.task.primary_metric
    print(f"teacher {info['name']}: test {metric} {info[f'test_{metric}'] * 100:.2f} %\n")
    print("| targets | accuracy (%) | " + " | ".join(f"T = {t:g}: entropy (nats) / max prob" for t in TEMPERATURES)
          + " |")
    print("|---|---|" + "---|" * len(TEMPERATURES))
    print(target_row("teacher on its training images", predict(teacher, x_train), y_train))
    print(target_row("teacher on validation images", predict(teacher, x_val), y_val))
    if args.folds:
        print(target_row(f"out of fold ({args.folds} fold teachers), training images",
                         pipe.teacher_outputs(args.folds), y_train))

    idx = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(0))[: args.n]
    xb, yb = x_val[idx], y_val[idx]
    labels = F.one_hot(yb, pipe.num_outputs).flatten(1).double()
    k_labels = labels @ labels.T
    dense = yb.dim() > 1
    reduce = None
    if dense:
        with torch.no_grad():
            width = teacher(xb[:1]).flatten(1).shape[1]
        gen = torch.Generator().manual_seed(0)
        projection = torch.randn(width, args.projection, generator=gen) / args.projection**0.5
        reduce = lambda out: out.flatten(1) @ projection.to(out)  # noqa: E731
    names = [n for n, _ in teacher.named_parameters()]
    k_teacher = empirical_ntk(teacher, xb, params=names, reduce=reduce)
    print(f"\nKernels on {args.n} validation images (centred alignment; student: first seed's best.pt)\n")
    print("| kernel | with the teacher's NTK | with the labels Y Y^T |")
    print("|---|---|---|")
    print(f"| teacher NTK (all {sum(p.numel() for p in teacher.parameters())} parameters) | 1 | "
          f"{alignment(k_teacher, k_labels):.3f} |")
    layers: dict[str, list[str]] = {}
    for name in names if not dense else []:  # one kernel block per layer (weight and bias together)
        layers.setdefault(name.rsplit(".", 1)[0], []).append(name)
    for layer, params in layers.items():
        k = empirical_ntk(teacher, xb, params=params)
        print(f"| teacher NTK block of layer {layer} | {alignment(k, k_teacher):.3f} | {alignment(k, k_labels):.3f} |")
    with torch.no_grad():
        z = teacher(xb).flatten(1).double()
    print(f"| teacher logits, z z^T | {alignment(z @ z.T, k_teacher):.3f} | {alignment(z @ z.T, k_labels):.3f} |")
    students = [("untrained (seed of the run)", None)] + student_checkpoints(args.run_dir)
    for method, path in students:
        model = pipe.build_student(cfg.run.seed)
        if path is not None:
            model.load_state_dict(load_checkpoint(path)["model"])
        model.eval()
        for scope, params in (("backend", model.backend_parameter_names()),
                              ("all", [n for n, p in model.named_parameters() if p.requires_grad])):
            k = empirical_ntk(model, xb, params=params, reduce=reduce)
            print(f"| student {method}, NTK over {scope} | {alignment(k, k_teacher):.3f} | "
                  f"{alignment(k, k_labels):.3f} |")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:  # a run directory it cannot read: one line, exit 2
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
