"""Cost and accuracy of the empirical-NTK methods on the paper's MNIST-sized system.

Prints, side by side from one run (medians over interleaved repeats, milliseconds):
- per method (exact, jvp R=16/64, fd R=16/64, structured): time for one batch kernel of the
  student and of the teacher, the student's time including create_graph=True and a backward
  through an NTKD loss, and the relative Frobenius error against the exact kernel;
- the training-step ratio (forward + CE + NTKD loss with the structured student kernel,
  create_graph=True, and the cached teacher kernel, backward) / (forward + CE + backward),
  for the full student, its backend only (frontend frozen, as after fabrication), a
  student whose frontend is a custom kernel-tensor module (per-sample Jacobian fallback), and
  the training default: kernel over the backend parameters, optics trained through the loss;
- the teacher cache: build time, lookup time, and the features-mode error.

Inputs are scikit-learn's digits upsampled to 28 x 28 (no download); networks at their seeded
initialisation. Usage: .venv/bin/python benchmarks/bench_ntk.py [--repeats 5] [--batch 128]
[--threads 1 --clock cpu]  (the latter for a machine shared with other jobs)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from onnx_run.ntk import TeacherKernelCache, empirical_ntk, empirical_ntk_with_outputs, kernel_discrepancy


class KernelTensorFrontend(nn.Module):
    """8 learnable 7x7 kernels held as a plain tensor and applied with F.conv2d: how a custom
    optics module looks to the NTK engine (no nn.Conv2d, so per-sample Jacobians)."""

    def __init__(self, n_kernels: int = 8, side: int = 7):
        super().__init__()
        self.kernels = nn.Parameter(torch.randn(n_kernels, 1, side, side) / side)

    def forward(self, x):
        return F.conv2d(x, self.kernels, padding=self.kernels.shape[-1] // 2)


class Square(nn.Module):
    """Sensor intensity: non-negative."""

    def forward(self, x):
        return x.square()


def student(custom_frontend: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    front = KernelTensorFrontend() if custom_frontend else nn.Conv2d(1, 8, 7, padding=3, bias=False)
    return nn.Sequential(
        front, Square(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 14 * 14, 32), nn.ReLU(), nn.Linear(32, 10)
    )


def lenet5() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def digits_28() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return (x - 0.13) / 0.31, torch.tensor(d.target)


CLOCK = time.perf_counter


def timed_rounds(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms per function; rounds interleave the functions so load drifts hit all alike."""
    for f in fns.values():
        f()  # warm-up (allocator, lazy imports)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = CLOCK()
            f()
            times[k].append(1e3 * (CLOCK() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def rel_err(k: torch.Tensor, ref: torch.Tensor) -> float:
    return float((k - ref).norm() / ref.norm())


METHODS = [("exact", {}), ("jvp", {"directions": 16}), ("jvp", {"directions": 64}),
           ("fd", {"directions": 16}), ("fd", {"directions": 64}), ("structured", {})]  # fmt: skip


def label(method: str, kw: dict) -> str:
    return f"{method} R={kw['directions']}" if "directions" in kw else method


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache-n", type=int, default=1024, help="dataset size for the teacher cache")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of this process, which other jobs on a shared "
        "machine disturb far less (use with --threads 1 so it equals elapsed time when idle)",
    )
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    x_all, y_all = digits_28()
    x, y = x_all[: args.batch], y_all[: args.batch]
    s, t = student(), lenet5().eval().requires_grad_(False)
    t_names = [n for n, _ in t.named_parameters()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"batch {args.batch}; student {sum(p.numel() for p in s.parameters())} params, "
          f"teacher {sum(p.numel() for p in t.parameters())} params; median of {args.repeats}\n")  # fmt: skip

    # ---- kernels: time and error -------------------------------------------------------------
    ref_s = empirical_ntk(s, x, method="exact")
    ref_t = empirical_ntk(t, x, params=t_names, method="exact")
    k_t = ref_t / ref_t.norm()

    def kern(model, method, kw, names=None, graph=False):
        g = torch.Generator().manual_seed(0)
        return empirical_ntk(model, x, params=names, method=method, generator=g, create_graph=graph, **kw)

    def with_backward(method, kw):
        def f():
            s.zero_grad()
            kernel_discrepancy(kern(s, method, kw, graph=True), k_t, "alignment").backward()
        return f

    fns = {}
    for m, kw in METHODS:
        fns[("s", label(m, kw))] = lambda m=m, kw=kw: kern(s, m, kw)
        fns[("sg", label(m, kw))] = with_backward(m, kw)
        fns[("t", label(m, kw))] = lambda m=m, kw=kw: kern(t, m, kw, t_names)
    times = timed_rounds(fns, args.repeats)
    header = "| method | student kernel ms | student kernel + backward ms | student rel. error | teacher kernel ms | teacher rel. error |"
    print(header)
    print("|" + "---|" * 6)
    for m, kw in METHODS:
        lb = label(m, kw)
        es, et = rel_err(kern(s, m, kw), ref_s), rel_err(kern(t, m, kw, t_names), ref_t)
        print(f"| {lb} | {times[('s', lb)]:.1f} | {times[('sg', lb)]:.1f} | {es:.3f} | {times[('t', lb)]:.1f} | {et:.3f} |")

    # ---- training step ratio ---------------------------------------------------------------------
    t0 = CLOCK()
    cache = TeacherKernelCache(t, x_all[: args.cache_n], batch_size=args.batch, progress=False)
    build_s = CLOCK() - t0
    idx = torch.arange(args.batch)
    s_custom = student(custom_frontend=True)
    s_backend = student()
    s_backend[0].requires_grad_(False)
    backend_names = [n for n, _ in s_custom.named_parameters() if not n.startswith("0.")]

    def plain(model):
        def f():
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
        return f

    def ntkd(model, names=None):
        def f():
            model.zero_grad()
            k_s = empirical_ntk(model, x, params=names, method="structured", create_graph=True)
            loss = F.cross_entropy(model(x), y) + kernel_discrepancy(k_s, cache.kernel(idx), "alignment")
            loss.backward()
        return f

    def ntkd_one_pass(model, names=None):  # outputs for the task loss taken from the kernel's forward pass
        def f():
            model.zero_grad()
            k_s, out = empirical_ntk_with_outputs(model, x, params=names, method="structured", create_graph=True)
            loss = F.cross_entropy(out, y) + kernel_discrepancy(k_s, cache.kernel(idx), "alignment")
            loss.backward()
        return f

    steps = timed_rounds(
        {
            "plain": plain(s), "ntkd": ntkd(s), "plain_b": plain(s_backend), "ntkd_b": ntkd(s_backend),
            "plain_c": plain(s_custom), "ntkd_c": ntkd(s_custom), "lookup": lambda: cache.kernel(idx),
            "ntkd1": ntkd_one_pass(s), "ntkd1_b": ntkd_one_pass(s_backend), "ntkd1_c": ntkd_one_pass(s_custom),
            "plain_d": plain(s_custom), "ntkd_d": ntkd(s_custom, backend_names),
            "ntkd1_d": ntkd_one_pass(s_custom, backend_names),
        },
        args.repeats,
    )  # fmt: skip
    print("\n| training step (structured student kernel, create_graph=True; cached teacher kernel) "
          "| plain step ms | NTKD step ms | ratio | NTKD step, one forward (empirical_ntk_with_outputs) ms | ratio |")
    print("|---|---|---|---|---|---|")
    for key, name in [("", "student, all parameters (nn.Conv2d frontend + FC backend)"),
                      ("_b", "student, backend only (frontend frozen, after fabrication)"),
                      ("_c", "student, custom kernel-tensor frontend (per-sample Jacobian fallback)"),
                      ("_d", "student, the default (distill.ntkd.params = backend): kernel over the FC "
                             "layers, the kernel-tensor optics trained through it")]:  # fmt: skip
        p, n, n1 = steps["plain" + key], steps["ntkd" + key], steps["ntkd1" + key]
        print(f"| {name} | {p:.1f} | {n:.1f} | {n / p:.2f}x | {n1:.1f} | {n1 / p:.2f}x |")

    # ---- teacher cache ---------------------------------------------------------------------------
    err_exact = rel_err(cache.kernel(idx), ref_t)
    t0 = CLOCK()
    feat = TeacherKernelCache(t, x_all[: args.cache_n], max_exact_n=0, directions=128, batch_size=args.batch, progress=False)
    feat_s = CLOCK() - t0
    print(f"\nteacher cache, n = {args.cache_n}: exact mode built in {build_s:.1f} s, lookup of a batch "
          f"{steps['lookup']:.2f} ms, error {err_exact:.1e}; features mode (R = 128) built in {feat_s:.1f} s, "
          f"error {rel_err(feat.kernel(idx), ref_t):.3f}")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
