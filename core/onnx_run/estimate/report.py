"""Tables and the curve of ``onnx-run estimate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnx_run.config import RunConfig
from onnx_run.files import atomic_write_text, save_figure, write_json
from onnx_run.plotstyle import METHOD_COLOURS, styled


def estimate_dir(cfg: RunConfig) -> Path:
    dataset = getattr(cfg.task.config, "dataset", cfg.task.name)
    return Path(cfg.run.out) / f"estimate-{cfg.optics.name}-{cfg.task.name}-{dataset}"


def _method(r: dict[str, Any]) -> str:
    """What an estimate is, in a sentence, from its record."""
    kernel = r.get("kernel", "")
    pixels = kernel.startswith("readout per pixel")
    warm = r.get("warmup_steps", 0)
    text = ("Kernel ridge regression, pixel by pixel, with the NTK of the backend's per-pixel readout"
            if pixels else "Kernel ridge regression with the empirical NTK of the backend" + (f" ({kernel})" if kernel else ""))
    text += (f", of the run's own student after {warm} warm-up steps" if warm else
             ", of the run's own student at initialisation (random optics)")
    text += f", {r.get('inits', 1)} student(s) averaged (docs/estimate.md)."
    if pixels and warm:
        text += (" For outputs per pixel the estimate rises with the warm-up until about half the run"
                 " (the default): after a shorter one, read it as a lower bound.")
    return text


def write_estimate(cfg: RunConfig, rows: list[dict[str, Any]]) -> Path:
    out = estimate_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "estimate.json", rows)
    metric = rows[0]["metric"]
    key = rows[0].get("sweep_key")
    head = (f"| kernels | grid | estimated test {metric} (%) | ± band | warmed-up students' own (%) | ridge "
            "| seconds |")
    if key:
        head = f"| {key} " + head
    lines = [f"# NTK estimate: {cfg.optics.name} / {cfg.task.name} / {rows[0]['dataset']}", "",
             _method(rows[0]) + " The band is 95 % over the test images and the students. The warmed-up "
             "students' own test scores, read from their outputs with no regression, are what the kernel "
             "adds to.", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        grid = r["layout"].get("grid", f"{r['layout']['rows']} x {r['layout']['cols']}")
        own = " / ".join(f"{v * 100:.2f}" for v in r.get("warmed_students", [])) or "-"
        cells = [str(r["num_kernels"]), grid, f"{r['estimate'] * 100:.2f}", f"{r.get('estimate_band', 0.0) * 100:.2f}",
                 own, f"{r['ridge']:g}", f"{r['seconds']:.1f}"]
        if key:
            cells.insert(0, str(r["sweep_value"]))
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(out / "estimate.md", "\n".join(lines) + "\n")
    if len(rows) > 1:
        plot_estimate(out / "estimate.png", rows)
    return out


def _footprint(d: dict[str, Any]) -> str:
    """The physical size a layout occupies, from whichever of the plugins' layout keys it has."""
    if "used_height_mm" in d:  # an aperture grid (metasurface)
        return f"aperture {d['used_height_mm']:g} x {d['used_width_mm']:g} mm"
    if "sensor_region_mm" in d:  # tiles in a field of view (4f)
        return "sensor " + " x ".join(f"{v:.3g}" for v in d["sensor_region_mm"]) + " mm"
    if "layer_size_mm" in d:  # a layer stack (diffractive)
        return f"layers {d['layer_size_mm']:g} mm, stack {d.get('stack_length_mm', 0):g} mm long"
    return f"{d['rows']} x {d['cols']} kernels"


def choose_design(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The smallest candidate (first in the given order) whose estimate meets ``target``, and
    whether even its band's lower end does; else the best estimate, with what is missing."""
    metric = rows[0]["metric"]

    def name(r: dict[str, Any]) -> str:
        point = f"{r['sweep_key']}={r['sweep_value']}" if r.get("sweep_key") else "the design"
        return f"{point} ({r['num_kernels']} kernel{'s' * (r['num_kernels'] != 1)})"

    for i, r in enumerate(rows):
        if r["estimate"] >= target:
            sure = r["estimate"] - r["estimate_band"] >= target
            safe = next((c for c in rows[i + 1:] if c["estimate"] - c["estimate_band"] >= target), None)
            caveat = "" if sure else "; the target lies inside its band, " + (
                f"and the smallest whose band clears it is {name(safe)}" if safe else "as it does for every candidate")
            return {"index": i, "meets": True, "sure": sure, "sentence": (
                f"recommended: {name(r)}, the smallest that meets {target * 100:.2f} % {metric}: estimated "
                f"{r['estimate'] * 100:.2f} ± {r['estimate_band'] * 100:.2f} %" + caveat)}
    best = max(range(len(rows)), key=lambda i: rows[i]["estimate"])
    r = rows[best]
    return {"index": best, "meets": False, "sure": False, "sentence": (
        f"no candidate meets {target * 100:.2f} % {metric}: the best is {name(r)} at "
        f"{r['estimate'] * 100:.2f} ± {r['estimate_band'] * 100:.2f} %, {(target - r['estimate']) * 100:.2f} points "
        "short (a wider backend, or a larger design than these)")}


def write_design(cfg: RunConfig, rows: list[dict[str, Any]], target: float, choice: dict[str, Any]) -> Path:
    """design.md (candidates with estimate ± band and cost, the recommendation), design.json,
    design.png (estimate per candidate with its band and the target)."""
    dataset = getattr(cfg.task.config, "dataset", cfg.task.name)
    out = Path(cfg.run.out) / f"design-{cfg.optics.name}-{cfg.task.name}-{dataset}"
    out.mkdir(parents=True, exist_ok=True)
    metric = rows[0]["metric"]
    key = rows[0].get("sweep_key") or "design"
    head = (f"| {key} | kernels | grid | footprint | sensor values / image | backend parameters | "
            f"estimated {metric} (%) | ± band | meets {target * 100:.2f} % | seconds |")
    lines = [f"# Design: {cfg.optics.name} / {cfg.task.name} / {rows[0]['dataset']}", "",
             f"Target: {target * 100:.2f} % {metric}. " + _method(rows[0]) + " The band is 95 % over the "
             "test images and the students.", "", head, "|" + "---|" * (head.count("|") - 1)]
    for i, r in enumerate(rows):
        d = r["layout"]
        meets = "yes" if r["estimate"] - r["estimate_band"] >= target else \
            "within band" if r["estimate"] >= target else "no"
        mark = " **recommended**" if i == choice["index"] and choice["meets"] else ""
        lines.append(f"| {r.get('sweep_value', '')}{mark} | {r['num_kernels']} | "
                     f"{d.get('grid', str(d['rows']) + ' x ' + str(d['cols']))} | {_footprint(d)} | {r['sensor_values']} | "
                     f"{r['backend_params']} | {r['estimate'] * 100:.2f} | {r['estimate_band'] * 100:.2f} | {meets} | "
                     f"{r['seconds']:.1f} |")
    lines += ["", choice["sentence"]]
    write_json(out / "design.json", {"target": target, "recommended": rows[choice["index"]].get("sweep_value"),
                                     "meets": choice["meets"], "sure": choice["sure"], "candidates": rows})
    atomic_write_text(out / "design.md", "\n".join(lines) + "\n")
    plot_estimate(out / "design.png", rows, target=target)
    return out


@styled
def plot_estimate(path: Path, rows: list[dict[str, Any]], trained: dict[str, list[float]] | None = None,
                  trained_x: Any = None, target: float | None = None) -> None:
    """The estimate per design point with its 95 % band (older rows: ± 1 standard error over the
    test images), each init's own estimate as a faint dot, and, given ``trained`` ({method: test
    scores over seeds}, at ``trained_x``), the trained students' mean ± std beside it; ``target``
    as a dashed line. The y axis spans at least 5 points, so that the noise of a few hundred
    test images does not look like a trend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = rows[0].get("sweep_key") or "kernels"
    xs = [r.get("sweep_value", r["num_kernels"]) for r in rows]
    ys = [r["estimate"] * 100 for r in rows]
    band = "estimate_band" in rows[0]
    se = [r.get("estimate_band" if band else "estimate_se", 0.0) * 100 for r in rows]
    fig, ax = plt.subplots(figsize=(5.8, 3.9))
    inits = rows[0].get("inits", 1)
    ax.errorbar(xs, ys, yerr=se, fmt="o-", color="tab:blue",
                label="NTK estimate (95 % band)" if band else
                f"NTK estimate (± 1 s.e. over {rows[0].get('n_test', '?')} test images)")
    by_init = [(x, v * 100) for x, r in zip(xs, rows) for v in r.get("estimate_by_init", [])]
    if by_init:
        ax.plot(*zip(*by_init), ".", color="tab:blue", alpha=0.35, label=f"one init's kernel ({inits} inits)")
    low, high = min(y - e for y, e in zip(ys, se)), max(y + e for y, e in zip(ys, se))
    if target is not None:
        ax.axhline(target * 100, ls="--", color="0.4", label=f"target {target * 100:.2f} %")
        low, high = min(low, target * 100), max(high, target * 100)
    for i, (method, values) in enumerate((trained or {}).items()):
        if not values:
            continue
        mean = float(np.mean(values)) * 100
        std = float(np.std(values, ddof=1)) * 100 if len(values) > 1 else 0.0
        x = trained_x * (1.07 + 0.06 * i) if isinstance(trained_x, (int, float)) else trained_x  # beside the design
        ax.errorbar([x], [mean], yerr=[std], fmt="s", color=METHOD_COLOURS.get(method, f"C{i + 3}"),
                    alpha=0.9, label=f"trained {method} (mean ± std, {len(values)} seed{'s' * (len(values) > 1)})")
        low, high = min(low, mean - std), max(high, mean + std)
    if high - low < 5:  # at least 5 points of range
        mid = (high + low) / 2
        low, high = mid - 2.5, mid + 2.5
    ax.set_ylim(max(low - 0.5, 0), min(high + 0.5, 100))
    if key not in ("kernels", "optics.num_kernels"):  # say how many kernels each point holds
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(f"K={r['num_kernels']}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center",
                        fontsize=8)
    numeric = all(isinstance(x, (int, float)) and x > 0 for x in xs)
    if numeric and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    ax.set_xlabel("number of kernels" if key in ("kernels", "optics.num_kernels") else key)
    ax.set_ylabel(f"test {rows[0]['metric']} (%)")
    ax.set_title(f"NTK estimate: {rows[0]['optics']} / {rows[0]['dataset']} "
                 f"({rows[0]['n_train']} training images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
