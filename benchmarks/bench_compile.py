"""Is torch.compile worth a path? Eager against compiled, side by side, on the CPU.

Two hot paths, each forward + backward, medians of interleaved rounds after the compilation
(whose time is printed too):
- angular-spectrum propagation (``apply_transfer_function``) on 256^2 and 1024^2 padded grids;
- the NTKD loss of the fabricated 4f device's backend fine-tuning (the student's exact kernel
  over the backend parameters, create_graph, and the task loss), batch 64, whose gradient is
  checked against eager.

Usage: .venv/bin/python benchmarks/bench_compile.py [--repeats 21] [--threads 1]
Needs a C++ compiler (inductor generates C++ on the CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from onnx_run.ntk import empirical_ntk_with_outputs, kernel_discrepancy
from onnx_run.physics import Grid, apply_transfer_function, transfer_function

sys.path.insert(0, str(Path(__file__).parent))
from bench_ntk import timed_rounds  # noqa: E402  (median ms of interleaved rounds, after a warm-up)
from bench_presets import _Stepper  # noqa: E402


def compiled_first_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def propagation_rows(repeats: int) -> list[str]:
    rows = []
    for padded in (256, 1024):
        n = padded // 2
        grid = Grid(n, 8e-6, 532e-9)
        tf = transfer_function(grid, 0.5 * n * grid.pitch_m**2 / grid.wavelengths_m[0])
        field = torch.randn(n, n, dtype=torch.complex64).requires_grad_(True)
        grad = torch.randn(n, n, dtype=torch.complex64)
        comp = torch.compile(apply_transfer_function)

        def run(f):
            def step():
                field.grad = None
                f(field, tf).backward(grad)
            return step

        build = compiled_first_call(run(comp))
        t = timed_rounds({"eager": run(apply_transfer_function), "compiled": run(comp)}, repeats)
        rows.append(f"| propagation, {padded}^2 padded | {t['eager']:.2f} | {t['compiled']:.2f} "
                    f"| {t['compiled'] / t['eager']:.2f}x | {build:.1f} | |")
    return rows


def ntkd_row(repeats: int) -> str:
    st = _Stepper(("4f", "classification", "default"), "ntkd", torch.device("cpu"), "fp32", 512, (),
                  backend_only=True)
    model, x, y = st.model, st.inputs[:64], st.y_all[:64]
    k_teacher = st.kernel(None, torch.arange(64))

    def loss(x, y, k_teacher):
        k, out = empirical_ntk_with_outputs(model, x, create_graph=True)
        return F.cross_entropy(out, y) + kernel_discrepancy(k, k_teacher, "alignment_centered")

    comp = torch.compile(loss)

    def run(f):
        def step():
            model.zero_grad()
            f(x, y, k_teacher).backward()
        return step

    run(loss)()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    build = compiled_first_call(run(comp))
    diff = max(float((a - p.grad).abs().max()) for a, p in zip(eager_grads, model.parameters()))
    t = timed_rounds({"eager": run(loss), "compiled": run(comp)}, repeats)
    return (f"| NTKD loss, 4f backend fine-tuning, batch 64 | {t['eager']:.2f} | {t['compiled']:.2f} "
            f"| {t['compiled'] / t['eager']:.2f}x | {build:.1f} | {diff:.1e} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # inductor warns that it does not generate code for complex ops
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, forward + backward, "
          f"median of {args.repeats}")
    print("| path | eager (ms) | compiled (ms) | compiled / eager | compilation (s) | max gradient difference |")
    print("|---|---|---|---|---|---|")
    for row in propagation_rows(args.repeats):
        print(row, flush=True)
    print(ntkd_row(args.repeats))


if __name__ == "__main__":
    main()
