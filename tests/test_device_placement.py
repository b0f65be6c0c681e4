"""The CUDA path, checked without a GPU: every stage's tensors follow the model's device.

A CPU-only machine cannot run CUDA, but it can run PyTorch's ``meta`` device (tensors with
shapes and no data). A tensor made on the CPU by mistake meets a meta tensor in some operation
and fails, exactly as it would meet a CUDA tensor; so a training step, an NTK, a fabricated
device that run end to end on ``meta`` will not fail on a device mismatch under
``--device cuda``. What ``meta`` cannot check: values and speed (tests elsewhere), and code
that reads values on the host (realisation, exports, captures), which runs on the CPU by design.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch

from onnx_run.components import HybridModel
from onnx_run.config import load_config
from onnx_run.fabrication.device import build_error_models, fabricate
from onnx_run.ntk.teacher_cache import bounded_cache
from onnx_run.pipeline import Pipeline
from onnx_run.train.loop import make_optimizer, step_loss
from onnx_run.train.teacher import build_teacher, teacher_spec

META = torch.device("meta")
#: small but real configurations of each optics (the defaults build slowly, not run slowly)
SMALL = {
    "4f": ["optics.input_size_px=12", "optics.kernel_size=3", "optics.num_kernels=2"],
    "diffractive": ["optics.num_neurons=24", "optics.num_layers=2", "optics.spacing_mm=6.0",
                    "optics.input_size_px=12", "optics.num_kernels=4", "optics.kernel_size=3"],
    "metasurface": ["optics.kernel_mm=0.03", "optics.spacing_mm=0.01", "optics.kernel_size=3",
                    "optics.sensor_pitch_um=8.0", "optics.distance_mm=0.5", "optics.num_kernels=2",
                    "optics.input_size_px=12", "optics.realise_iterations=5", "optics.gs_iterations=2"],
}


def _setup(optics: str, task: str, method: str, extra: tuple[str, ...] = ()):
    """(config, task, data, student, teacher) built as the pipeline builds them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small optics: aliasing warnings are beside the point here
        cfg = load_config(None, [*SMALL[optics], *extra], {"optics": optics, "task": task, "distill": method})
        pipe = Pipeline(cfg, Path("unused"))  # nothing is written before prepare()
        student = pipe.build_student(0)
    return cfg, pipe.task, pipe.splits, student, build_teacher(cfg, teacher_spec(pipe.task, pipe.splits), 0)


def _on_meta(module: torch.nn.Module) -> torch.nn.Module:
    module.to(META)
    assert {t.device for t in [*module.parameters(), *module.buffers()]} <= {META}
    return module


def _step_on_meta(cfg, tk, splits, student, teacher, method: str, *, batch: int = 8, student_input=None,
                  param_names=None):
    """One full training step (forward, loss, backward, optimiser) with everything on meta."""
    loss_fn = cfg.methods["distill"][method].build()
    model = _on_meta(student)
    _on_meta(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, y = splits.train.tensors[0][:batch].to(META), splits.train.tensors[1][:batch].to(META)
    index = torch.arange(batch)  # as the loop: indices stay on the CPU
    kernel = None
    if loss_fn.needs_teacher_kernel:
        cache = bounded_cache(teacher, splits.train.tensors[0][:32].to(META), reduce=tk.ntk_reduce)
        kernel = lambda xb, idx: cache.kernel(idx)  # noqa: E731  (as the pipeline's)
    if param_names is not None:
        for name, p in model.named_parameters():
            p.requires_grad_(name in param_names)
    opt = make_optimizer(model, cfg.train, param_names)
    loss, logs = step_loss(model, model, loss_fn, tk, x=x, y=y, index=index,
                           student_input=x if student_input is None else student_input.to(META),
                           device=META, teacher=teacher if loss_fn.needs_teacher else None, teacher_kernel=kernel,
                           param_names=param_names)
    loss.backward()
    opt.step()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert loss.device == META and loss.dim() == 0
    assert all(isinstance(v, float) or v.device == META for v in logs.values())
    assert grads and all(g is not None and g.device == META for g in grads)
    assert {p.device for p in model.parameters()} == {META}  # the optimiser kept them there
    return logs


CASES = [("4f", "classification"), ("diffractive", "classification"), ("metasurface", "classification"),
         ("4f", "segmentation"), ("metasurface", "segmentation")]


@pytest.mark.parametrize("method", ["none", "kd", "ntkd"])
@pytest.mark.parametrize("optics,task", CASES)
def test_a_training_step_stays_on_the_model_device(optics, task, method):
    cfg, tk, splits, student, teacher = _setup(optics, task, method)
    logs = _step_on_meta(cfg, tk, splits, student, teacher, method)
    assert "task_loss" in logs


@pytest.mark.parametrize("setting", ["estimator=exact", "estimator=jvp", "estimator=fd", "max_samples=4",
                                     "params=all"])
def test_every_ntk_estimator_stays_on_the_model_device(setting):
    extra = (f"distill.ntkd.{setting}",) + (("distill.ntkd.estimator=jvp",) if setting == "params=all" else ())
    cfg, tk, splits, student, teacher = _setup("4f", "classification", "ntkd", extra)
    assert "ntk_loss" in _step_on_meta(cfg, tk, splits, student, teacher, "ntkd")


def test_a_backend_finetuning_step_on_captured_features_stays_on_the_device():
    """After fabrication: the backend alone learns from captured feature maps; the teacher
    (and its NTK) sees the raw images."""
    cfg, tk, splits, student, teacher = _setup("4f", "classification", "ntkd")
    captured = torch.rand(8, *student.frontend.feature_shape())
    backend = student.backend
    names = [n for n, _ in backend.named_parameters()]
    _step_on_meta(cfg, tk, splits, backend, teacher, "ntkd", student_input=captured, param_names=names)


def test_a_sketched_teacher_kernel_stays_on_the_device():
    """Past the memory budget the teacher cache stores random tangent features instead."""
    cfg, tk, splits, _, teacher = _setup("4f", "classification", "ntkd")
    cache = bounded_cache(_on_meta(teacher), splits.train.tensors[0][:32].to(META), reduce=tk.ntk_reduce,
                          max_memory_gb=1e-6, directions=8)
    assert cache.mode == "features"
    k = cache.kernel(torch.arange(6))
    assert k.device == META and k.shape == (6, 6)


def test_the_estimate_kernel_is_computed_on_the_device():
    from onnx_run.estimate.ntk_estimate import tangent_features

    cfg, tk, splits, _, _ = _setup("4f", "classification", "none")
    torch.manual_seed(0)
    fe = cfg.optics.build()
    model = HybridModel(fe, tk.backend_for_estimate(fe.feature_shape(), 10, 1)).to(META)
    phi = tangent_features(model, splits.train.tensors[0][:10], reduce=tk.ntk_reduce, directions=8, seed=0,
                           device=META)
    assert phi.device == META and phi.shape == (10, 10 * 8) and phi.dtype == torch.float32


CORE_ERRORS = [{"name": "brightness"}, {"name": "misalignment"}, {"name": "kernel-error"},
               {"name": "sensor-noise"}, {"name": "phase-quantisation", "bits": 3}]


@pytest.mark.parametrize("optics,spec", [("4f", s) for s in CORE_ERRORS] + [("metasurface", s) for s in CORE_ERRORS
                                                                          if s["name"] != "phase-quantisation"],
                         ids=lambda v: v if isinstance(v, str) else v["name"])
def test_fabrication_on_the_device_keeps_the_device(optics, spec):
    """Static errors are drawn from a CPU generator (the same device whatever the machine) and
    applied where the frontend lives; the fabricated frontend runs there. (The metasurface
    refuses phase-quantisation: its pillar widths are the quantity; its own tests check that.)"""
    _, _, splits, student, _ = _setup(optics, "classification", "none")
    fab = fabricate(_on_meta(student.frontend), build_error_models([spec]), seed=0)
    out = fab(splits.train.tensors[0][:4].to(META), torch.Generator().manual_seed(1))
    assert out.device == META and out.shape == (4, *student.frontend.feature_shape())
    assert {t.device for t in [*fab.parameters(), *fab.buffers()]} == {META}


PLUGIN_ERRORS = {
    "diffractive": [{"name": "diffractive-axial"}, {"name": "diffractive-height"},
                    {"name": "diffractive-misalignment"}, {"name": "diffractive-tilt"}],
    "metasurface": [{"name": "metasurface-distance"}, {"name": "metasurface-min-feature"},
                    {"name": "metasurface-shift"}, {"name": "metasurface-wavelength"},
                    {"name": "metasurface-width"}],
}


@pytest.mark.parametrize("optics,spec", [(o, s) for o, specs in PLUGIN_ERRORS.items() for s in specs],
                         ids=lambda v: v if isinstance(v, str) else v["name"])
def test_a_fabricated_device_runs_on_the_device(optics, spec):
    """The optics plugins' own error models, on realised frontends. The metasurface's are applied
    where the frontend lives. The diffractive ones read the design's heights and layer poses
    (values, so on the host: meta has none), so the device is fabricated on the CPU and moved,
    as a checkpointed device is; its fabrication state must move with it and the forward pass
    (poses, tilted-layer strips, gap errors) stay on the device."""
    _, _, splits, student, _ = _setup(optics, "classification", "none")
    realised, _ = student.frontend.realise(progress=False)
    if optics == "metasurface":
        fab = fabricate(_on_meta(realised), build_error_models([spec]), seed=0)
    else:
        fab = copy.deepcopy(fabricate(realised, build_error_models([spec]), seed=0)).to(META)
    out = fab(splits.train.tensors[0][:4].to(META))
    assert out.device == META and out.shape == (4, *student.frontend.feature_shape())
    assert {t.device for t in [*fab.parameters(), *fab.buffers()]} == {META}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("command", [[], ["estimate"]], ids=["pipeline", "estimate"])
def test_cuda_asked_for_without_cuda_is_one_line(command, tmp_path, tiny_optics):
    from click.testing import CliRunner

    from onnx_run.cli import cli

    res = CliRunner().invoke(cli, [*command, "--optics", "tiny", "--device", "cuda", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == ("Error: run.device: 'cuda' was asked for but CUDA is not available here; "
                                  "use 'cpu' or 'auto'")
    assert not (tmp_path / "runs").exists()
