"""Mixed precision (run.precision): bf16/fp16 for the digital parts, float32 optics and NTKs."""

from __future__ import annotations

import types

import math

import attrs
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from onnx_run.cli import cli
from onnx_run.components import DistillContext, HybridModel
from onnx_run.config import load_config
from onnx_run.distill.losses import KDConfig, KDLoss, NoDistillation, NTKDConfig, NTKDLoss
from onnx_run.errors import UserError
from onnx_run.ntk import empirical_ntk
from onnx_run.precision import autocast, check_precision
from onnx_run.tasks.backends import FCBackend
from onnx_run.train import loop
from onnx_run.train.checkpoint import load_checkpoint
from onnx_run.train.loop import Output, Recipe, TrainData, Trainee, Training

CPU = torch.device("cpu")


def _frontend_4f():
    """A small, fast, warning-free 4f system (the numbers of plugins/optics_4f/tests: 4 x 4 input)."""
    from onnx_run_optics_4f import Frontend4f, Optics4fConfig

    lam, f, p, m = 500e-9, 10e-3, 10e-6, 16
    s = lam * f / p / 12
    return Frontend4f(Optics4fConfig(wavelength_nm=lam * 1e9, focal_length_mm=f * 1e3, slm_pitch_um=p * 1e6,
                                     slm_pixels=m, sensor_pitch_um=s * 1e6, input_size_px=4, kernel_size=3,
                                     num_kernels=2, signed=True, phase_bits=0, init="random", seed=3))


def _hybrid_4f() -> HybridModel:
    torch.manual_seed(0)
    fe = _frontend_4f()
    return HybridModel(fe, FCBackend(fe.feature_shape(), 10, hidden=(16,), pool=2))


# -- config and CLI ------------------------------------------------------------------------------


def test_precision_setting_and_values():
    assert load_config(None, []).run.precision == "fp32"
    assert load_config(None, ["run.precision=bf16"]).run.precision == "bf16"
    with pytest.raises(UserError, match=r"^run.precision: must be in \['fp32', 'bf16', 'fp16'\] \(got 'fp8'\)$"):
        load_config(None, ["run.precision=fp8"])
    assert check_precision("bf16", CPU) == "bf16"
    assert check_precision("fp16", "cuda") == "fp16"  # allowed by name; the device check is resolve_device's
    refused = r"^run.precision: 'fp16' needs a CUDA device.*allowed on cpu: 'fp32' or 'bf16'$"
    with pytest.raises(UserError, match=refused):
        check_precision("fp16", CPU)


def test_fp16_on_cpu_is_refused_through_the_cli(tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["--optics", "4f", "--task", "classification", "--set", "run.precision=fp16",
                                   "--out", str(out), "--check"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: run.precision: 'fp16' needs a CUDA device")
    assert "'fp32' or 'bf16'" in lines[0]
    assert not out.exists()  # refused before any run directory is written
    # the same without --dry-run: still nothing written
    res = CliRunner().invoke(cli, ["--optics", "4f", "--task", "classification", "--set", "run.precision=fp16",
                                   "--out", str(out)])
    assert res.exit_code == 2 and "run.precision" in res.output and not out.exists()
    bad = CliRunner().invoke(cli, ["--optics", "4f", "--task", "classification", "--set", "run.precision=half",
                                   "--out", str(out), "--check"])
    assert bad.exit_code == 2 and "run.precision: must be in ['fp32', 'bf16', 'fp16'] (got 'half')" in bad.output


def test_bf16_dry_run_is_accepted_on_cpu(tmp_path, tiny_optics):
    out = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["--optics", "tiny", "--task", "classification", "--set", "run.precision=bf16",
                                   "--out", str(out), "--check"])
    assert res.exit_code == 0, res.output
    assert not out.exists()


# -- where each dtype is used ------------------------------------------------------------------------


def test_bf16_forward_keeps_the_optics_in_float32_and_complex64(monkeypatch):
    model = _hybrid_4f()
    x = torch.rand(3, 1, 4, 4)
    ref = model(x)

    # control: the 4f frontend called directly under autocast would be downcast (its PSF convolution)
    with autocast(CPU, "bf16"):
        assert model.frontend(x).dtype == torch.bfloat16

    fft_dtypes: list[torch.dtype] = []
    for name in ("fft", "ifft", "fft2", "ifft2", "rfft2", "irfft2", "fftn", "ifftn"):
        original = getattr(torch.fft, name)

        def spy(*args, _original=original, **kwargs):
            result = _original(*args, **kwargs)
            fft_dtypes.extend([args[0].dtype, result.dtype])
            return result

        monkeypatch.setattr(torch.fft, name, spy)
    seen: dict[str, torch.dtype] = {}

    def record(key):  # a hook that returns None (a value would replace the module's output)
        def hook(module, args, output=None):
            seen[key] = (args[0] if output is None else output).dtype
        return hook

    model.frontend.register_forward_hook(record("frontend"))
    model.backend.register_forward_pre_hook(record("backend_in"))
    linears = [m for m in model.backend.modules() if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        lin.register_forward_hook(record(f"linear{i}"))

    with autocast(CPU, "bf16"):
        out = model(x.bfloat16())  # a half-precision input is cast back to float32 for the optics

    assert fft_dtypes, "the 4f frontend computes its PSF with FFTs"
    assert set(fft_dtypes) <= {torch.float32, torch.complex64}
    assert torch.complex64 in fft_dtypes
    assert seen["frontend"] == seen["backend_in"] == torch.float32
    assert all(seen[f"linear{i}"] == torch.bfloat16 for i in range(len(linears)))
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, rtol=0.05, atol=0.05)
    # the optics give the same features at both precisions (bit for bit: nothing was downcast)
    with autocast(CPU, "bf16"):
        feats = HybridModel(model.frontend, nn.Identity())(x)
    assert feats.dtype == torch.float32 and torch.equal(feats, model.frontend(x))


# -- training ----------------------------------------------------------------------------------------


class _Teacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def tiny(tiny_training):
    return tiny_training(["train.epochs=2", "train.max_train=96", "train.batch_size=32", "train.lr=0.005"])


def _train(tiny, run_dir, precision, loss=None, teacher=None, teacher_kernel=None, model=None, settings=None):
    cfg, task, splits, build = tiny
    m = model if model is not None else build()
    summary = Training(
        trainee=Trainee(model=m, loss_fn=loss or NoDistillation(None), teacher=teacher, teacher_kernel=teacher_kernel),
        data=TrainData(task=task, splits=splits),
        recipe=Recipe(settings=settings or cfg.train, seed=1, device=CPU, precision=precision),
        output=Output(run_dir=run_dir, progress=False)).run()
    return m, summary


def _train_loss(run_dir):
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows]


def test_bf16_training_is_finite_and_close_to_fp32(tiny, tmp_path):
    m32, s32 = _train(tiny, tmp_path / "fp32", "fp32")
    model = tiny[3]()
    seen: set[torch.dtype] = set()
    model.backend.register_forward_hook(lambda m, a, o: seen.add(o.dtype) if torch.is_grad_enabled() else None)
    m16, s16 = _train(tiny, tmp_path / "bf16", "bf16", model=model)
    assert seen == {torch.bfloat16}  # the backend ran in bf16 during the training steps
    l32, l16 = _train_loss(tmp_path / "fp32"), _train_loss(tmp_path / "bf16")
    assert all(math.isfinite(v) for v in l16)
    assert l16[-1] < l16[0]  # it learns
    for a, b in zip(l32, l16):
        assert abs(a - b) < 0.05 * a + 0.02
    assert abs(s32["test_accuracy"] - s16["test_accuracy"]) < 0.15
    assert all(p.dtype == torch.float32 for p in m16.parameters())  # weights stay float32
    assert "scaler" not in load_checkpoint(tmp_path / "bf16" / "last.pt")  # bf16 needs no scaler


def test_bf16_kd_runs_the_teacher_in_bf16(tiny, tmp_path):
    torch.manual_seed(5)
    teacher = _Teacher()
    seen: set[torch.dtype] = set()
    teacher.net[1].register_forward_hook(lambda m, a, o: seen.add(o.dtype))
    _train(tiny, tmp_path / "kd", "bf16", loss=KDLoss(KDConfig()), teacher=teacher)
    assert seen == {torch.bfloat16}
    assert all(math.isfinite(v) for v in _train_loss(tmp_path / "kd"))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_resume_under_mixed_precision_is_identical(tiny, tmp_path, monkeypatch, precision, kill_after):
    if precision == "fp16":
        # fp16 is refused on CPU by configuration; its GradScaler path (state in last.pt, restored on
        # resume) is exercised here on CPU, where torch supports fp16 autocast and a GradScaler too
        monkeypatch.setattr(loop, "check_precision", lambda precision, device: precision)
    ref, _ = _train(tiny, tmp_path / "ref", precision)
    with pytest.raises(kill_after.Killed):
        _train(tiny, tmp_path / "killed", precision, loss=kill_after(4))  # 3 steps per epoch: dies in epoch 2
    state = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert state["epoch"] == 0
    assert ("scaler" in state) == (precision == "fp16")
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0
    resumed, _ = _train(tiny, tmp_path / "killed", precision)
    for (name, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_fp16_train_model_refused_on_cpu(tiny, tmp_path):
    with pytest.raises(UserError, match="run.precision: 'fp16' needs a CUDA device"):
        _train(tiny, tmp_path / "x", "fp16")
    assert not (tmp_path / "x").exists()


# -- NTK in float32 ------------------------------------------------------------------------------------


def test_ntkd_under_bf16_uses_float32_kernels(tiny):
    _, task, splits, build = tiny
    student = build()
    torch.manual_seed(7)
    teacher = _Teacher().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, y = splits.train.tensors[0][:12], splits.train.tensors[1][:12]
    t_names = [n for n, _ in teacher.named_parameters()]

    def teacher_kernel():
        return empirical_ntk(teacher, x, params=t_names, reduce=task.ntk_reduce)

    k_ref = teacher_kernel()
    for estimator in ("structured", "exact", "jvp"):
        for params in ("backend", "all"):
            loss_fn = NTKDLoss(NTKDConfig(estimator=estimator, params=params, directions=4))

            def run(precision):
                torch.manual_seed(11)  # jvp directions
                ctx = DistillContext(x=x, y=y, index=torch.arange(12), student=student, student_outputs=None,
                                     task=task, teacher=teacher, teacher_kernel=teacher_kernel)
                with autocast(CPU, precision):
                    loss, logs = loss_fn(ctx)
                return loss, logs, ctx.student_outputs

            loss32, logs32, out32 = run("fp32")
            loss16, logs16, out16 = run("bf16")
            assert loss16.dtype == torch.float32 and out16.dtype == torch.float32
            assert float(logs16["ntk_loss"]) == pytest.approx(float(logs32["ntk_loss"]), rel=1e-5, abs=1e-6), \
                (estimator, params)
            if estimator == "structured":  # the kernel pass yields the outputs: all float32
                assert float(loss16.detach()) == pytest.approx(float(loss32.detach()), rel=1e-5, abs=1e-6)

    # the kernels themselves: float32 and equal to the fp32 ones under bf16 autocast
    names = student.backend_parameter_names()
    for method in ("structured", "exact"):
        k32 = empirical_ntk(student, x, params=names, reduce=task.ntk_reduce, method=method)
        with autocast(CPU, "bf16"):
            k16 = empirical_ntk(student, x, params=names, reduce=task.ntk_reduce, method=method)
            t16 = teacher_kernel()
            k_half_in = empirical_ntk(student, x.bfloat16(), params=names, reduce=task.ntk_reduce, method=method)
        assert k16.dtype == t16.dtype == k_half_in.dtype == torch.float32
        torch.testing.assert_close(k16, k32, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(t16, k_ref, rtol=1e-5, atol=1e-6)
        k_rounded = empirical_ntk(student, x.bfloat16().float(), params=names, reduce=task.ntk_reduce, method=method)
        torch.testing.assert_close(k_half_in, k_rounded, rtol=1e-5, atol=1e-6)


def test_bf16_ntkd_training_step(tiny, tmp_path):
    _, task, splits, _ = tiny
    torch.manual_seed(7)
    teacher = _Teacher().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t_names = [n for n, _ in teacher.named_parameters()]
    kernels: list[torch.Tensor] = []

    def teacher_kernel(xb, idx):
        k = empirical_ntk(teacher, xb, params=t_names, reduce=task.ntk_reduce)
        kernels.append(k)
        return k

    _train(tiny, tmp_path / "ntkd", "bf16", loss=NTKDLoss(NTKDConfig()), teacher=teacher,
           teacher_kernel=teacher_kernel, settings=attrs.evolve(tiny[0].train, epochs=1))
    assert kernels and all(k.dtype == torch.float32 for k in kernels)
    assert all(math.isfinite(v) for v in _train_loss(tmp_path / "ntkd"))


# -- wiring: the pipeline and the teacher get run.precision ---------------------------------------------


def test_pipeline_and_teacher_use_run_precision(tmp_path, tiny_optics, monkeypatch):
    from onnx_run import pipeline
    from onnx_run.train import teacher as teacher_mod

    sets = ["run.progress=false", f"run.out={tmp_path}"]
    cfg16 = load_config(None, sets + ["run.precision=bf16"], {"optics": "tiny", "distill": "none"})
    cfg32 = load_config(None, sets, {"optics": "tiny", "distill": "none"})
    pipe = pipeline.Pipeline(cfg16, tmp_path / "run")
    assert pipe.precision == "bf16"
    calls: list[str] = []
    def fake_training(**k):
        calls.append(k["recipe"].precision)
        return types.SimpleNamespace(run=lambda: {})

    monkeypatch.setattr(pipeline, "Training", fake_training)
    pipe.stage_students()
    assert calls == ["bf16"]

    class Stop(Exception):
        pass

    def fake_train(**k):
        calls.append(k["recipe"].precision)
        raise Stop

    monkeypatch.setattr(teacher_mod, "Training", fake_train)
    with pytest.raises(Stop):
        pipe.teacher()
    assert calls == ["bf16", "bf16"]
    # a bf16 teacher is cached apart from the fp32 one
    spec = teacher_mod.teacher_spec(pipe.task, pipe.splits)
    assert teacher_mod.teacher_key(cfg16, spec, "digits", 0) != teacher_mod.teacher_key(cfg32, spec, "digits", 0)
