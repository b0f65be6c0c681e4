"""The report stage of a pipeline run: its figures and tables, rebuilt from what its run
directory holds. It sits above the pipeline (it reads one); the pipeline never imports it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from onnx_run.report import figures


def _kernels_of(module: torch.nn.Module) -> torch.Tensor | None:
    inner = module
    while not hasattr(inner, "kernels") and hasattr(inner, "inner"):
        inner = inner.inner
    try:
        return inner.kernels() if hasattr(inner, "kernels") else None
    except NotImplementedError:
        return None


def make_figures(pipe: Any) -> list[Path]:
    """Learning curves, confusion matrix / mask overlays, kernels ideal vs realised vs fabricated."""
    from onnx_run.train.checkpoint import load_checkpoint, load_state_dict_checked
    from onnx_run.train.loop import predict

    out = pipe.run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    primary = pipe.task.primary_metric
    teacher_json = pipe.run_dir / "teacher.json"
    teacher = json.loads(teacher_json.read_text()) if teacher_json.exists() else None
    curve = figures.learning_curves(pipe.run_dir, out / "learning_curves.png", primary, teacher)
    if curve:
        made.append(curve)
    path = pipe.run_dir / "estimate_curve.json"
    estimates = json.loads(path.read_text()) if path.exists() else []
    if len(estimates) > 1:
        from onnx_run.estimate.report import plot_estimate

        trained = {}  # the trained students of this design, beside its estimate
        for method in pipe.cfg.students.methods:
            scores = [json.loads(p.read_text()).get(f"test_{primary}") for p in
                      (pipe.student_dir(method, s) / "summary.json" for s in pipe.seeds()) if p.exists()]
            trained[method] = [v for v in scores if v is not None]
        design = pipe.run_dir / "estimate.json"
        design_kernels = json.loads(design.read_text())["num_kernels"] if design.exists() else \
            estimates[-1]["num_kernels"]
        plot_estimate(out / "estimate_curve.png", estimates, trained=trained, trained_x=design_kernels)
        made.append(out / "estimate_curve.png")
    seed = pipe.seeds()[0]
    x_test, y_test = pipe.splits.test.tensors[0], pipe.splits.test.tensors[1]
    preds: dict[str, torch.Tensor] = {}
    students: dict[str, torch.nn.Module] = {}
    for method in pipe.cfg.students.methods:
        best = pipe.student_dir(method, seed) / "best.pt"
        if best.exists():
            model = pipe.build_student(seed)
            load_state_dict_checked(model, load_checkpoint(best)["model"], pipe.student_checkpoint_note(method, seed))
            students[method] = model
            preds[method] = predict(model, x_test[:256], device=pipe.device)
    if pipe.task.kind == "classification" and preds:
        method = list(preds)[-1]
        full = predict(students[method], x_test, device=pipe.device)
        made.append(figures.confusion_matrix_figure(full, y_test, [str(c) for c in pipe.splits.classes],
                                                    out / f"confusion_{method}.png",
                                                    f"student {method}, seed {seed}: test confusion"))
    elif hasattr(pipe.task, "save_prediction_figure") and preds:
        all_preds = {}
        if (pipe.run_dir / "teacher.json").exists():
            all_preds["teacher"] = predict(pipe.teacher()[0], x_test[:256], device=pipe.device)
        all_preds.update(preds)
        path = out / "masks.png"
        pipe.task.save_prediction_figure(path, x_test[:256], y_test[:256], all_preds)
        made.append(path)
    rows: dict[str, torch.Tensor] = {}
    student = pipe.fabricated_student()
    if student in students:
        k = _kernels_of(students[student].frontend)
        if k is not None:
            rows["ideal (trained)"] = k
    if (pipe.realised_dir(seed) / "frontend.pt").exists():
        _, realised = pipe.realised_frontend(seed)
        k = _kernels_of(realised)
        if k is not None:
            rows["realised"] = k
    first = pipe.config_devices()[0]
    if (pipe.device_dir(first["name"]) / "device.json").exists():
        _, device = pipe.build_device(first)
        k = _kernels_of(device.frontend)
        if k is not None:
            rows["fabricated"] = k
    if rows:
        made.append(figures.kernels_figure(rows, out / "kernels.png",
                                           f"{pipe.cfg.optics.name} kernels of student {student}, seed {seed}",
                                           pitch_um=getattr(pipe.cfg.optics.config, "sensor_pitch_um", None)))
    export = pipe.realised_dir(seed) / "export"
    if export.exists():
        made += sorted(export.glob("*.png"))
    return made


def write_report(pipe: Any) -> dict[str, Any]:
    """The pipeline's ``report`` stage: figures, then results.md / results.json."""
    from onnx_run.report.tables import write_results

    figs = make_figures(pipe)
    robust = pipe.run_dir / "figures" / "robustness.png"
    if robust.exists() and robust not in figs:
        figs.append(robust)
    sizes = {k: len(getattr(pipe.splits, k)) for k in ("train", "val", "test")}
    return write_results(pipe.run_dir, primary=pipe.task.primary_metric, figures=[str(f) for f in figs],
                         devices=[d["name"] for d in pipe.config_devices()], split_sizes=sizes)
