"""Results tables rebuilt from what the run directory holds (summary.json files)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from onnx_run.files import atomic_write_text, write_json


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(mean: float, std: float, n: int, *, percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.2f} ± {std * scale:.2f}" if n > 1 else f"{mean * scale:.2f}"


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Mean, std and Student-t 95 % interval of the paired differences a - b (same seed, or
    same device), and how many of them are above 0."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = statistics.fmean(d) if d else math.nan
    std = statistics.stdev(d) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else None
    wins = sum(x > 0 for x in d)
    ci = [mean - half, mean + half] if half is not None else None  # one pair has no interval
    return {"differences": d, "mean": mean, "std": std, "ci95": ci, "n": n, "wins": wins}


def ci_text(d: dict[str, Any]) -> str:
    """A paired difference's 95 % interval in points, or why there is none."""
    if d.get("ci95") is None:
        return f"none ({d['n']} pair{'s' * (d['n'] != 1)}: an interval needs 2)"
    lo, hi = d["ci95"]
    return f"[{lo * 100:+.2f}, {hi * 100:+.2f}]"


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


def collect_compensation(run_dir: Path, primary: str, devices: list[str] | None = None) -> list[dict[str, Any]]:
    """After-fabrication rows: one per fine-tuning method, over student seeds x the config's devices."""
    by_method: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {}
    per_device: dict[str, dict[str, float]] = {}
    for summary in sorted((run_dir / "fabricated").glob("*/finetune/*/summary.json")):
        if devices is not None and summary.parents[2].name not in devices:
            continue  # devices made by hand or by `robustness` have tables of their own
        data = json.loads(summary.read_text())
        method = summary.parent.name
        by_method.setdefault(method, []).append(data[f"test_{primary}"])
        walls.setdefault(method, []).append(data.get("wall_time_s", 0.0))
        per_device.setdefault(method, {})[summary.parents[2].name] = data[f"test_{primary}"]
    order = {"none": 0, "e2e": 1, "kd": 2, "ntkd": 3}
    rows = []
    for method in sorted(by_method, key=lambda m: (order.get(m, 9), m)):
        m, sd = mean_std(by_method[method])
        rows.append({"method": method, "n": len(by_method[method]), f"test_{primary}_mean": m,
                     f"test_{primary}_std": sd, f"test_{primary}_all": by_method[method],
                     "wall_time_s_median": statistics.median(walls[method]), "per_device": per_device[method]})
    return rows


def compensation_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences over the devices every method was run on: each fine-tuning against no
    compensation, and KD / NTKD against the task loss (the same device, student and captures)."""
    by = {r["method"]: r["per_device"] for r in rows}
    wanted = [(m, "none") for m in ("e2e", "kd", "ntkd") if m in by] + \
             [(m, "e2e") for m in ("kd", "ntkd") if m in by] + [("ntkd", "kd")]
    out = []
    for a, b in wanted:
        if a in by and b in by:
            devices = sorted(set(by[a]) & set(by[b]))
            if devices:
                out.append({"a": a, "b": b, **paired([by[a][d] for d in devices], [by[b][d] for d in devices])})
    return out


def collect_realised(run_dir: Path, primary: str) -> dict[str, Any] | None:
    rows = [json.loads(p.read_text()) for p in sorted((run_dir / "realised").glob("*/summary.json"))]
    if not rows:
        return None
    ideal = mean_std([r[f"ideal_test_{primary}"] for r in rows])
    real = mean_std([r[f"test_{primary}"] for r in rows])
    return {"student": rows[0].get("student"), "n": len(rows), "ideal_mean": ideal[0], "ideal_std": ideal[1],
            "realised_mean": real[0], "realised_std": real[1],
            "fit_error": [r.get("fit_error_mean") for r in rows if r.get("fit_error_mean") is not None]}


def headroom_note(teacher: dict[str, Any] | None, students: list[dict[str, Any]], primary: str) -> str:
    """A sentence when the teacher is too close to the students for distillation to show: its
    lead over the best student is under 1.5 points or under twice the largest seed std."""
    if not teacher or f"test_{primary}" not in teacher or not students:
        return ""
    best = max(r[f"test_{primary}_mean"] for r in students)
    spread = max(r[f"test_{primary}_std"] for r in students)
    lead = teacher[f"test_{primary}"] - best
    if lead >= max(0.015, 2 * spread):
        return ""
    spread_text = (f"seed std up to {spread * 100:.2f}" if any(r.get("n", 2) > 1 for r in students)
                   else "one seed each")
    return (f"Note: the teacher is {lead * 100:+.2f} points from the best student ({spread_text}): it leaves too little headroom for distillation to show a difference on this "
            f"data; compare methods where the teacher leads by several points (docs/ntk.md).")


#: what each figure of a run shows, under it in results.md
FIGURE_CAPTIONS = {
    "learning_curves": "Training loss and validation score per epoch: per method the mean over seeds with a "
                       "± 1 std band; the dashed line is the teacher.",
    "estimate_curve": "The estimate before training per number of kernels (its 95 % band over the test "
                      "images and students; dots: each student alone), and the trained students of this "
                      "design beside it (mean ± std over seeds).",
    "kernels": "The optical kernels, ideal / realised / fabricated, each row on one colour scale (colour bar "
               "in the kernels' units), in sensor pixels.",
    "robustness": "Test score against the error magnitude, with and without compensation.",
    "masks": "Test images with the true and the predicted masks.",
    "mask_phase": "The realised 4f Fourier-plane mask phase, in mm on the SLM (y up).",
}


def caption(stem: str) -> str:
    """The caption of a figure of a run, from its file name."""
    if stem.startswith("confusion_"):
        return (f"Confusion matrix of the `{stem[len('confusion_'):]}` student (first seed) on the test split: "
                f"counts, rows the true class.")
    return FIGURE_CAPTIONS.get(stem, stem.replace("_", " "))


def what_was_run(config: dict[str, Any], split_sizes: dict[str, int] | None = None) -> list[str]:
    """The run in a few sentences, from its config.toml: what the tables below are about."""
    run, train, optics, task = (config.get(k, {}) for k in ("run", "train", "optics", "task"))
    seeds = [run.get("seed", 0) + i for i in range(run.get("seeds", 1))]
    sizes = (f" ({split_sizes['train']} training, {split_sizes['val']} validation and {split_sizes['test']} test "
             f"images)" if split_sizes else "")
    kernels = f", {optics['num_kernels']} kernels" if "num_kernels" in optics else ""
    lines = [f"**What was run.** Optics `{optics.get('name', '?')}`{kernels}; task `{task.get('name', '?')}` on "
             f"`{task.get('dataset', '?')}`{sizes}; teacher `{config.get('teacher', {}).get('name', '?')}`. "
             f"Students: {', '.join(config.get('students', {}).get('methods', []))}, each trained "
             f"{train.get('epochs', '?')} epochs (batch {train.get('batch_size', '?')}, lr {train.get('lr', '?')}, "
             f"optics lr {train.get('optics_lr', '?')}) with seed{'s' * (len(seeds) > 1)} "
             f"{', '.join(map(str, seeds))}."]
    fab, fine = config.get("fabricate", {}), config.get("finetune", {})
    if fab:
        lines[0] += (f" After fabrication: {fab.get('devices', 1)} device(s) per seed of the `{fab.get('student')}` "
                     f"student (severity {fab.get('severity', 1):g}), the backend fine-tuned {fine.get('epochs', '?')} "
                     f"epochs on {fine.get('fraction', 0) * 100:g} % of the training images captured through it")
        if any(m in ("kd", "ntkd") for m in fine.get("methods", [])):  # a config from before: the teacher
            whom = ("the student as designed (realised, without errors)" if fine.get("teacher") == "design"
                    else "the teacher")
            lines[0] += f", KD and NTKD distilling from {whom}"
            ntkd = {**config.get("distill", {}).get("ntkd", {}), **fine.get("distill", {}).get("ntkd", {})}
            if "ntkd" in fine.get("methods", []) and ntkd.get("kd_weight", 0) > 0:
                lines[0] += f", NTKD with its output term (KD weight {ntkd['kd_weight']:g})"
        lines[0] += "."
    lines[0] += " Every setting: `config.toml`."
    return lines + [""]


HOW_TO_READ = (
    "**How to read this.** Every number is a score on the test split, in %, read once after "
    "training (epochs and settings were chosen on the validation split). `a ± b` is the mean and "
    "the sample standard deviation over seeds (or devices); a single number is one run. Two "
    "methods whose means differ by less than about two standard deviations are not told apart "
    "by these seeds: `onnx-run compare` tunes each method on validation and gives paired "
    "differences with 95 % intervals. The estimate is computed before the run's training, "
    "from the NTK of its student after a short warm-up; how far it predicts trained students is measured in "
    "docs/estimate.md.")


def write_results(run_dir: Path, *, primary: str, figures: list[str] | None = None,
                  devices: list[str] | None = None, split_sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """results.json and results.md from the run directory's summaries; results.md says what was
    run and how to read it, so that it stands on its own."""
    import tomllib

    run_dir = Path(run_dir)
    teacher = json.loads((run_dir / "teacher.json").read_text()) if (run_dir / "teacher.json").exists() else None
    estimate = json.loads((run_dir / "estimate.json").read_text()) if (run_dir / "estimate.json").exists() else None
    curve = json.loads((run_dir / "estimate_curve.json").read_text()) if (run_dir / "estimate_curve.json").exists() \
        else None
    students = collect_students(run_dir, primary)
    realised = collect_realised(run_dir, primary)
    compensation = collect_compensation(run_dir, primary, devices)
    errors = None
    device_files = sorted((run_dir / "fabricated").glob("*/device.json"))
    if devices:
        device_files = [run_dir / "fabricated" / d / "device.json" for d in devices]
    device_files = [f for f in device_files if f.exists()]
    if device_files:
        errors = json.loads(device_files[0].read_text()).get("errors")
    results = {"primary_metric": primary, "teacher": teacher, "estimate": estimate, "estimate_curve": curve,
               "simulation": students,
               "realised": realised, "fabrication_errors": errors, "after_fabrication": compensation,
               "after_fabrication_paired": compensation_pairs(compensation)}
    write_json(run_dir / "results.json", results)
    lines = [f"# Results: {run_dir.name}", ""]
    if (run_dir / "config.toml").exists():
        lines += what_was_run(tomllib.loads((run_dir / "config.toml").read_text()), split_sizes)
    lines += [HOW_TO_READ, ""]
    if teacher is not None and f"test_{primary}" in teacher:
        lines += [f"Teacher `{teacher['name']}`: test {primary} {teacher[f'test_{primary}'] * 100:.2f} %"
                  f" ({teacher.get('parameters', '?')} parameters)"
                  + (f". **Warning: {teacher['warning']}.**" if teacher.get("warning") else ""), ""]
    if students:
        lines += ["## Simulation (test " + primary + ", %, mean ± std over seeds)", "",
                  "| distillation | " + primary + " | seeds | wall time / run (median, s) |",
                  "|---|---|---|---|"]
        for r in students:
            lines.append(f"| {r['method']} | {fmt(r[f'test_{primary}_mean'], r[f'test_{primary}_std'], r['n'])} "
                         f"| {r['n']} | {r['wall_time_s_median']:.1f} |")
        lines.append("")
        note = headroom_note(teacher, students, primary)
        if note:
            lines += [note, ""]
    if estimate is not None:
        band = f" ± {estimate['estimate_band'] * 100:.2f}" if "estimate_band" in estimate else ""
        how = (f"after-kernel of {estimate['warmup_steps']} warm-up steps" if estimate.get("warmup_steps")
               else "random optics")
        lines += [f"Estimate before training ({estimate['num_kernels']} kernels, {how}, "
                  f"{estimate['n_train']} training images): {estimate['estimate'] * 100:.2f}{band} %", ""]
        if curve and len(curve) > 1:
            spread = "estimate_band" if "estimate_band" in curve[0] else "estimate_se"
            lines += ["| kernels | " + " | ".join(str(r["num_kernels"]) for r in curve) + " |",
                      "|---|" + "---|" * len(curve),
                      f"| estimated test {primary} (%), {curve[0]['n_train']} training images | "
                      + " | ".join(f"{r['estimate'] * 100:.2f}" + (f" ± {r[spread] * 100:.2f}" if spread in r else "")
                                   for r in curve) + " |", ""]
            if spread in curve[0]:
                lines += ["(± the 95 % band: test images and students)" if spread == "estimate_band" else
                          "(± 1 standard error over the test images, bootstrap.)", ""]
    if realised is not None:
        lines += [f"## Realised optics (student `{realised['student']}`)", "",
                  f"Test {primary} with ideal kernels {fmt(realised['ideal_mean'], realised['ideal_std'], realised['n'])}"
                  f" %, with the realised physical design {fmt(realised['realised_mean'], realised['realised_std'], realised['n'])} %.", ""]
    if compensation:
        lines += ["## After fabrication (test " + primary + ", %, mean ± std over seeds x devices)", ""]
        if errors:
            desc = "; ".join(f"{e['name']}" + (" (" + ", ".join(f"{k}={v}" for k, v in e.items() if k != "name") + ")"
                                               if len(e) > 1 else "") for e in errors)
            lines += [f"Error models: {desc}.", ""]
        labels = {"none": "no compensation", "e2e": "backend fine-tuned on task loss",
                  "kd": "backend fine-tuned with KD", "ntkd": "backend fine-tuned with NTKD"}
        lines += ["| compensation | " + primary + " | devices | wall time (median, s) |", "|---|---|---|---|"]
        for r in compensation:
            lines.append(f"| {labels.get(r['method'], r['method'])} | "
                         f"{fmt(r[f'test_{primary}_mean'], r[f'test_{primary}_std'], r['n'])} | {r['n']} | "
                         f"{r['wall_time_s_median']:.1f} |")
        lines.append("")
        pairs = compensation_pairs(compensation)
        if pairs:
            base = {r["method"]: r[f"test_{primary}_mean"] for r in compensation}.get("none")
            ideal = realised["realised_mean"] if realised is not None else None
            lines += ["| paired over devices (points) | mean ± std | 95 % CI (Student t) | devices won |"
                      + (" share of the drop recovered |" if base is not None and ideal is not None else ""),
                      "|---|---|---|---|" + ("---|" if base is not None and ideal is not None else "")]
            for d in pairs:
                row = (f"| {d['a']} - {d['b']} | {d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} | "
                       f"{ci_text(d)} | {d['wins']}/{d['n']} |")
                if base is not None and ideal is not None:
                    drop = ideal - base
                    share = (f" {d['mean'] / drop * 100:.0f} % |" if drop >= 0.01 else
                             f" (a drop of {drop * 100:.2f} points: too small to share) |")
                    row += share if d["b"] == "none" else " |"
                lines.append(row)
            lines += ["", "The drop is the realised design's accuracy minus no compensation's; a difference "
                      "whose interval excludes 0 is one the devices support.", ""]
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{Path(f).stem}]({Path(f).relative_to(run_dir)})", "", f"*{caption(Path(f).stem)}*", ""]
    atomic_write_text(run_dir / "results.md", "\n".join(lines))
    return results
