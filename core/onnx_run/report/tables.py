"""Results tables rebuilt from what the run directory holds (summary.json files)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from onnx_run.train.checkpoint import atomic_write_text, write_json


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(mean: float, std: float, n: int, *, percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.2f} ± {std * scale:.2f}" if n > 1 else f"{mean * scale:.2f}"


def collect_students(run_dir: Path, primary: str) -> list[dict[str, Any]]:
    rows = []
    base = run_dir / "students"
    if not base.exists():
        return rows
    for method_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        summaries = [json.loads(s.read_text()) for s in sorted(method_dir.glob("seed*/summary.json"))]
        if not summaries:
            continue
        vals = [s[f"test_{primary}"] for s in summaries]
        m, sd = mean_std(vals)
        rows.append({
            "method": method_dir.name, "seeds": [s["seed"] for s in summaries], "n": len(vals),
            f"test_{primary}_mean": m, f"test_{primary}_std": sd, f"test_{primary}_all": vals,
            "wall_time_s_median": statistics.median(s["wall_time_s"] for s in summaries),
        })
    order = {"none": 0, "kd": 1, "ntkd": 2}
    rows.sort(key=lambda r: (order.get(r["method"], 9), r["method"]))
    return rows


def write_results(run_dir: Path, *, primary: str) -> dict[str, Any]:
    """results.json and results.md from the run directory's summaries."""
    run_dir = Path(run_dir)
    teacher = json.loads((run_dir / "teacher.json").read_text()) if (run_dir / "teacher.json").exists() else None
    students = collect_students(run_dir, primary)
    results = {"primary_metric": primary, "teacher": teacher, "simulation": students}
    write_json(run_dir / "results.json", results)
    lines = [f"# Results: {run_dir.name}", ""]
    if teacher is not None and f"test_{primary}" in teacher:
        lines += [f"Teacher `{teacher['name']}`: test {primary} {teacher[f'test_{primary}'] * 100:.2f} %"
                  f" ({teacher.get('parameters', '?')} parameters)", ""]
    if students:
        lines += ["## Simulation (test " + primary + ", %, mean ± std over seeds)", "",
                  "| distillation | " + primary + " | seeds | wall time / run (median, s) |",
                  "|---|---|---|---|"]
        for r in students:
            lines.append(f"| {r['method']} | {fmt(r[f'test_{primary}_mean'], r[f'test_{primary}_std'], r['n'])} "
                         f"| {r['n']} | {r['wall_time_s_median']:.1f} |")
        lines.append("")
    atomic_write_text(run_dir / "results.md", "\n".join(lines))
    return results
