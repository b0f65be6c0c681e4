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


def write_estimate(cfg: RunConfig, rows: list[dict[str, Any]]) -> Path:
    out = estimate_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "estimate.json", rows)
    metric = rows[0]["metric"]
    key = rows[0].get("sweep_key")
    head = f"| {key} | kernels | grid | estimated test {metric} (%) | ridge | seconds |" if key else \
        f"| kernels | grid | estimated test {metric} (%) | ridge | seconds |"
    lines = [f"# NTK estimate: {cfg.optics.name} / {cfg.task.name} / {rows[0]['dataset']}", "",
             "Kernel ridge regression with the empirical NTK averaged over random initialisations "
             "of the optics (random kernels) and a widened backend.", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        grid = r["layout"].get("grid", f"{r['layout']['rows']} x {r['layout']['cols']}")
        cells = [str(r["num_kernels"]), grid, f"{r['estimate'] * 100:.2f}", f"{r['ridge']:g}", f"{r['seconds']:.1f}"]
        if key:
            cells.insert(0, str(r["sweep_value"]))
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(out / "estimate.md", "\n".join(lines) + "\n")
    if len(rows) > 1:
        plot_estimate(out / "estimate.png", rows)
    return out


@styled
def plot_estimate(path: Path, rows: list[dict[str, Any]], trained: dict[str, list[float]] | None = None,
                  trained_x: Any = None) -> None:
    """The estimate per design point with ± 1 standard error (bootstrap over the test images),
    each init's own estimate as a faint dot, and, given ``trained`` ({method: test scores over
    seeds}, at ``trained_x``), the trained students' mean ± std beside it. The y axis spans at
    least 5 points, so that the noise of a few hundred test images does not look like a trend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = rows[0].get("sweep_key") or "kernels"
    xs = [r.get("sweep_value", r["num_kernels"]) for r in rows]
    ys = [r["estimate"] * 100 for r in rows]
    se = [r.get("estimate_se", 0.0) * 100 for r in rows]
    fig, ax = plt.subplots(figsize=(5.8, 3.9))
    inits = rows[0].get("inits", 1)
    ax.errorbar(xs, ys, yerr=se, fmt="o-", color="tab:blue",
                label=f"NTK estimate (± 1 s.e. over {rows[0].get('n_test', '?')} test images)")
    by_init = [(x, v * 100) for x, r in zip(xs, rows) for v in r.get("estimate_by_init", [])]
    if by_init:
        ax.plot(*zip(*by_init), ".", color="tab:blue", alpha=0.35, label=f"one init's kernel ({inits} inits)")
    low, high = min(y - e for y, e in zip(ys, se)), max(y + e for y, e in zip(ys, se))
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
