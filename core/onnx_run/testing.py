"""What a plugin author tests with: the component contracts as checks, in-process registration,
and a tiny run of every stage.

The checks raise ``AssertionError`` naming the broken rule, so a plugin's own tests are one line
each (the bundled plugins run the same ones, tests/test_contract.py)::

    from onnx_run.testing import check_optics, run_every_stage

    def test_my_optics_keeps_the_contract(tmp_path):
        check_optics(PinholeFrontend(PinholeConfig()), tmp_path)

    def test_every_stage_runs(tmp_path):
        run_every_stage(["--optics", "pinhole", "--task", "classification"], tmp_path)
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Iterator, Sequence

import attrs
import torch
from attrs import validators as v
from torch import nn

from onnx_run.components import (DistillationLoss, DistillContext, ErrorModel, Layout, OpticalFrontend, Task,
                                 TeacherSpec)
from onnx_run.hookspecs import hookimpl

__all__ = ["TINY_RUN", "TinyOptics", "TinyOpticsConfig", "check_error_model", "check_loss", "check_optics",
           "check_task", "check_teacher", "plugin_registered", "run_every_stage", "tiny_optics_plugin"]

#: the settings of a run small enough for a test: one seed, one epoch, a few dozen images
TINY_RUN: tuple[str, ...] = (
    "--seeds", "1", "--distill", "none,ntkd", "--set", "train.epochs=1", "--set", "train.max_train=96",
    "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=96", "--set", "finetune.epochs=1",
    "--set", "run.progress=false", "--set", "estimate.inits=1", "--set", "estimate.max_train=60",
    "--set", "estimate.max_eval=30", "--set", "distill.kd.folds=0",
)


@contextlib.contextmanager
def plugin_registered(plugin: Any, name: str) -> Iterator[str]:
    """Register a plugin object or module in-process for the block (no install needed); one
    already registered (installed, its entry point loaded) is left as it is."""
    from onnx_run.plugins import get_plugin_manager, register_plugin, unregister_plugin

    pm = get_plugin_manager()
    if pm.is_registered(plugin):
        yield pm.get_name(plugin)
        return
    register_plugin(plugin, name=name)
    try:
        yield name
    finally:
        with contextlib.suppress(ValueError):
            unregister_plugin(name)


@attrs.define(kw_only=True)
class TinyOpticsConfig:
    """The reference optics' settings (the keys a task may suggest)."""

    num_kernels: int = attrs.field(default=4, validator=v.ge(1))
    kernel_size: int = attrs.field(default=5, validator=v.ge(1))
    input_size_px: int = attrs.field(default=16, validator=v.ge(4))
    channels: int = attrs.field(default=1, validator=v.in_([1, 3]))


class TinyOptics(OpticalFrontend):
    """The smallest thing that behaves like incoherent optics: K learnable non-negative PSFs
    (squared weights) convolved with the image. For testing tasks, teachers, error models and
    losses without an optics plugin (``tiny_optics_plugin()`` registers it as ``tiny``)."""

    capabilities = frozenset({"perturb_kernels"})

    def __init__(self, config: TinyOpticsConfig):
        super().__init__(config)
        self.in_channels = config.channels
        self.input_size = (config.input_size_px, config.input_size_px)
        self.weight = nn.Parameter(0.3 * torch.randn(config.num_kernels, config.channels,
                                                     config.kernel_size, config.kernel_size))

    def layout(self) -> Layout:
        return Layout(self.config.num_kernels, 1, self.config.num_kernels, self.config.kernel_size)

    def kernels(self) -> torch.Tensor:
        return self.weight.detach().square()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight.square(), padding=self.config.kernel_size // 2)

    def perturb_kernels(self, relative_sigma: float, generator: torch.Generator) -> "TinyOptics":
        clone = copy.deepcopy(self)
        with torch.no_grad():
            clone.weight.mul_((1 + relative_sigma * torch.randn(clone.weight.shape, generator=generator)).abs().sqrt())
        return clone


class _TinyOpticsPlugin:
    __name__ = "tiny-optics"

    @hookimpl
    def register_optics(self, register: Any) -> None:
        register("tiny", TinyOptics, config=TinyOpticsConfig, description="tiny test optics")


def tiny_optics_plugin() -> Any:
    """A plugin object registering :class:`TinyOptics` as ``tiny``: use it with
    :func:`plugin_registered` to run a task, teacher, error model or loss end to end."""
    return _TinyOpticsPlugin()


def _inputs(frontend: OpticalFrontend, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frontend.in_channels, *frontend.input_size, generator=gen)


def check_optics(frontend: OpticalFrontend, out_dir: Path) -> None:
    """The optics contract (docs/plugins.md, ``register_optics``): intensities (B, C, H, W) in,
    finite sensor maps (B, K, H', W') out with K the layout's kernel count; gradients reach its
    parameters; kernels (K, C, kh, kw); ``realise`` returns a frontend of the same output shape
    and a report, which ``load_realised`` rebuilds from its state dict; ``frozen`` learns nothing;
    ``export`` writes the files it names; every declared capability is a method that returns a
    frontend of the same output shape, seeded where it samples."""
    assert isinstance(frontend, OpticalFrontend), f"{type(frontend).__name__} is not an OpticalFrontend"
    assert frontend.in_channels in (1, 3), f"in_channels must be 1 or 3, got {frontend.in_channels}"
    assert len(tuple(frontend.input_size)) == 2, f"input_size must be (rows, cols), got {frontend.input_size}"
    x = _inputs(frontend)
    y = frontend(x)
    layout = frontend.layout()
    assert y.ndim == 4 and y.shape[0] == x.shape[0], f"output must be (B, K, H', W'), got {tuple(y.shape)}"
    assert y.shape[1] == layout.num_kernels, \
        f"output has {y.shape[1]} maps but layout() says {layout.num_kernels} kernels"
    assert torch.isfinite(y).all(), "output holds NaN or infinity"
    assert tuple(frontend.feature_shape()) == tuple(y.shape[1:]), "feature_shape() disagrees with the output"
    trainable = [p for p in frontend.parameters() if p.requires_grad]
    if trainable:
        y.square().mean().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable), \
            "no gradient reaches the optics' parameters"
        frontend.zero_grad(set_to_none=True)
    kernels = frontend.kernels()
    assert kernels.ndim == 4 and kernels.shape[0] == layout.num_kernels and kernels.shape[1] == frontend.in_channels, \
        f"kernels() must be (K={layout.num_kernels}, C={frontend.in_channels}, kh, kw), got {tuple(kernels.shape)}"
    realised, report = frontend.realise(progress=False)
    assert isinstance(realised, OpticalFrontend) and isinstance(report, dict), \
        "realise() must return (an OpticalFrontend, a dict report)"
    with torch.no_grad():
        r = realised(x)
        assert r.shape == y.shape, f"the realised frontend gives {tuple(r.shape)}, the design {tuple(y.shape)}"
        again = frontend.load_realised(copy.deepcopy(realised.state_dict()))
        assert torch.allclose(again(x), r, atol=1e-6), "load_realised(state) does not rebuild the realised frontend"
    frozen = frontend.frozen()
    assert not any(p.requires_grad for p in frozen.parameters()), "frozen() still has trainable parameters"
    files = frontend.export(Path(out_dir))
    missing = [str(f) for f in files if not Path(f).exists()]
    assert not missing, f"export() names files it did not write: {missing}"
    for capability in sorted(frontend.capabilities):
        method = getattr(frontend, capability, None)
        assert callable(method), f"declares the capability {capability!r} but has no method of that name"
        args = {"perturb_kernels": lambda: (0.1, torch.Generator().manual_seed(3)),
                "quantise_phase": lambda: (3,)}.get(capability)
        if args is None:
            continue  # a capability of its own: the plugin tests it
        changed = method(*args())
        with torch.no_grad():
            out = changed(x)
        assert out.shape == y.shape, f"{capability}() changes the output shape to {tuple(out.shape)}"
        if capability == "perturb_kernels":
            with torch.no_grad():
                twin = getattr(frontend, capability)(*args())(x)
            assert torch.equal(out, twin), "perturb_kernels() with the same seed gives another device"


def check_error_model(model: ErrorModel, frontend: OpticalFrontend) -> None:
    """The error-model contract (``register_error_models``): on a frontend that offers what the
    model ``requires``, ``apply_to_frontend`` returns a module with the same output shape, the
    same device for the same seed, and leaves the design it was given untouched;
    ``apply_to_measurement`` keeps the shape and stays finite; ``scaled(2)`` on its settings,
    where given, is valid settings of the same class."""
    assert isinstance(model, ErrorModel), f"{type(model).__name__} is not an ErrorModel"
    missing = set(model.requires) - set(frontend.capabilities)
    assert not missing, f"the test frontend lacks {sorted(missing)}: give one that declares them"
    x = _inputs(frontend)
    with torch.no_grad():
        before = frontend(x)
        devices = [model.apply_to_frontend(copy.deepcopy(frontend), torch.Generator().manual_seed(7)) for _ in range(2)]
        outs = [d(x) for d in devices]
        assert outs[0].shape == before.shape, f"the device gives {tuple(outs[0].shape)}, the design {tuple(before.shape)}"
        assert torch.allclose(outs[0], outs[1]), "the same seed gives different devices"
        assert torch.equal(frontend(x), before), "apply_to_frontend changed the design it was given"
        measured = model.apply_to_measurement(outs[0].clone(), torch.Generator().manual_seed(8))
        assert measured.shape == outs[0].shape and torch.isfinite(measured).all(), \
            "apply_to_measurement must keep the shape and stay finite"
    scale = getattr(model.config, "scaled", None)
    if callable(scale):
        harsher = scale(2.0)
        assert type(harsher) is type(model.config), "scaled() must return settings of the same class"


def check_task(task: Task, *, channels: int = 1, image_size: tuple[int, int] = (16, 16), num_kernels: int = 4) -> None:
    """The task contract (``register_tasks``): train/val/test splits of (image, target) tensors,
    a backend from optical features to outputs, a scalar loss with a gradient, metrics that hold
    the primary one, ``ntk_reduce`` to (B, O), and suggestions that are plain tables."""
    assert isinstance(task, Task), f"{type(task).__name__} is not a Task"
    splits = task.datasets(image_size=image_size, channels=channels, seed=0)
    for name in ("train", "val", "test"):
        split = getattr(splits, name, None)
        assert split is not None and len(split) > 0, f"datasets() has no {name} split"
        x, _ = split[0]
        assert tuple(x.shape) == (channels, *image_size), f"{name} images are {tuple(x.shape)}, asked for " \
                                                           f"{(channels, *image_size)}"
    assert float(splits.train.tensors[0].min()) >= 0, "images must be intensities (>= 0)"
    outputs = task.num_outputs(splits)
    assert outputs >= 2, f"num_outputs() is {outputs}"
    backend = task.build_backend((num_kernels, *image_size), outputs)
    assert isinstance(backend, nn.Module), "build_backend() must return an nn.Module"
    x, y = splits.train.tensors[0][:4], splits.train.tensors[1][:4]
    feats = torch.rand(len(x), num_kernels, *image_size)
    out = backend(feats)
    loss = task.loss(out, y)
    assert loss.ndim == 0 and torch.isfinite(loss), "loss() must be a finite scalar"
    loss.backward()
    metrics = task.metrics(out.detach(), y)
    assert task.primary_metric in metrics, f"metrics() lacks the primary metric {task.primary_metric!r}"
    reduced = task.ntk_reduce(out)
    assert reduced.ndim == 2 and reduced.shape[0] == len(x), f"ntk_reduce() must give (B, O), got {tuple(reduced.shape)}"
    for name in ("optics_defaults", "core_defaults", "distill_defaults"):
        assert isinstance(getattr(task, name)(), dict), f"{name}() must return a dict"


def check_teacher(teacher: nn.Module, spec: TeacherSpec) -> None:
    """The teacher contract (``register_teachers``): raw images (B, C, H, W) of the spec in, the
    task's outputs (B, num_outputs, ...) out, finite, with a gradient to its parameters."""
    x = torch.rand(2, spec.channels, *spec.image_size, generator=torch.Generator().manual_seed(0))
    out = teacher(x)
    assert out.shape[:2] == (2, spec.num_outputs), f"outputs must be (B, {spec.num_outputs}, ...), got {tuple(out.shape)}"
    assert torch.isfinite(out).all(), "outputs hold NaN or infinity"
    out.square().mean().backward()
    assert any(p.grad is not None for p in teacher.parameters()), "no gradient reaches the teacher"


def check_loss(loss: DistillationLoss, task: Task, student: nn.Module, teacher: nn.Module | None,
               x: torch.Tensor, y: torch.Tensor) -> None:
    """The distillation-loss contract (``register_distillation_losses``): a finite scalar with a
    gradient to the student, and logs of floats or 0-dim tensors. The teacher's outputs (and its
    kernel) are handed over as training does, when the loss says it needs them."""
    from onnx_run.ntk import empirical_ntk

    outputs = None if loss.computes_outputs else student(x)
    ctx = DistillContext(x=x, y=y, index=torch.arange(len(x)), student=student, student_outputs=outputs, task=task)
    if loss.needs_teacher:
        assert teacher is not None, "the loss needs a teacher: give one"
        with torch.no_grad():
            ctx.teacher, ctx.teacher_outputs = teacher, teacher(x)
        if loss.needs_teacher_kernel:
            ctx.teacher_kernel = lambda: empirical_ntk(teacher, x, reduce=task.ntk_reduce).detach()
    value, logs = loss(ctx)
    assert value.ndim == 0 and torch.isfinite(value), "the loss must be a finite scalar"
    value.backward()
    assert any(p.grad is not None for p in student.parameters()), "no gradient reaches the student"
    for key, v in logs.items():
        assert isinstance(v, float) or (isinstance(v, torch.Tensor) and v.ndim == 0), f"log {key!r} is not a number"


def run_every_stage(args: Sequence[str], out_dir: Path) -> Path:
    """Run ``onnx-run ARGS`` with every stage at the sizes of :data:`TINY_RUN` (the command line
    itself, in-process); return the run directory. It fails with the command's output when a
    stage fails."""
    from click.testing import CliRunner

    from onnx_run.cli import cli

    out_dir = Path(out_dir)
    res = CliRunner().invoke(cli, [*TINY_RUN, *args, "--out", str(out_dir)])  # yours win
    assert res.exit_code == 0, f"onnx-run {' '.join(args)} failed:\n{res.output[-3000:]}"
    runs = [p for p in out_dir.iterdir() if (p / "results.md").exists()]
    assert runs, "no run directory with results.md"
    return runs[0]
