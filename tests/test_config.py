"""Config resolution: TOML + flags + --set, two-step structuring, one-line errors with exit 2."""

from __future__ import annotations

import tomllib

import attrs
import pytest
from click.testing import CliRunner

import onnx_run
from onnx_run.cli import cli
from onnx_run.config import load_config, parse_value
from onnx_run.errors import UserError


def run(args):
    return CliRunner().invoke(cli, args)


def test_parse_value_literals():
    assert parse_value("3") == 3 and parse_value("2.5") == 2.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("hello") == "hello" and parse_value('"7"') == "7"


def test_sources_merge_in_order(tmp_path, tiny_optics):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nepochs = 3\nlr = 0.01\n[optics]\nname = "tiny"\nnum_kernels = 6\n')
    cfg = load_config(path, ["train.epochs=5"], {"seed": 7})
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.01 and cfg.run.seed == 7
    assert cfg.optics.name == "tiny" and cfg.optics.config.num_kernels == 6
    assert cfg.teacher.name == "lenet"  # the task's default teacher
    assert list(cfg.methods["distill"]) == ["none", "kd", "ntkd"]


def test_config_show_round_trips(tiny_optics, tmp_path):
    res = run(["config", "show", "--optics", "tiny", "--task", "classification", "--distill", "kd",
               "--set", "distill.kd.temperature=4"])
    assert res.exit_code == 0, res.output
    doc = tomllib.loads(res.output)
    assert doc["optics"] == {"name": "tiny", "num_kernels": 4, "kernel_size": 5, "input_size_px": 16, "channels": 1}
    assert doc["distill"]["kd"]["temperature"] == 4.0 and doc["students"]["methods"] == ["kd"]
    (tmp_path / "c.toml").write_text(res.output)
    again = run(["config", "show", "--config", str(tmp_path / "c.toml")])
    assert again.output == res.output


@pytest.mark.parametrize("args, expected", [
    (["--set", "train.epoch=3"], "train: unknown key 'epoch'; allowed keys: epochs"),
    (["--set", "train.epochs=abc"], "train.epochs: expected an integer, got 'abc'"),
    (["--set", "train.epochs=2.5"], "train.epochs: expected an integer, got 2.5"),
    (["--set", "train.lr=-1"], "train.lr: must be > 0, got -1.0"),
    (["--set", "run.device=tpu"], "run.device: must be in"),
    (["--optics", "nope"], "optics.name: unknown optics 'nope'; registered:"),
    (["--distill", "ntk"], "students.methods: unknown distillation loss 'ntk'"),
    (["--set", "nosection.key=1"], "unknown config section 'nosection'"),
    (["--set", "trainepochs=1"], "--set trainepochs: expected section.key=value"),
    (["--dataset", "imagenet"], "task.dataset: must be one of"),
    (["--set", "distill.kd.temperature=0", "--distill", "kd"], "distill.kd.temperature: must be > 0"),
])
def test_bad_config_is_one_line_exit_2(args, expected, tiny_optics):
    res = run(["config", "show", "--optics", "tiny", *args] if "--optics" not in args else ["config", "show", *args])
    assert res.exit_code == 2, res.output
    err = res.output.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert expected in err, err
    assert "Traceback" not in err


def test_unknown_component_lists_registered(tiny_optics):
    with pytest.raises(UserError, match=r"registered: .*tiny"):
        load_config(None, [], {"optics": "missing"})


def test_bad_toml_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1")
    res = run(["config", "show", "--config", str(bad)])
    assert res.exit_code == 2 and f"config file {bad}: not valid TOML" in res.output
    res = run(["config", "show", "--config", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "not found" in res.output


def test_pipeline_bad_set_writes_nothing(tmp_path, tiny_optics):
    res = run(["--optics", "tiny", "--task", "classification", "--out", str(tmp_path / "runs"),
               "--set", "train.epochs=-1"])
    assert res.exit_code == 2 and "train.epochs: must be >= 1, got -1" in res.output
    assert not (tmp_path / "runs").exists()


def test_task_suggestions_sit_between_defaults_and_the_user(tiny_optics, monkeypatch):
    from onnx_run.tasks.settings import ClassificationConfig

    assert load_config(None, [], {"optics": "tiny"}).train.lr == 0.01  # the classification task's
    assert load_config(None, ["train.lr=0.003"], {"optics": "tiny"}).train.lr == 0.003
    seg = load_config(None, [], {"optics": "tiny", "task": "segmentation"})  # the segmentation task's recipe
    assert (seg.train.lr, seg.train.optics_lr) == (0.003, 0.05)
    monkeypatch.setattr(ClassificationConfig, "core_defaults", lambda self: {"train": {"lr_typo": 1.0}})
    with pytest.raises(UserError, match=r"task 'classification': core_defaults\(\) sets train.lr_typo"):
        load_config(None, [], {"optics": "tiny"})


def test_a_task_that_keeps_its_suggestions_on_itself_is_built_to_ask(tiny_optics):
    """A third-party task whose config declares no ``task_kind`` gives its suggestions from the
    task object (the contract before they moved to the config): resolving builds it to ask."""
    from onnx_run.components import Task
    from onnx_run.plugins import register_plugin

    built = []

    @attrs.define
    class OldConfig:
        dataset: str = "digits"

    class OldTask(Task):
        default_teacher = "resnet"

        def __init__(self, config):
            super().__init__(config)
            built.append(config)

        def core_defaults(self):
            return {"train": {"lr": 0.005}}

        def optics_defaults(self):
            return {"num_kernels": 2}

    class Plugin:
        @onnx_run.hookimpl
        def register_tasks(self, register):
            register("old", OldTask, config=OldConfig)

    register_plugin(Plugin(), name="old-task")
    cfg = load_config(None, [], {"optics": "tiny", "task": "old"})
    assert built and cfg.train.lr == 0.005 and cfg.optics.config.num_kernels == 2 and cfg.teacher.name == "resnet"


def test_reading_a_config_imports_no_torch():
    """``config show`` (and ``plugins``, ``--help``) import no component's heavy module: the
    registrations name them as text, the configs and the tasks' suggestions are torch-free."""
    import subprocess
    import sys

    code = ("import sys; from onnx_run.config import load_config; "
            "[load_config(None, [], {'optics': o, 'task': t}) for o, t in "
            "[('4f', 'classification'), ('metasurface', 'classification'), ('diffractive', 'all-optical'), "
            "('4f', 'segmentation')]]; "
            "from onnx_run.plugins import plugin_listing; plugin_listing(include_builtins=True); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_optics_recipe_sees_the_chosen_optics_settings(tiny_optics, monkeypatch):
    """``core_defaults(task_kind, settings)`` gets the optics' resolved settings (every field, the
    user's over the task's suggestions over the defaults: the values the frontend is built with);
    a one-argument recipe (written before settings were passed) is asked with the kind only."""
    from onnx_run.plugins import get_component

    TinyOpticsConfig = get_component("optics", "tiny", key="optics.name").config
    seen = []

    def two(cls, kind, settings):
        seen.append((kind, dict(settings)))
        return {"train": {"lr": 0.004 if settings.get("channels") == 3 else 0.005}}

    monkeypatch.setattr(TinyOpticsConfig, "core_defaults", classmethod(two), raising=False)
    assert load_config(None, ["optics.kernel_size=3"], {"optics": "tiny"}).train.lr == 0.005
    kind, settings = seen[-1]
    assert kind == "classification" and settings["kernel_size"] == 3
    assert set(settings) == {f.name for f in attrs.fields(TinyOpticsConfig)}  # the defaults too
    rgb = load_config(None, ["task.dataset=shapes-rgb"], {"optics": "tiny"})
    assert rgb.train.lr == 0.004 and seen[-1][1]["channels"] == 3  # the task's suggestion
    monkeypatch.setattr(TinyOpticsConfig, "core_defaults", classmethod(lambda cls, kind: {"train": {"lr": 0.006}}))
    assert load_config(None, [], {"optics": "tiny"}).train.lr == 0.006


@pytest.mark.parametrize("setting, message", [
    ("train.lr=inf", "Error: train.lr: expected a finite number, got inf"),
    ("train.lr=nan", "Error: train.lr: expected a finite number, got nan"),
    ("optics.focal_length_mm=-inf", "Error: optics.focal_length_mm: expected a finite number, got -inf"),
    ('fabricate.errors=[{name = "brightness", sigma = nan}]',
     "Error: fabricate.errors[0].sigma: expected a finite number, got nan"),
    ("finetune.lr_grid=[0.001, inf]", "Error: finetune.lr_grid[1]: expected a finite number, got inf"),
])
def test_non_finite_settings_are_refused(setting, message, tmp_path):
    res = CliRunner().invoke(cli, ["--optics", "4f", "--task", "classification", "--set", setting,
                                   "--out", str(tmp_path / "runs"), "--check"])
    assert res.exit_code == 2 and res.output.strip() == message, res.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, methods", [("kd", ["kd"]), ("none,kd", ["none", "kd"]), ("none, ntkd", ["none", "ntkd"])])
def test_a_list_setting_given_as_text_is_comma_separated(text, methods):
    """``--set students.methods=kd`` means one method, not the letters k and d."""
    assert load_config(None, [f"students.methods={text}"], {"optics": "4f"}).students.methods == methods


def test_the_dry_run_imports_no_torch(tmp_path):
    """``onnx-run --dry-run`` resolves the run and checks its directory without torch (a fraction
    of a second); ``--check`` builds the optics and the models."""
    import subprocess
    import sys

    code = ("import sys; from onnx_run.cli import main\n"
            "try:\n main(['--optics', 'metasurface', '--task', 'segmentation', '--dry-run'])\n"
            "except SystemExit as e:\n assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("[]") and "dry run: settings, plugins and the run directory checked" in res.stdout
    assert not list(tmp_path.iterdir())


def test_the_compensation_losses_take_their_own_settings_over_the_students(tiny_optics):
    """``finetune.distill``: the fine-tuning after fabrication reads its settings over
    ``[distill.<name>]``; the students keep theirs."""
    from onnx_run.config import finetune_losses

    cfg = load_config(None, ["distill.ntkd.beta=0.3", "finetune.distill={ntkd={kd_weight=0.5, alpha=0.5}}"],
                      {"optics": "tiny", "task": "classification"})
    student = cfg.methods["distill"]["ntkd"].config
    tuned = finetune_losses(cfg)["ntkd"].config
    assert (student.kd_weight, student.alpha, student.beta) == (0.0, 1.0, 0.3)
    assert (tuned.kd_weight, tuned.alpha, tuned.beta) == (0.5, 0.5, 0.3)
    assert finetune_losses(cfg)["kd"] is cfg.methods["distill"]["kd"]


def test_compensation_distils_from_the_design_with_the_validation_chosen_settings(tiny_optics, tmp_path):
    """By default the fine-tuning after fabrication distils from the design with the settings
    chosen on validation (``DESIGN_DISTILL``), which skip a loss the run does not fine-tune with;
    a run directory written before ``finetune.teacher`` existed goes on distilling from its
    teacher with the students' settings."""
    from onnx_run.config import DESIGN_DISTILL, finetune_losses
    from onnx_run.rundir import run_dir_config

    flags = {"optics": "tiny", "task": "classification"}
    cfg = load_config(None, ['finetune.methods=["none", "e2e", "kd", "ntkd"]'], flags)
    assert cfg.finetune.teacher == "design" and cfg.finetune.distill == DESIGN_DISTILL
    losses = finetune_losses(cfg)
    assert (losses["kd"].config.temperature, losses["kd"].config.alpha) == (4.0, 0.9)
    ntkd = losses["ntkd"].config
    assert (ntkd.beta, ntkd.beta_schedule, ntkd.kd_weight, ntkd.kd_temperature) == (10.0, "constant", 0.5, 4.0)
    assert cfg.methods["distill"]["ntkd"].config.beta_schedule == "cosine"  # the students keep theirs
    only_ntkd = load_config(None, ['finetune.methods=["none", "ntkd"]', 'students.methods=["none"]'], flags)
    assert "kd" not in finetune_losses(only_ntkd)
    with pytest.raises(UserError, match="finetune.distill.kd: not a distillation loss"):
        finetune_losses(load_config(None, ['finetune.methods=["none", "ntkd"]', 'students.methods=["none"]',
                                           "finetune.distill={kd={temperature=2}}"], flags))
    import tomli_w

    written_before = cfg.to_dict()
    del written_before["finetune"]["teacher"], written_before["finetune"]["distill"]
    (tmp_path / "config.toml").write_text(tomli_w.dumps(written_before))
    old = run_dir_config(tmp_path)
    assert old.finetune.teacher == "teacher" and old.finetune.distill == {}
