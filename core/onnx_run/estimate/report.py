"""Tables and the curve of ``onnx-run estimate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnx_run.config import RunConfig
from onnx_run.files import atomic_write_text, save_figure, write_json


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


def plot_estimate(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = rows[0].get("sweep_key") or "kernels"
    xs = [r.get("sweep_value", r["num_kernels"]) for r in rows]
    ys = [r["estimate"] * 100 for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.plot(xs, ys, "o-", color="tab:blue")
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
    ax.set_ylabel(f"estimated test {rows[0]['metric']} (%)")
    ax.set_title(f"NTK estimate: {rows[0]['optics']} / {rows[0]['dataset']} "
                 f"({rows[0]['n_train']} training images)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
