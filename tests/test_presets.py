"""Run presets (``--preset NAME``, ``run.preset``): values under the user's settings, from the
core and from each chosen component's ``run_presets``; one-line errors for unknown names."""

from __future__ import annotations

import tomllib

import attrs
import pytest
from attrs import validators as v
from click.testing import CliRunner

import onnx_run
from onnx_run.cli import cli
from onnx_run.components import Layout, OpticalFrontend
from onnx_run.config import PRESETS, PRESETS_BY_TASK_KIND, load_config
from onnx_run.pipeline import default_run_dir
from onnx_run.plugins import register_plugin, unregister_plugin
from onnx_run.tasks.backends import FCBackend


def show(*args: str):
    res = CliRunner().invoke(cli, ["config", "show", *args])
    return res, (tomllib.loads(res.stdout) if res.exit_code == 0 else None)


def test_config_show_preset_paper_gives_the_paper_sizes(tiny_optics):
    res, doc = show("--optics", "tiny", "--task", "classification", "--preset", "paper")
    assert res.exit_code == 0, res.output
    assert doc["run"]["preset"] == "paper" and doc["run"]["seeds"] == 5 and doc["run"]["device"] == "auto"
    assert doc["train"]["batch_size"] == 128 and doc["train"]["epochs"] == 100
    assert doc["teacher_train"]["batch_size"] == 128 and doc["finetune"]["batch_size"] == 128
    assert doc["students"]["methods"] == ["none", "kd", "ntkd"]
    assert doc["task"]["hidden"] == [32] and doc["task"]["dataset"] == "digits"  # the dataset stays the user's
    # a component without run_presets keeps its defaults, and the user is told so (stderr only)
    assert doc["optics"]["num_kernels"] == 4
    assert "Note: preset 'paper': optics 'tiny' defines no run presets" in res.stderr
    assert "Note:" not in res.stdout


def test_no_preset_changes_nothing(tiny_optics):
    _, plain = show("--optics", "tiny")
    _, empty = show("--optics", "tiny", "--preset", "")
    assert plain == empty and plain["run"]["preset"] == "" and plain["train"]["batch_size"] == 64


def test_colour_dataset_gets_the_cifar_backend_and_teacher(tiny_optics):
    _, doc = show("--optics", "tiny", "--dataset", "shapes-rgb", "--preset", "paper")
    assert doc["task"]["hidden"] == [384, 128] and doc["task"]["dataset"] == "shapes-rgb"
    assert doc["teacher"] == {"name": "alexnet", "width": 64, "fc": 1024, "dropout": 0.5, "init": "kaiming"}


def test_paper_backends_have_the_papers_sizes():
    """MNIST: 8 kernels, 2 FC layers, 0.05 M parameters; CIFAR: 16 kernels RGB, 3 FC, 1.62 M."""
    def params(shape, hidden):
        return sum(p.numel() for p in FCBackend(shape, 10, hidden=hidden, pool=2).parameters())

    assert abs(params((8, 28, 28), [32]) - 0.05e6) < 0.002e6
    assert abs(params((16, 32, 32), [384, 128]) - 1.62e6) < 0.01e6


def test_user_settings_beat_the_preset(tiny_optics, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\nepochs = 7\n[task]\nhidden = [16]\n")
    res, doc = show("--optics", "tiny", "--preset", "paper", "--config", str(path),
                    "--set", "train.batch_size=32", "--set", "run.device=cpu", "--seeds", "2")
    assert res.exit_code == 0, res.output
    assert doc["train"]["epochs"] == 7 and doc["task"]["hidden"] == [16]  # config file
    assert doc["train"]["batch_size"] == 32 and doc["run"]["device"] == "cpu"  # --set
    assert doc["run"]["seeds"] == 2  # flag
    assert doc["teacher_train"]["batch_size"] == 128  # what the user did not set: the preset's


def test_preset_from_the_config_file_and_round_trip(tiny_optics, tmp_path):
    (tmp_path / "a.toml").write_text('[run]\npreset = "paper"\n[optics]\nname = "tiny"\n')
    res, doc = show("--config", str(tmp_path / "a.toml"))
    assert doc["train"]["batch_size"] == 128
    (tmp_path / "b.toml").write_text(res.stdout)
    again, _ = show("--config", str(tmp_path / "b.toml"))
    assert again.stdout == res.stdout


def test_segmentation_kind_gets_batch_8():
    assert PRESETS["paper"]["train"]["batch_size"] == 128
    assert PRESETS_BY_TASK_KIND["paper"]["segmentation"]["train"]["batch_size"] == 8


@pytest.mark.parametrize("where", [["--preset", "gpu"], ["--set", "run.preset=gpu"]])
def test_unknown_preset_is_one_line_exit_2_and_writes_nothing(where, tiny_optics, tmp_path):
    res = CliRunner().invoke(cli, ["--optics", "tiny", "--out", str(tmp_path / "runs"), *where])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert lines == ["Error: --preset (run.preset): unknown preset 'gpu'; allowed: paper"], res.output
    assert not (tmp_path / "runs").exists()
    res = CliRunner().invoke(cli, ["config", "show", "--optics", "tiny", *where])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, ["estimate", "--optics", "tiny", "--out", str(tmp_path / "runs"), *where])
    assert res.exit_code == 2 and "unknown preset 'gpu'" in res.output
    assert not (tmp_path / "runs").exists()


def test_preset_must_be_a_string(tiny_optics):
    res, _ = show("--optics", "tiny", "--set", "run.preset=3")
    assert res.exit_code == 2 and "run.preset: expected a string" in res.output


def test_preset_run_gets_its_own_run_directory(tiny_optics):
    assert default_run_dir(load_config(flags={"optics": "tiny", "preset": "paper"})).name == \
        "tiny-classification-digits-paper"
    assert default_run_dir(load_config(flags={"optics": "tiny"})).name == "tiny-classification-digits"


# -- a component's run_presets -------------------------------------------------------------------


@attrs.define(kw_only=True)
class PresetOpticsConfig:
    num_kernels: int = attrs.field(default=4, validator=v.ge(1))
    channels: int = attrs.field(default=1, validator=v.in_([1, 3]))
    input_size_px: int = attrs.field(default=16, validator=v.ge(4))
    size_mm: float = 1.0

    @classmethod
    def run_presets(cls, settings):
        return {"paper": {"num_kernels": 12, "channels": 1, "size_mm": 2.0 * settings.get("input_size_px", 16)},
                "lab": {"size_mm": 5.0}}


@attrs.define(kw_only=True)
class BadPresetOpticsConfig:
    num_kernels: int = 4

    @classmethod
    def run_presets(cls, settings):
        return {"paper": {"num_kernels": 8, "aperture_mm": 3.0}}


class _Optics(OpticalFrontend):
    def layout(self):
        return Layout(4, 1, 4, 3)


class PresetPlugin:
    __name__ = "preset-optics"

    @onnx_run.hookimpl
    def register_optics(self, register):
        register("presetted", _Optics, config=PresetOpticsConfig)
        register("bad-preset", _Optics, config=BadPresetOpticsConfig)


@pytest.fixture
def preset_optics():
    register_plugin(PresetPlugin(), name="preset-optics")
    yield
    unregister_plugin("preset-optics")


def test_component_values_sit_under_the_task_suggestions_and_the_user(preset_optics):
    # shapes-rgb: the task suggests channels = 3 and input 32; they beat the optics' preset
    res, doc = show("--optics", "presetted", "--dataset", "shapes-rgb", "--preset", "paper")
    assert res.exit_code == 0, res.output
    assert doc["optics"] == {"name": "presetted", "num_kernels": 12, "channels": 3, "input_size_px": 32,
                             "size_mm": 64.0}  # run_presets saw the suggested input size
    _, doc = show("--optics", "presetted", "--preset", "paper", "--set", "optics.num_kernels=2",
                  "--set", "optics.input_size_px=10")
    assert doc["optics"]["num_kernels"] == 2 and doc["optics"]["size_mm"] == 20.0
    assert "Note" not in res.stderr  # every chosen bundled component has values for "paper"


def test_a_components_own_preset_name_is_allowed(preset_optics):
    res, doc = show("--optics", "presetted", "--preset", "lab")
    assert res.exit_code == 0, res.output
    assert doc["optics"]["size_mm"] == 5.0 and doc["train"]["batch_size"] == 64  # the core has no "lab"
    assert "task 'classification' has no values for it" in res.stderr
    res, _ = show("--optics", "presetted", "--preset", "gpu")
    assert res.exit_code == 2 and res.output.strip().endswith("allowed: lab, paper")


def test_a_preset_key_the_component_lacks_is_an_error_not_dropped(preset_optics):
    res, _ = show("--optics", "bad-preset", "--preset", "paper")
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1
    assert ("preset 'paper' of optics 'bad-preset' (plugin 'preset-optics') sets aperture_mm, which [optics] "
            "does not have; its keys: num_kernels") in res.output
