"""The report's figures, checked as matplotlib objects (labels, legends, scales), not pixels."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.collections import PolyCollection

from onnx_run.report import figures


@pytest.fixture
def kept(monkeypatch):
    """The figures a function would close, kept for inspection."""
    made, close = [], plt.close
    monkeypatch.setattr(figures.plt, "close", lambda fig=None: made.append(fig))
    yield made
    for fig in made:
        close(fig)


def _metrics(path, accuracies):
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"epoch": e, "train_task_loss": 1.0 / (e + 1), "val_accuracy": a}) + "\n"
                            for e, a in enumerate(accuracies)))


def test_learning_curves_show_seed_bands_counts_and_the_teacher(tmp_path, kept):
    _metrics(tmp_path / "students" / "none" / "seed0" / "metrics.jsonl", [0.5, 0.6, 0.7])
    _metrics(tmp_path / "students" / "none" / "seed1" / "metrics.jsonl", [0.4, 0.6, 0.8])
    _metrics(tmp_path / "students" / "kd" / "seed0" / "metrics.jsonl", [0.5, 0.7, 0.75])
    out = figures.learning_curves(tmp_path, tmp_path / "curves.png", "accuracy",
                                  {"name": "lenet", "val_accuracy": 0.9})
    assert out.exists()
    loss_ax, val_ax = kept[0].axes
    labels = [t.get_text() for t in val_ax.get_legend().get_texts()]
    assert labels == ["kd (1 seed)", "none (2 seeds)", "teacher lenet (val)"]
    assert val_ax.get_ylabel() == "val accuracy (%)" and "mean ± std over seeds" in val_ax.get_title()
    none_line = next(line for line in val_ax.get_lines() if line.get_label() == "none (2 seeds)")
    assert list(none_line.get_ydata()) == pytest.approx([45.0, 60.0, 75.0])  # the mean over seeds
    assert sum(isinstance(c, PolyCollection) for c in val_ax.collections) == 1  # a band where there are 2 seeds
    teacher = next(line for line in val_ax.get_lines() if line.get_label().startswith("teacher"))
    assert list(teacher.get_ydata()) == [90.0, 90.0]


def test_kernel_figure_has_scales_indices_and_units(tmp_path, kept):
    torch.manual_seed(0)
    rows = {"ideal (trained)": torch.randn(3, 1, 5, 5), "realised": 2 * torch.randn(3, 1, 5, 5)}
    figures.kernels_figure(rows, tmp_path / "kernels.png", "4f kernels", pitch_um=5.86)
    fig = kept[0]
    panels, bars = fig.axes[:6], fig.axes[6:]
    assert [ax.get_title() for ax in panels[:3]] == ["k1", "k2", "k3"]
    assert len(bars) == 2 and all(b.get_ylabel() == "weight (signed)" for b in bars)
    for r, name in enumerate(rows):
        vmax = float(rows[name].abs().max())
        for ax in panels[3 * r:3 * r + 3]:
            assert ax.images[0].get_clim() == pytest.approx((-vmax, vmax))  # one symmetric scale per row
    assert panels[0].get_ylabel() == "ideal (trained)\n(px)" and list(panels[0].get_xticks()) == [0, 4]
    assert "1 px = 5.86 um on the sensor" in fig._suptitle.get_text()


def test_the_compensation_table_pairs_methods_over_devices(tmp_path):
    """results.md: each fine-tuning against no compensation (with the share of the drop it wins
    back) and KD / NTKD against the task loss, paired device by device."""
    from onnx_run.report.tables import write_results

    (tmp_path / "realised" / "none-seed0").mkdir(parents=True)
    (tmp_path / "realised" / "none-seed0" / "summary.json").write_text(
        json.dumps({"student": "none", "test_accuracy": 0.90, "ideal_test_accuracy": 0.90}))
    scores = {"none": [0.70, 0.80, 0.60], "e2e": [0.85, 0.86, 0.84], "kd": [0.86, 0.87, 0.84]}
    for method, values in scores.items():
        for i, value in enumerate(values):
            path = tmp_path / "fabricated" / f"dev{i}" / "finetune" / method / "summary.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"test_accuracy": value, "wall_time_s": 1.0}))
    results = write_results(tmp_path, primary="accuracy")
    pairs = {(d["a"], d["b"]): d for d in results["after_fabrication_paired"]}
    assert pairs[("e2e", "none")]["differences"] == pytest.approx([0.15, 0.06, 0.24])
    assert pairs[("kd", "e2e")]["wins"] == 2 and pairs[("kd", "e2e")]["n"] == 3
    text = (tmp_path / "results.md").read_text()
    # the drop: 0.90 - 0.70 = 20 points; e2e wins back 15 of them
    assert "| e2e - none | +15.00 ± 9.00 |" in text and "| 75 % |" in text
    assert "| kd - e2e | +0.67 ± 0.58 |" in text


def test_the_estimate_curve_has_error_bars_init_dots_and_the_trained_students(tmp_path, monkeypatch):
    """± 1 s.e. bars on the estimate, each init's estimate as a dot, the trained students
    (mean ± std over seeds, how many in the legend) beside the design, and a y range of at
    least 5 points, so that 1 point of test noise does not fill the axis."""
    import onnx_run.estimate.report as report

    made, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: made.append(fig))
    rows = [{"num_kernels": k, "estimate": e, "estimate_se": 0.006, "estimate_by_init": [e - 0.004, e + 0.004],
             "inits": 2, "n_test": 400, "n_train": 1000, "metric": "accuracy", "optics": "4f", "dataset": "digits"}
            for k, e in [(1, 0.975), (2, 0.98), (4, 0.986)]]
    report.plot_estimate(tmp_path / "curve.png", rows, trained={"none": [0.95, 0.96], "ntkd": [0.97]}, trained_x=4)
    assert (tmp_path / "curve.png").exists()
    ax = made[0].axes[0]
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert labels == {"NTK estimate (± 1 s.e. over 400 test images)", "one init's kernel (2 inits)",
                      "trained none (mean ± std, 2 seeds)", "trained ntkd (mean ± std, 1 seed)"}
    bottom, top = ax.get_ylim()
    assert top - bottom >= 5 and ax.get_ylabel() == "test accuracy (%)" and ax.get_xlabel() == "number of kernels"
    assert len(ax.containers) == 3  # three error-bar sets: the estimate and two trained methods
    for fig in made:
        close(fig)


def test_every_figure_is_drawn_in_the_package_style_and_leaves_the_users_alone():
    """The report's figure functions run under data/onnx-run.mplstyle; outside them the user's
    matplotlib settings are what they were."""
    import matplotlib

    from onnx_run.plotstyle import STYLE_SHEET, styled

    assert STYLE_SHEET.exists()
    seen = {}

    @styled
    def draw():
        seen["spines"] = matplotlib.rcParams["axes.spines.top"]
        seen["dpi"] = matplotlib.rcParams["savefig.dpi"]

    before = matplotlib.rcParams["axes.spines.top"]
    draw()
    assert seen == {"spines": False, "dpi": 150.0} and matplotlib.rcParams["axes.spines.top"] == before
    for fn in (figures.learning_curves, figures.kernels_figure, figures.confusion_matrix_figure,
               figures.robustness_figure, figures.comparison_figure):
        assert getattr(fn, "__wrapped__", None) is not None, fn.__name__
