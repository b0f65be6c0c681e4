"""The segmentation plugin's run preset ``paper`` (``onnx-run --preset paper``) and its suggestions."""

from __future__ import annotations

import tomllib

from click.testing import CliRunner

from onnx_run.cli import cli


def show(*args):
    res = CliRunner().invoke(cli, ["config", "show", "--task", "segmentation", "--preset", "paper", *args])
    assert res.exit_code == 0, res.output
    return tomllib.loads(res.stdout)


def test_paper_selects_the_task_preset_batch_8_and_a_full_unet():
    doc = show("--optics", "4f")
    assert doc["task"]["preset"] == "paper" and doc["task"]["dataset"] == "shapes"
    assert doc["train"]["batch_size"] == 8 and doc["teacher_train"]["batch_size"] == 8
    assert doc["finetune"]["batch_size"] == 8
    assert doc["teacher"]["widths"] == [64, 128, 256, 512]
    # the task's 56 kernels 3x3 beat the optics' own paper values (8 kernels 7x7)
    assert (doc["optics"]["num_kernels"], doc["optics"]["kernel_size"]) == (56, 3)


def test_user_settings_still_win():
    doc = show("--optics", "4f", "--set", "task.preset=small", "--set", "train.batch_size=16")
    assert doc["task"]["preset"] == "small" and doc["optics"]["num_kernels"] == 8
    assert doc["train"]["batch_size"] == 16


def test_task_suggests_ntkd_on_8_samples_and_the_user_still_wins():
    def ntkd(*args):
        res = CliRunner().invoke(cli, ["config", "show", "--optics", "4f", *args])
        assert res.exit_code == 0, res.output
        return tomllib.loads(res.stdout)["distill"]["ntkd"]

    assert ntkd("--task", "segmentation")["max_samples"] == 8
    assert ntkd("--task", "segmentation", "--set", "distill.ntkd.max_samples=0")["max_samples"] == 0
    assert ntkd("--task", "classification")["max_samples"] == 0
