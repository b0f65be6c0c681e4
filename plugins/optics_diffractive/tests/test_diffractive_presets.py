"""The diffractive plugin's run preset ``paper`` (``onnx-run --preset paper``): Lin 2018's stack."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

from onnx_run.cli import cli


def show(*args):
    res = CliRunner().invoke(cli, ["config", "show", "--optics", "diffractive", "--preset", "paper", *args])
    assert res.exit_code == 0, res.output
    return tomllib.loads(res.stdout)


def test_paper_is_the_full_lin2018_stack():
    optics = show("--task", "classification")["optics"]
    assert (optics["preset"], optics["num_neurons"], optics["num_layers"]) == ("lin2018", 200, 5)


def test_another_physical_preset_keeps_its_own_geometry():
    optics = show("--set", "optics.preset=visible-slm")["optics"]
    assert optics["preset"] == "visible-slm" and "num_neurons" not in optics  # None: from visible-slm


def test_all_optical_keeps_one_region_per_class():
    doc = show("--task", "all-optical")
    assert doc["optics"]["num_kernels"] == 10 and doc["optics"]["num_neurons"] == 200


@pytest.mark.parametrize("sets, lrs", [
    ([], (0.03, 0.05)),                                   # classification: the stack's recipe
    (["train.optics_lr=0.02"], (0.03, 0.02)),             # the user's value wins
    (["task.name=all-optical"], (0.03, 0.05)),            # all-optical classifies too
    (["task.name=segmentation"], (0.003, 0.05)),          # segmentation keeps the task's recipe
])
def test_the_stack_brings_its_classification_recipe(sets, lrs):
    from onnx_run.config import load_config

    cfg = load_config(None, ["optics.name=diffractive", "task.name=classification", *sets])
    assert (cfg.train.lr, cfg.train.optics_lr) == lrs
