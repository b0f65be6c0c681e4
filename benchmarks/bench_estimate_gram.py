"""The accuracy estimate's largest single product: the Gram Phi^T Phi of the tangent features
over every training image, as a matrix product and as the estimate forms it (BLAS syrk, one
triangle, ntk_estimate._feature_gram), side by side in one process, median of ``--repeat``.

Default sizes are Fashion-MNIST's (54 000 images) with the estimate's R = 256 directions for 10
classes (D = 2 560).

    python benchmarks/bench_estimate_gram.py [--rows 54000] [--dim 2560] [--threads 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from onnx_run.estimate.ntk_estimate import _feature_gram


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=54_000)
    ap.add_argument("--dim", type=int, default=2_560)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    phi = torch.randn(args.rows, args.dim, generator=torch.Generator().manual_seed(0))
    matmul = median_seconds(lambda: (phi.T @ phi).double(), args.repeat)
    syrk = median_seconds(lambda: _feature_gram(phi), args.repeat)
    err = ((_feature_gram(phi) - (phi.double().T @ phi.double())).abs().max()
           / (phi.double().T @ phi.double()).abs().max()).item()
    print(f"Gram of {args.rows} x {args.dim} float32 rows, {args.threads} threads, median of {args.repeat}:")
    print("| method | seconds | vs matmul |")
    print("|---|---|---|")
    print(f"| matmul (phi.T @ phi) | {matmul:.2f} | 1.00 |")
    print(f"| syrk (_feature_gram) | {syrk:.2f} | {syrk / matmul:.2f} |")
    print(f"largest difference to the float64 product: {err:.1e} of its largest entry")


if __name__ == "__main__":
    main()
