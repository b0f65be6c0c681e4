"""Validate the pre-training estimate against trained students, design by design.

For each design (a value of one setting, default optics.num_kernels), through the CLI:
``onnx-run estimate`` (the student's after-kernel regression, docs/estimate.md), then students
trained with each method over ``--seeds`` seeds (or read from ``--trained``, a run directory
per design with ``{value}`` in its path, made by ``onnx-run ... --stages teacher,students``).
Prints the table (estimate ± band vs trained mean ± std, the gap, the estimate's time against
one student's training time), the Spearman rank correlation between estimates and trained
means, whether the trained means differ by more than their seeds' spread at all (if they
do not, no ranking can be checked), and at how many designs the trained mean lies inside the
estimate's band. Writes validation.json + validation.md into ``--out``.

    .venv/bin/python benchmarks/validate_estimate.py --optics 4f --values 1,2,4,8 --seeds 3
    .venv/bin/python benchmarks/validate_estimate.py --config benchmarks/compare/fashion-mnist-4f.toml \\
        --set task.data_dir=/usr/share/datasets/fashion-mnist --trained 'runs/4f-k{value}' --out runs/val-fm-4f
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from scipy.stats import spearmanr


def onnx_run(args: list[str]) -> None:
    res = subprocess.run([sys.executable, "-m", "onnx_run", *args], env=dict(os.environ), capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise SystemExit(f"onnx-run {' '.join(args)} failed:\n{(res.stdout + res.stderr)[-2000:]}")


def students(run_dir: Path, method: str, metric: str) -> tuple[list[float], list[float]]:
    """(test scores, training wall seconds) of a run's students of one method, seed by seed."""
    summaries = [json.loads(p.read_text()) for p in sorted((run_dir / "students" / method).glob("seed*/summary.json"))]
    if not summaries:
        raise SystemExit(f"{run_dir}: no trained '{method}' students (students/{method}/seed*/summary.json)")
    return [s["test_" + metric] for s in summaries], [s["wall_time_s"] for s in summaries]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optics", default=None)
    ap.add_argument("--task", default=None)
    ap.add_argument("--config", default=None, help="a run config for every point (onnx-run --config)")
    ap.add_argument("--key", default="optics.num_kernels", help="the design setting to vary")
    ap.add_argument("--values", default="1,2,4,8")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default="ntkd")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trained", default=None, help="existing run directory per design, with {value} in it")
    ap.add_argument("--out", default="runs/validate-estimate")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE for every run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--set", "run.progress=false", "--set", f"run.threads={args.threads}"]
    for flag, value in (("--optics", args.optics), ("--task", args.task), ("--config", args.config)):
        if value:
            common += [flag, value]
    for s in args.sets:
        common += ["--set", s]
    methods = args.methods.split(",")
    rows = []
    for value in args.values.split(","):
        point = [*common, "--set", f"{args.key}={value}"]
        est_dir = out / f"est-{value}"
        if not list(est_dir.glob("*/estimate.json")):  # a finished point is not estimated again
            onnx_run(["estimate", *point, "--out", str(est_dir)])
        est = json.loads(next(est_dir.glob("*/estimate.json")).read_text())[0]
        if args.trained:
            run_dir = Path(args.trained.format(value=value))
        else:
            train_dir = out / f"train-{value}"
            if not train_dir.exists():
                stages = "students" if methods == ["none"] else "teacher,students"  # no teacher to train for none
                onnx_run([*point, "--distill", ",".join(methods), "--seeds", str(args.seeds), "--stages", stages,
                          "--out", str(train_dir)])
            run_dir = next(train_dir.iterdir())
        row = {"value": value, "num_kernels": est["num_kernels"], "estimate": est["estimate"],
               "band": est.get("estimate_band", 0.0), "estimate_s": est["seconds"],
               "warmup_s": est.get("warmup_seconds"), "kernel_s": est.get("kernel_seconds"),
               "warmed": est.get("warmed_students")}
        for m in methods:
            accs, secs = students(run_dir, m, est["metric"])
            row[m] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                      "all": accs, "train_s": statistics.median(secs)}
        rows.append(row)
        print(f"{args.key}={value}: {row['num_kernels']} kernels, estimate {100 * row['estimate']:.2f} ± "
              f"{100 * row['band']:.2f} % ({row['estimate_s']:.1f} s); "
              + "; ".join(f"{m} {100 * row[m]['mean']:.2f} ± {100 * row[m]['std']:.2f}" for m in methods), flush=True)
    label = args.config or f"{args.optics}, {args.task or 'classification'}"
    lines = [f"# Estimate vs trained ({label}; {' '.join(args.sets)})", "",
             "| " + args.key + " | kernels | estimate ± band (%) | "
             + " | ".join(f"trained {m} (%)" for m in methods) + " | "
             + " | ".join(f"gap to {m} (points)" for m in methods)
             + " | estimate (s) | one student's training (s) | estimate / training |",
             "|---" * (6 + 2 * len(methods)) + "|"]
    m0 = methods[0]
    for r in rows:
        lines.append(f"| {r['value']} | {r['num_kernels']} | {100 * r['estimate']:.2f} ± {100 * r['band']:.2f} | "
                     + " | ".join(f"{100 * r[m]['mean']:.2f} ± {100 * r[m]['std']:.2f}" for m in methods) + " | "
                     + " | ".join(f"{100 * (r['estimate'] - r[m]['mean']):+.2f}" for m in methods)
                     + f" | {r['estimate_s']:.1f} | {r[m0]['train_s']:.1f} | {r['estimate_s'] / r[m0]['train_s']:.2f} |")
    summary = {}
    for m in methods:
        means = [r[m]["mean"] for r in rows]
        rho = float(spearmanr([r["estimate"] for r in rows], means).statistic) if len(rows) > 2 else float("nan")
        gaps = [abs(r["estimate"] - r[m]["mean"]) for r in rows]
        spread = max(means) - min(means)
        noise = statistics.mean(r[m]["std"] for r in rows)
        covered = sum(gap <= r["band"] for gap, r in zip(gaps, rows))
        summary[m] = {"spearman": rho, "max_abs_gap": max(gaps), "mean_abs_gap": statistics.mean(gaps),
                      "trained_range": spread, "mean_seed_std": noise, "inside_band": covered}
        lines += ["", f"{m}: Spearman {rho:.2f}; |estimate - trained| mean {100 * statistics.mean(gaps):.2f}, "
                      f"max {100 * max(gaps):.2f} points; the trained means span {100 * spread:.2f} points against "
                      f"a seed std of {100 * noise:.2f}; the trained mean lies inside the estimate's band at "
                      f"{covered} of {len(rows)} sizes"
                  + (" (a ranking within the seeds' noise: Spearman cannot be checked here)" if spread < 2 * noise
                     else "")]
    if all(r["kernel_s"] is not None for r in rows):
        lines += ["", "Where the estimate's time goes (s): warm-up / kernels or tangent features / the rest "
                      "(data, optics, regressions, scores): "
                  + "; ".join(f"{r['value']}: {r['warmup_s']:.1f} / {r['kernel_s']:.1f} / "
                              f"{r['estimate_s'] - r['warmup_s'] - r['kernel_s']:.1f}" for r in rows)]
    if all(r["warmed"] for r in rows):  # the kernel regression against its warmed-up students read directly
        lines += ["", f"The warmed-up students' own test scores, no regression (mean; gap to {m0}): "
                  + "; ".join(f"{r['value']}: {100 * statistics.mean(r['warmed']):.2f} "
                              f"({100 * (statistics.mean(r['warmed']) - r[m0]['mean']):+.2f})" for r in rows)]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "validation.md").write_text(text)
    (out / "validation.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
