"""One test per hook in hookspecs.py (a meta-test enforces it), each through a plugin object."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import attrs
import click
import pytest
import torch
from click.testing import CliRunner

import onnx_run
from onnx_run import hookspecs
from onnx_run.cli import cli
from onnx_run.components import DistillationLoss, ErrorModel, Task
from onnx_run.plugins import register_plugin, registry, unregister_plugin

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if callable(fn) and hasattr(fn, "onnx_run_spec"))


def test_every_hook_has_a_test():
    names = set(globals())
    missing = [h for h in HOOKS if f"test_hook_{h}" not in names]
    assert not missing, f"hooks without a test: {missing}"
    assert len(HOOKS) == 9


def test_every_hook_documented_with_exact_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        sig = f"{name}{inspect.signature(fn)}".replace("'", "")
        heading = re.search(rf"^### `{re.escape(sig)}`$", doc, re.M)
        assert heading, f"docs/plugins.md lacks a section headed ### `{sig}`"


def _with(plugin, name="hook-test"):
    register_plugin(plugin, name=name)
    return name


def test_hook_register_optics(tiny_optics):
    comp = registry()["optics"]["tiny"]
    frontend = comp.factory(comp.config())
    assert frontend(torch.rand(2, 1, 16, 16)).shape == (2, 4, 16, 16)
    assert "tiny" in CliRunner().invoke(cli, ["--help"]).output


@attrs.define
class EchoTaskConfig:
    dataset: str = "none"


class EchoTask(Task):
    kind = "classification"


def test_hook_register_tasks():
    class P:
        @onnx_run.hookimpl
        def register_tasks(self, register):
            register("echo", EchoTask, config=EchoTaskConfig, description="echo")

    _with(P())
    assert registry()["tasks"]["echo"].factory is EchoTask
    assert "echo" in CliRunner().invoke(cli, ["plugins", "--all"]).output
    unregister_plugin("hook-test")
    assert "echo" not in registry()["tasks"]


def test_hook_register_teachers():
    class P:
        @onnx_run.hookimpl
        def register_teachers(self, register):
            register("tiny-mlp", lambda config, spec: torch.nn.Linear(4, spec.num_outputs))

    _with(P())
    from onnx_run.components import TeacherSpec

    net = registry()["teachers"]["tiny-mlp"].factory(None, TeacherSpec("classification", 1, (2, 2), 3))
    assert net(torch.zeros(1, 4)).shape == (1, 3)


def test_hook_register_error_models():
    class Double(ErrorModel):
        def apply_to_measurement(self, features, generator):
            return 2 * features

    class P:
        @onnx_run.hookimpl
        def register_error_models(self, register):
            register("double", Double)

    _with(P())
    model = registry()["error_models"]["double"].factory(None)
    assert torch.equal(model.apply_to_measurement(torch.ones(2), None), torch.full((2,), 2.0))


def test_hook_register_distillation_losses(tiny_optics):
    class Zero(DistillationLoss):
        def __call__(self, ctx):
            return ctx.student_outputs.sum() * 0, {}

    class P:
        @onnx_run.hookimpl
        def register_distillation_losses(self, register):
            register("zero", Zero)

    _with(P())
    res = CliRunner().invoke(cli, ["config", "show", "--optics", "tiny", "--distill", "zero"])
    assert res.exit_code == 0 and 'methods = [\n    "zero",\n]' in res.output or '"zero"' in res.output


def test_hook_register_commands():
    class P:
        @onnx_run.hookimpl
        def register_commands(self, cli):
            @cli.command("ping-test")
            def ping():
                """Answer pong."""
                click.echo("pong")

    _with(P())
    from onnx_run.plugins import get_plugin_manager

    get_plugin_manager().hook.register_commands(cli=cli)
    try:
        runner = CliRunner()
        assert "ping-test" in runner.invoke(cli, ["--help"]).output
        assert runner.invoke(cli, ["ping-test"]).output == "pong\n"
    finally:
        cli.commands.pop("ping-test", None)


class Recorder:
    def __init__(self):
        self.calls = []

    @onnx_run.hookimpl
    def on_run_start(self, run):
        self.calls.append(("start", run.name))

    @onnx_run.hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        self.calls.append(("epoch", epoch, round(metrics["val_accuracy"], 6)))

    @onnx_run.hookimpl
    def on_run_end(self, run, summary):
        self.calls.append(("end", summary["name"]))


@pytest.fixture
def recorded_run(tmp_path, tiny_optics):
    """Train a tiny student for two epochs with a recording plugin installed."""
    from onnx_run.components import HybridModel
    from onnx_run.config import load_config
    from onnx_run.train.loop import Output, Recipe, TrainData, Trainee, Training

    rec = Recorder()
    _with(rec, "recorder")
    cfg = load_config(None, ["train.epochs=2", "train.max_train=64"], {"optics": "tiny", "distill": "none"})
    task = cfg.task.build()
    splits = task.datasets(image_size=(16, 16), channels=1, seed=0)
    frontend = cfg.optics.build()
    model = HybridModel(frontend, task.build_backend(frontend.feature_shape(), 10))
    Training(trainee=Trainee(model=model, loss_fn=cfg.methods["distill"]["none"].build()),
             data=TrainData(task=task, splits=splits),
             recipe=Recipe(settings=cfg.train, seed=0, device=torch.device("cpu")),
             output=Output(run_dir=tmp_path / "run", desc="recorded", progress=False)).run()
    return rec.calls, tmp_path / "run"


def test_hook_on_run_start(recorded_run):
    calls, _ = recorded_run
    assert calls[0] == ("start", "recorded")


def test_hook_on_epoch_end(recorded_run):
    import json

    calls, run_dir = recorded_run
    epochs = [c for c in calls if c[0] == "epoch"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e[1] for e in epochs] == [0, 1]
    assert [e[2] for e in epochs] == [round(r["val_accuracy"], 6) for r in rows]


def test_hook_on_run_end(recorded_run):
    calls, run_dir = recorded_run
    assert calls[-1] == ("end", "recorded") and (run_dir / "summary.json").exists()
