"""The task through the core: registration, config errors, NTK reduction, KD/NTKD, training, figures."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from onnx_run.components import DistillContext, HybridModel, TeacherSpec
from onnx_run.config import structure_section
from onnx_run.errors import UserError
from onnx_run.plugins import get_component
from onnx_run_tasks_segmentation import SegmentationConfig, SegmentationTask
from onnx_run_tasks_segmentation.task import projection_matrix
from onnx_run_tasks_segmentation.teachers import UNetConfig, unet

# ----------------------------------------------------------------------------- registration / config


def test_registered_through_entry_point():
    task = get_component("tasks", "segmentation")
    assert task.factory is SegmentationTask and task.config is SegmentationConfig
    assert task.distribution == "onnx-run-tasks-segmentation"
    teacher = get_component("teachers", "unet")
    assert teacher.config is UNetConfig


def test_task_contract_fields():
    t = SegmentationTask(SegmentationConfig())
    assert (t.kind, t.primary_metric, t.default_teacher) == ("segmentation", "miou", "unet")
    assert t.optics_defaults() == {"input_size_px": 32, "num_kernels": 8, "kernel_size": 3, "channels": 3}


@pytest.mark.parametrize(
    "table, message",
    [({"dataset": "cityscapes"}, r"task.dataset: must be in \['shapes', 'carvana', 'folder'\]"),
     ({"dataset": "carvana"}, "task.data_dir: must name the folder holding the 'carvana' files"),
     ({"image_size_px": 4}, "task.image_size_px: must be >= 8"),
     ({"kernel_size": 4}, "task.kernel_size: must be odd"),
     ({"kernel_groups": [4, 4]}, r"task.kernel_groups: must have one group per decoder level \(3\) summing to "
                                 r"num_kernels \(8\)"),
     ({"decoder_widths": [0, 4]}, "task.decoder_widths: must be a list of positive integers"),
     ({"ntk_projection_dim": -1}, "task.ntk_projection_dim: must be >= 0"),
     ({"colour": 1}, "task: unknown key 'colour'")],
)
def test_config_errors_are_one_line(table, message):
    with pytest.raises(UserError, match=message) as info:
        structure_section(table, SegmentationConfig, "task")
    assert "\n" not in str(info.value)


def test_presets_fill_unset_values_only():
    c = structure_section({"preset": "paper"}, SegmentationConfig, "task")
    assert c.resolved("num_kernels") == 56 and c.resolved("kernel_groups") == [8, 16, 32]
    c = structure_section({"preset": "paper", "num_kernels": 14, "kernel_groups": [2, 4, 8]}, SegmentationConfig,
                          "task")
    assert c.resolved("num_kernels") == 14 and c.resolved("decoder_widths") == [48, 96, 192]


def test_run_config_resolves_with_segmentation(tmp_path):
    from onnx_run.config import load_config

    cfg = load_config(sets=["task.name=segmentation", "task.num_images=20"])
    assert cfg.teacher.name == "unet"
    assert cfg.task.config.num_images == 20
    # compensation from the design, with the students' loss settings (the classification's
    # validation-chosen ones are not this decoder's), unless the user says otherwise
    assert cfg.finetune.teacher == "design" and cfg.finetune.distill == {}
    own = load_config(sets=["task.name=segmentation", "finetune.distill={ntkd={beta=1.0}}"])
    assert own.finetune.distill == {"ntkd": {"beta": 1.0}}


# ----------------------------------------------------------------------------- NTK reduction


def test_ntk_reduce_shape_and_fixed():
    task = SegmentationTask(SegmentationConfig(ntk_projection_dim=16))
    out = torch.randn(5, 2, 12, 12)
    r1 = task.ntk_reduce(out)
    assert r1.shape == (5, 16)
    assert torch.equal(r1, task.ntk_reduce(out))  # same projection on every call
    assert torch.equal(r1, SegmentationTask(SegmentationConfig(ntk_projection_dim=16)).ntk_reduce(out))  # and task
    other = SegmentationTask(SegmentationConfig(ntk_projection_dim=16, ntk_projection_seed=1)).ntk_reduce(out)
    assert not torch.allclose(r1, other)
    # linear in the outputs: the reduction of a sum is the sum of reductions
    out2 = torch.randn(5, 2, 12, 12)
    assert torch.allclose(task.ntk_reduce(out + out2), r1 + task.ntk_reduce(out2), atol=1e-5)
    assert SegmentationTask(SegmentationConfig(ntk_projection_dim=0)).ntk_reduce(out).shape == (5, 288)


def test_projection_is_unbiased_for_the_trace_kernel():
    """E[(a R)(b R)^T] = a b^T: averaged over seeds the projected Gram matrix is the full one."""
    torch.manual_seed(0)
    a = torch.randn(4, 48, dtype=torch.float64)
    full = a @ a.T
    est = torch.zeros_like(full)
    seeds = 300
    for s in range(seeds):
        r = projection_matrix(48, 8, s).double()
        est += (a @ r) @ (a @ r).T
    est /= seeds
    assert torch.allclose(est, full, atol=0.1 * full.diag().mean())
    single = (a @ projection_matrix(48, 8, 0).double())
    assert not torch.allclose(single @ single.T, full, atol=0.1 * full.diag().mean())  # one draw is noisy


def test_projected_ntk_matches_full_ntk_in_expectation():
    ntk = pytest.importorskip("onnx_run.ntk", reason="onnx_run.ntk missing")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(3, 2, 1))
    x = torch.randn(3, 1, 4, 4)
    full = ntk.empirical_ntk(model, x, reduce=lambda o: o.flatten(1), method="exact")
    est = torch.zeros_like(full)
    for s in range(30):
        task = SegmentationTask(SegmentationConfig(ntk_projection_dim=32, ntk_projection_seed=s))
        est += ntk.empirical_ntk(model, x, reduce=task.ntk_reduce, method="structured")
    est /= 30
    assert torch.allclose(est, full, rtol=0.1, atol=0.05 * float(full.diag().mean()))


def test_soft_targets_one_row_per_pixel():
    task = SegmentationTask(SegmentationConfig())
    out = torch.randn(2, 2, 3, 4)
    st = task.soft_targets(out)
    assert st.shape == (24, 2)
    assert torch.equal(st[1 * 12 + 2 * 4 + 3], out[1, :, 2, 3])


# ----------------------------------------------------------------------------- distillation and training


def _student_and_teacher(conv_optics, optics_config, size=16, k=4):
    torch.manual_seed(0)
    task = SegmentationTask(SegmentationConfig(image_size_px=size, decoder_widths=[4, 8], num_images=24,
                                               ntk_projection_dim=8))
    splits = task.datasets(image_size=(size, size), channels=3, seed=0)
    frontend = conv_optics(optics_config(num_kernels=k, input_size_px=size))
    student = HybridModel(frontend, task.build_backend(frontend.feature_shape(), task.num_outputs(splits)))
    teacher = unet(UNetConfig(widths=[4, 8]), TeacherSpec("segmentation", 3, (size, size), 2)).eval()
    return task, splits, student, teacher


def test_kd_and_ntkd_losses_run_on_task_outputs(conv_optics, optics_config):
    from onnx_run.distill.losses import KDConfig, KDLoss, NTKDConfig, NTKDLoss
    from onnx_run.ntk import TeacherKernelCache

    task, splits, student, teacher = _student_and_teacher(conv_optics, optics_config)
    x, y = splits.train.tensors
    idx = torch.arange(6)
    cache = TeacherKernelCache(teacher, x, reduce=task.ntk_reduce, progress=False)
    assert cache.kernel(idx).shape == (6, 6)
    for loss_fn in (KDLoss(KDConfig()), NTKDLoss(NTKDConfig())):
        student.zero_grad()
        out = student(x[idx])
        with torch.no_grad():
            t_out = teacher(x[idx])
        ctx = DistillContext(x=x[idx], y=y[idx], index=idx, student=student, student_outputs=out, task=task,
                             teacher=teacher, teacher_outputs=t_out, teacher_kernel=lambda: cache.kernel(idx))
        loss, logs = loss_fn(ctx)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        g = student.frontend.psf.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
        assert "task_loss" in logs and ("kd_loss" in logs or "ntk_loss" in logs)


def test_ntkd_term_alone_moves_the_optics(conv_optics, optics_config):
    """The kernel-matching term by itself has a gradient w.r.t. the optical parameters."""
    from onnx_run.distill.losses import NTKDConfig, NTKDLoss
    from onnx_run.ntk import TeacherKernelCache

    task, splits, student, teacher = _student_and_teacher(conv_optics, optics_config)
    x, y = splits.train.tensors
    idx = torch.arange(5)
    cache = TeacherKernelCache(teacher, x, reduce=task.ntk_reduce, progress=False)
    ctx = DistillContext(x=x[idx], y=y[idx], index=idx, student=student, student_outputs=student(x[idx]),
                         task=task, teacher=teacher, teacher_outputs=None, teacher_kernel=lambda: cache.kernel(idx))
    loss, logs = NTKDLoss(NTKDConfig(alpha=0.0, beta=1.0))(ctx)
    loss.backward()
    assert logs["ntk_loss"] > 0 and student.frontend.psf.grad.abs().sum() > 0


def test_hybrid_model_trains(conv_optics, optics_config, tmp_path):
    from onnx_run.config import TrainSettings
    from onnx_run.distill.losses import NoDistillation
    from onnx_run.train.loop import Output, Recipe, TrainData, Trainee, Training, evaluate

    task, splits, student, _ = _student_and_teacher(conv_optics, optics_config)
    before = evaluate(student, task, splits.train, device=torch.device("cpu"))
    settings = TrainSettings(epochs=8, batch_size=8, lr=1e-2, optics_lr=1e-2, schedule="none")
    summary = Training(trainee=Trainee(model=student, loss_fn=NoDistillation(None)),
                       data=TrainData(task=task, splits=splits),
                       recipe=Recipe(settings=settings, seed=0, device=torch.device("cpu")),
                       output=Output(run_dir=tmp_path / "run", progress=False, hooks=False)).run()
    # the training loss falls (the model kept is the best epoch on validation, which on 3 images
    # may be the first)
    epochs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1]["train_loss"] < 0.8 * before["loss"]
    assert {"test_miou", "test_dice", "test_pixel_accuracy", "test_loss"} <= set(summary)


# ----------------------------------------------------------------------------- figures


def test_prediction_figure(tmp_path):
    task = SegmentationTask(SegmentationConfig())
    torch.manual_seed(0)
    x = torch.rand(8, 3, 16, 16)
    y = (torch.rand(8, 16, 16) > 0.5).long()
    preds = {"teacher": torch.randn(8, 2, 16, 16), "none": y.clone(), "kd": 1 - y, "ntkd": torch.randn(8, 2, 16, 16)}
    path = task.save_prediction_figure(tmp_path / "fig" / "masks.png", x, y, preds, n=3)
    assert path.exists()
    with Image.open(path) as img:
        w, h = img.size
    assert w > h  # 3 rows, 6 columns (image, truth, 4 models)
    grey = task.save_prediction_figure(tmp_path / "grey.png", x[:, :1], y, {"none": y}, n=10)
    with Image.open(grey) as img:
        assert img.size[1] > img.size[0]  # all 8 samples as rows, 3 columns
    with pytest.raises(ValueError, match="masks"):
        task.save_prediction_figure(tmp_path / "bad.png", x, y, {"none": torch.zeros(8)})
