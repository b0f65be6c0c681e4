"""Metasurface benchmarks (print figures; nothing is asserted).

1. Realisation: 8 signed 7 x 7 monochrome kernels (16 PSF tiles of 341 x 341 pillars, the
   default config) -> width maps by Adam (lr 0.005 per um, 500 iterations): wall time and the
   final fit error per kernel.
2. The physical frontend (width map -> PSFs -> features): forward + backward per batch of 128
   at the default size; the kernel-mode frontend for comparison.
3. With ``--run-dir``: test accuracy of a pipeline run's trained student with its ideal
   (kernel-mode) PSFs vs the realised metasurface, from ``realised/*/summary.json``.

    .venv/bin/python plugins/optics_metasurface/benchmarks/bench_metasurface.py [--threads 1]
        [--iterations 500] [--run-dir runs/metasurface-classification-digits]

The machine's load is printed: on a shared 2-core machine the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average n/a"


def bench_realise(iterations: int) -> None:
    from onnx_run_optics_metasurface.config import MetasurfaceConfig
    from onnx_run_optics_metasurface.frontend import MetasurfaceFrontend

    torch.manual_seed(0)
    cfg = MetasurfaceConfig(realise_iterations=iterations)
    front = MetasurfaceFrontend(cfg)  # random trained-like kernels: softmax PSFs, random efficiencies
    lay = front.layout()
    print(f"realise: {lay.num_kernels} signed {cfg.kernel_size}x{cfg.kernel_size} kernels, "
          f"{front.num_tiles} tiles of {cfg.pillars}x{cfg.pillars} pillars ({lay.details['pillars_total']:,}), "
          f"{iterations} Adam iterations, init {cfg.realise_init}; {_load()}")
    t0 = time.perf_counter()
    _, rep = front.realise(progress=False)
    wall = time.perf_counter() - t0
    print(f"  wall time {wall:.1f} s ({torch.get_num_threads()} threads)")
    print(f"  normalised PSF error: start (Gerchberg-Saxton) {rep['psf_error_initial_mean']:.4f} -> "
          f"final {rep['psf_error_mean']:.4f} (mean over tiles)")
    print("  signed-kernel fit error per kernel (||k_real - k|| / ||k||): "
          + ", ".join(f"{e:.4f}" for e in rep["fit_error_per_kernel"]) + f"; mean {rep['fit_error_mean']:.4f}")
    print(f"  PSF efficiency (light in the 7x7 window) {rep['psf_efficiency_mean']:.3f}; "
          f"digital gains {rep['tile_gain_range'][0]:.2f}-{rep['tile_gain_range'][1]:.2f}")
    print("  history (iteration, mean PSF error): " + ", ".join(f"{i}:{e:.4f}" for i, e in rep["history"]))
    print(f"  {_load()}")


def bench_forward(batch: int = 128, repeats: int = 3) -> None:
    from onnx_run_optics_metasurface.config import MetasurfaceConfig
    from onnx_run_optics_metasurface.frontend import MetasurfaceFrontend

    torch.manual_seed(0)
    x = torch.rand(batch, 1, 28, 28)
    for mode in ("physical", "kernel"):
        front = MetasurfaceFrontend(MetasurfaceConfig(mode=mode))
        times = []
        for _ in range(repeats + 1):
            front.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            front(x).square().mean().backward()
            times.append(time.perf_counter() - t0)
        best, med = min(times[1:]), sorted(times[1:])[len(times[1:]) // 2]
        print(f"forward+backward, {mode} mode, batch {batch} x 1 x 28 x 28 -> 8 x 28 x 28: "
              f"best {best * 1000:.0f} ms, median {med * 1000:.0f} ms ({torch.get_num_threads()} threads; {_load()})")


def report_run(run_dir: Path) -> None:
    rows = sorted((run_dir / "realised").glob("*/summary.json"))
    if not rows:
        print(f"{run_dir}: no realised/*/summary.json; run the pipeline through the realise stage first")
        return
    for path in rows:
        s = json.loads(path.read_text())
        ideal, real = s.get("ideal_test_accuracy"), s.get("test_accuracy")
        if ideal is None or real is None:
            continue
        print(f"{path.parent.name}: test accuracy ideal PSFs {ideal * 100:.2f} % -> realised metasurface "
              f"{real * 100:.2f} % (delta {(real - ideal) * 100:+.2f} points); fit error mean "
              f"{s.get('fit_error_mean')}, realise {s.get('seconds')} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--skip-realise", action="store_true")
    ap.add_argument("--skip-forward", action="store_true")
    ap.add_argument("--run-dir", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_forward:
        bench_forward()
    if not args.skip_realise:
        bench_realise(args.iterations)
    if args.run_dir:
        report_run(args.run_dir)


if __name__ == "__main__":
    main()
