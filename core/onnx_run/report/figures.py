"""Figures of a run directory (PNG, matplotlib, no screen needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from onnx_run.files import save_figure  # noqa: E402
from onnx_run.plotstyle import METHOD_COLOURS, styled  # noqa: E402



def _seed_band(rows_per_seed: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and std over seeds (up to the shortest seed's epochs)."""
    n = min(len(r) for r in rows_per_seed)
    values = np.array([r[:n] for r in rows_per_seed], dtype=float)
    return np.arange(1, n + 1), values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(n)


@styled
def learning_curves(run_dir: Path, path: Path, primary: str, teacher: dict[str, Any] | None = None) -> Path | None:
    """Training loss and validation metric per epoch: per method the mean over seeds with a
    ± 1 std band (the legend says how many seeds), the teacher's validation score as a line."""
    base = Path(run_dir) / "students"
    if not base.exists():
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    drawn = False
    for method_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        runs = [[json.loads(x) for x in m.read_text().splitlines() if x.strip()]
                for m in sorted(method_dir.glob("seed*/metrics.jsonl"))]
        runs = [r for r in runs if r]
        if not runs:
            continue
        colour = METHOD_COLOURS.get(method_dir.name)
        label = f"{method_dir.name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        for ax, key in ((axes[0], "loss"), (axes[1], "val")):
            series = [[r.get("train_task_loss", r.get("train_loss")) if key == "loss" else 100 * r[f"val_{primary}"]
                       for r in run] for run in runs]
            ep, mean, std = _seed_band(series)
            ax.plot(ep, mean, color=colour, label=label)
            if len(runs) > 1:
                ax.fill_between(ep, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    score = (teacher or {}).get(f"val_{primary}")
    if score is not None:
        axes[1].axhline(100 * score, color=METHOD_COLOURS["teacher"], linestyle="--", linewidth=1,
                        label=f"teacher {teacher.get('name', '')} (val)")
    axes[0].set(xlabel="epoch", ylabel="train task loss", title="training loss (mean ± std over seeds)")
    axes[1].set(xlabel="epoch", ylabel=f"val {primary} (%)", title=f"validation {primary} (mean ± std over seeds)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


@styled
def confusion_matrix_figure(outputs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], path: Path,
                            title: str) -> Path:
    from sklearn.metrics import confusion_matrix

    pred = outputs.argmax(1).numpy()
    cm = confusion_matrix(targets.numpy(), pred, labels=list(range(len(classes))))
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=110)
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


@styled
def kernels_figure(rows: dict[str, torch.Tensor], path: Path, title: str = "optical kernels",
                   pitch_um: float | None = None) -> Path:
    """Signed kernels (K, C, kh, kw), one row per version (ideal / realised / fabricated); each
    row on one colour scale (symmetric about 0, its colour bar beside it), kernels numbered,
    axes in sensor pixels (and the pixel pitch in um where the optics give it)."""
    names = list(rows)
    k = min(max(int(t.shape[0]) for t in rows.values()), 16)
    fig, axes = plt.subplots(len(names), k, figsize=(1.15 * k + 1.6, 1.35 * len(names) + 0.9), dpi=110,
                             squeeze=False)
    for r, name in enumerate(names):
        kern = rows[name].detach().float().cpu()
        kern = kern.mean(1) if kern.dim() == 4 else kern  # average wavelength channels for display
        vmax = float(kern.abs().max()) or 1.0
        image = None
        for c in range(k):
            ax = axes[r][c]
            ax.tick_params(labelsize=6, length=2)
            if c < kern.shape[0]:
                kh, kw = kern[c].shape
                image = ax.imshow(kern[c].numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="upper")
                ax.set_xticks([0, kw - 1])
                ax.set_yticks([0, kh - 1])
                if r == 0:
                    ax.set_title(f"k{c + 1}", fontsize=8)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(f"{name}\n(px)", fontsize=8)
        if image is not None:
            bar = fig.colorbar(image, ax=list(axes[r]), fraction=0.02, pad=0.01)
            bar.ax.tick_params(labelsize=6)
            bar.set_label("weight (signed)", fontsize=7)
    scale = f"; 1 px = {pitch_um:g} um on the sensor" if pitch_um else ""
    fig.suptitle(f"{title}\n(each row on one colour scale, red > 0 > blue; wavelength channels averaged{scale})",
                 fontsize=9, y=1.04)
    save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return path


@styled
def robustness_figure(points: list[dict[str, Any]], path: Path, primary: str, xlabel: str) -> Path:
    """Accuracy vs error magnitude, with and without compensation."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    methods = sorted({p["method"] for p in points}, key=lambda m: ["none", "e2e", "kd", "ntkd"].index(m)
                     if m in ["none", "e2e", "kd", "ntkd"] else 9)
    for m in methods:
        pts = sorted((p["magnitude"], p[primary]) for p in points if p["method"] == m)
        xs = sorted({x for x, _ in pts})
        means = [np.mean([y for x2, y in pts if x2 == x]) * 100 for x in xs]
        stds = [np.std([y for x2, y in pts if x2 == x]) * 100 for x in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=m, color=METHOD_COLOURS.get(m))
    ax.set(xlabel=xlabel, ylabel=f"test {primary} (%)", title="robustness to fabrication errors")
    ax.grid(alpha=0.3)
    ax.legend(title="compensation")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


@styled
def comparison_figure(result: dict[str, Any], path: Path) -> Path:
    """Left: test metric per final seed (a line joins one seed across methods), mean ± std and
    the teacher's line. Right: paired differences with their 95 % intervals."""
    primary = result["primary_metric"]
    final = result["final"]
    methods = [r["method"] for r in final]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), dpi=120, gridspec_kw={"width_ratios": [1.2, 1]})
    per_seed = np.array([[100 * v for v in r[f"test_{primary}_all"]] for r in final])  # (methods, seeds)
    xs = np.arange(len(methods))
    for s in range(per_seed.shape[1]):
        ax.plot(xs, per_seed[:, s], color="0.75", lw=0.8, zorder=1)
    for i, r in enumerate(final):
        colour = METHOD_COLOURS.get(r["method"], f"C{i}")
        ax.scatter(np.full(per_seed.shape[1], i), per_seed[i], color=colour, s=18, zorder=2)
        ax.errorbar(i + 0.12, per_seed[i].mean(), yerr=per_seed[i].std(ddof=1) if per_seed.shape[1] > 1 else 0,
                    fmt="s", color=colour, capsize=4, zorder=3)
    teacher = result.get("teacher") or {}
    if f"test_{primary}" in teacher:
        ax.axhline(100 * teacher[f"test_{primary}"], color="k", ls="--", lw=1,
                   label=f"teacher {teacher.get('name', '')} {100 * teacher[f'test_{primary}']:.2f} %")
        ax.legend(loc="best", fontsize=8)
    ax.set_xticks(xs, methods)
    ax.set(ylabel=f"test {primary} (%)", title=f"{per_seed.shape[1]} seeds: points, mean ± std")
    ax.grid(alpha=0.3, axis="y")
    pairs = result["paired"]
    for j, d in enumerate(pairs):
        mean = 100 * d["mean"]
        ci = d.get("ci95")
        bx.errorbar(mean, j, xerr=[[mean - 100 * ci[0]], [100 * ci[1] - mean]] if ci else None, fmt="o", color="k",
                    capsize=4)
        bx.scatter([100 * x for x in d["differences"]], np.full(len(d["differences"]), j) + 0.15, s=10,
                   color="tab:blue", alpha=0.7)
    bx.axvline(0, color="tab:red", lw=1)
    bx.set_yticks(range(len(pairs)), [f"{d['a']} - {d['b']}" for d in pairs])
    bx.set(xlabel=f"paired difference in test {primary} (points)", title="per-seed differences, 95 % CI")
    bx.grid(alpha=0.3, axis="x")
    p = result["protocol"]
    fig.suptitle(f"{p['optics']} optics, {p['dataset']}: methods tuned on validation with the same budget",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
