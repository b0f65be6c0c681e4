"""Speed of the wave-optics core: angular-spectrum propagation and the 4f frontend.

Prints medians over repeats (forward + backward; each repeat times a block of back-to-back calls):

* angular-spectrum propagation of an n x n field with 2x padding (padded grid 256^2 and 1024^2),
  next to the bare ``torch.fft.fft2`` + ``ifft2`` pair on the same padded grid, measured in the
  same run and interleaved (so both see the same machine load); the ratio's goal is <= 1.2x;
* the 4f frontend at its defaults on a batch of 128 28 x 28 images;
* the diffractive stack at the paper's size (``--preset paper``: 5 layers of 200 x 200 neurons,
  Lin et al. 2018), forward + backward of a batch, next to its floor: the same number of bare
  fft2 + ifft2 pairs (one per gap) on the same batched, padded grid. The layers are applied one
  after another (each sees the field the last one made), so the floor is what the stack costs
  with nothing but its transforms.

Best (minimum) times are printed too: on a shared machine they are the least disturbed.

Usage: python benchmarks/bench_propagation.py [--repeats 21] [--threads N] [--diffractive-batch 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch

from onnx_run.physics import Grid, angular_spectrum


def _timed(fn, inner: int = 1) -> float:
    """Mean time of ``inner`` back-to-back calls: on a shared machine time slices lost to other
    processes then spread over calls in proportion to their length, instead of hitting a few."""
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def _inner_for(fn, target_s: float = 0.05) -> int:
    return max(1, int(target_s / max(_timed(fn), 1e-6)))


def _paired(a, b, repeats: int, *, warmup: int = 3, inner: int | None = 1) -> tuple[list[float], list[float]]:
    """Times of ``a`` and ``b`` (seconds per call), interleaved repeat by repeat so that both see
    the same machine load, after ``warmup`` calls of each (allocations, cached transfer
    functions); ``inner=None`` sizes the blocks of back-to-back calls from ``b``."""
    for _ in range(warmup):
        a()
        b()
    inner = _inner_for(b) if inner is None else inner
    t_a, t_b = [], []
    for _ in range(repeats):
        t_a.append(_timed(a, inner))
        t_b.append(_timed(b, inner))
    return t_a, t_b


def bench_propagation(padded: int, repeats: int) -> tuple[list[float], list[float]]:
    n = padded // 2
    grid = Grid(n, 8e-6, 532e-9)
    gen = torch.Generator().manual_seed(0)
    field = torch.randn(n, n, generator=gen, dtype=torch.complex64).requires_grad_(True)
    grad_out = torch.randn(n, n, generator=gen, dtype=torch.complex64)
    full = torch.randn(padded, padded, generator=gen, dtype=torch.complex64).requires_grad_(True)
    grad_full = torch.randn(padded, padded, generator=gen, dtype=torch.complex64)
    z = 0.5 * n * grid.pitch_m**2 / grid.wavelengths_m[0]  # half the critical distance: valid range

    def prop() -> None:
        field.grad = None
        angular_spectrum(field, grid, z).backward(grad_out)

    def bare() -> None:
        full.grad = None
        torch.fft.ifft2(torch.fft.fft2(full)).backward(grad_full)

    return _paired(prop, bare, repeats, inner=None)


def bench_4f(repeats: int, batch: int = 128) -> tuple[list[float], list[float]]:
    from onnx_run_optics_4f import Frontend4f, Optics4fConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = Frontend4f(Optics4fConfig())
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        fe.zero_grad(set_to_none=True)
        fe(x).square().mean().backward()

    def forward() -> None:
        with torch.no_grad():
            fe(x)

    return _paired(step, forward, repeats)


def bench_diffractive(repeats: int, batch: int) -> tuple[list[float], list[float], str]:
    from onnx_run_optics_diffractive import DiffractiveConfig, DiffractiveFrontend

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = DiffractiveFrontend(DiffractiveConfig(preset="lin2018", num_neurons=200, num_layers=5))
    x = torch.rand(batch, fe.in_channels, *fe.input_size, generator=torch.Generator().manual_seed(0))
    g = fe.geometry
    gaps = len(fe.gaps_m())
    padded = fe._transfer(fe.gaps_m()[0], x.device).shape[-2:]
    full = torch.randn(batch, fe.in_channels, *padded, dtype=torch.complex64).requires_grad_(True)
    grad_full = torch.randn_like(full)

    def step() -> None:
        fe.zero_grad(set_to_none=True)
        fe(x).square().mean().backward()

    def floor() -> None:
        full.grad = None
        out = full
        for _ in range(gaps):
            out = torch.fft.ifft2(torch.fft.fft2(out))
        out.backward(grad_full)

    t_step, t_floor = _paired(step, floor, repeats, warmup=1)
    shape = f"{g.num_layers} layers of {g.num_neurons}^2 neurons, simulation {g.sim_size}^2, padded {padded[0]}^2"
    return t_step, t_floor, f"{shape}, {gaps} gaps, batch {batch}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--diffractive-batch", type=int, default=32,
                    help="batch of the paper-size diffractive stack (the paper preset trains at 128: x4)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), load average {load:.2f}, "
          f"median of {args.repeats}, forward + backward, complex64")
    print()
    print("| padded grid | field | angular spectrum (ms) | fft2 + ifft2 (ms) | ratio | ratio of best times |")
    print("|---|---|---|---|---|---|")
    for padded in (256, 1024):
        t_prop, t_bare = bench_propagation(padded, args.repeats)
        med_p, med_b = statistics.median(t_prop), statistics.median(t_bare)
        print(f"| {padded}^2 | {padded // 2}^2 | {med_p * 1e3:.2f} | {med_b * 1e3:.2f} | {med_p / med_b:.2f}x "
              f"| {min(t_prop) / min(t_bare):.2f}x |")
    print()
    try:
        t_step, t_fwd = bench_4f(args.repeats)
    except ImportError:
        print("4f frontend: onnx-run-optics-4f is not installed")
        return
    print("| 4f frontend (defaults), batch 128 | median (ms) | best (ms) |")
    print("|---|---|---|")
    print(f"| forward + backward | {statistics.median(t_step) * 1e3:.2f} | {min(t_step) * 1e3:.2f} |")
    print(f"| forward only (no grad) | {statistics.median(t_fwd) * 1e3:.2f} | {min(t_fwd) * 1e3:.2f} |")
    print()
    try:
        t_stack, t_floor, shape = bench_diffractive(max(3, args.repeats // 4), args.diffractive_batch)
    except ImportError:
        print("diffractive stack: onnx-run-optics-diffractive is not installed")
        return
    med_s, med_f = statistics.median(t_stack), statistics.median(t_floor)
    print(f"| diffractive stack, paper size ({shape}) | forward + backward (ms) | its FFT floor (ms) | ratio |")
    print("|---|---|---|---|")
    print(f"| median | {med_s * 1e3:.1f} | {med_f * 1e3:.1f} | {med_s / med_f:.2f}x |")


if __name__ == "__main__":
    main()
