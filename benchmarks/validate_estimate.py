"""Validate the pre-training NTK estimate against trained students, design by design.

For each design (a value of one setting, default optics.num_kernels), run through the CLI:
``onnx-run estimate`` (random optics + widened backend, NTK ridge regression), then train
students with no distillation and NTKD over ``--seeds`` seeds. Prints the table (estimate vs
trained, absolute gap) and the Spearman rank correlation between estimates and trained means,
and writes validation.json + validation.md into ``--out``.

    .venv/bin/python benchmarks/validate_estimate.py --optics 4f --values 1,2,4,8 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scipy.stats import spearmanr


def onnx_run(args: list[str], env: dict[str, str]) -> None:
    res = subprocess.run([sys.executable, "-m", "onnx_run", *args], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"onnx-run {' '.join(args)} failed:\n{(res.stdout + res.stderr)[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optics", default="4f")
    ap.add_argument("--task", default="classification")
    ap.add_argument("--key", default="optics.num_kernels", help="the design setting to vary")
    ap.add_argument("--values", default="1,2,4,8")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--methods", default="none,ntkd")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/validate-estimate")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE for every run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    common = ["--optics", args.optics, "--task", args.task, "--set", "run.progress=false",
              "--set", f"run.threads={args.threads}"]
    for s in args.sets:
        common += ["--set", s]
    methods = args.methods.split(",")
    rows = []
    for value in args.values.split(","):
        point = [*common, "--set", f"{args.key}={value}"]
        t0 = time.perf_counter()
        onnx_run(["estimate", *point, "--out", str(out / f"est-{value}")], env)
        est_s = time.perf_counter() - t0
        est = json.loads(next((out / f"est-{value}").glob("*/estimate.json")).read_text())[0]
        onnx_run([*point, "--distill", ",".join(methods), "--seeds", str(args.seeds), "--stages",
                  "teacher,students", "--out", str(out / f"train-{value}")], env)
        run_dir = next((out / f"train-{value}").iterdir())
        row = {"value": value, "num_kernels": est["num_kernels"], "estimate": est["estimate"],
               "estimate_s": round(est_s, 1)}
        for m in methods:
            accs = [json.loads(p.read_text())["test_" + est["metric"]]
                    for p in sorted((run_dir / "students" / m).glob("seed*/summary.json"))]
            row[m] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                      "all": accs}
        rows.append(row)
        print(f"{args.key}={value}: {row['num_kernels']} kernels, estimate {100 * row['estimate']:.2f} % "
              f"({est_s:.1f} s); " + "; ".join(f"{m} {100 * row[m]['mean']:.2f} ± {100 * row[m]['std']:.2f}"
                                              for m in methods), flush=True)
    lines = [f"# Estimate vs trained ({args.optics}, {args.task}; {args.seeds} seeds)", "",
             "| " + args.key + " | kernels | estimate (%) | " + " | ".join(f"{m} (%)" for m in methods)
             + " | " + " | ".join(f"gap to {m} (points)" for m in methods) + " | estimate time (s) |",
             "|---" * (4 + 2 * len(methods)) + "|"]
    for r in rows:
        lines.append(f"| {r['value']} | {r['num_kernels']} | {100 * r['estimate']:.2f} | "
                     + " | ".join(f"{100 * r[m]['mean']:.2f} ± {100 * r[m]['std']:.2f}" for m in methods) + " | "
                     + " | ".join(f"{100 * (r['estimate'] - r[m]['mean']):+.2f}" for m in methods)
                     + f" | {r['estimate_s']} |")
    corr = {}
    for m in methods:
        rho = spearmanr([r["estimate"] for r in rows], [r[m]["mean"] for r in rows]).statistic
        corr[m] = float(rho)
        lines.append("")
        lines.append(f"Spearman rank correlation, estimate vs {m}: {rho:.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "validation.md").write_text(text)
    (out / "validation.json").write_text(json.dumps({"rows": rows, "spearman": corr}, indent=2))


if __name__ == "__main__":
    main()
