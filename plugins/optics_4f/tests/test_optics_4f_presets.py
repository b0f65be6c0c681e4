"""The 4f plugin's run preset ``paper`` (``onnx-run --preset paper``): values and a clean chain."""

from __future__ import annotations

import tomllib

import pytest
from click.testing import CliRunner

from onnx_run.cli import cli

from onnx_run_optics_4f import Optics4fConfig
from onnx_run_optics_4f.geometry import geometry


def test_paper_preset_through_config_show():
    res = CliRunner().invoke(cli, ["config", "show", "--optics", "4f", "--task", "classification",
                                   "--preset", "paper", "--set", "optics.slm_pixels=600"])
    assert res.exit_code == 0, res.output
    optics = tomllib.loads(res.stdout)["optics"]
    assert (optics["num_kernels"], optics["kernel_size"], optics["focal_length_mm"]) == (8, 7, 40.0)
    assert optics["slm_pixels"] == 600  # the user's --set wins


@pytest.mark.parametrize("kernels, size, inputs, channels", [
    (8, 7, 28, 1),    # the paper's MNIST system
    (16, 7, 32, 3),   # CIFAR-10, RGB
    (56, 3, 32, 3),   # Carvana: 56 signed 3 x 3 kernels = 112 tiles
])
def test_paper_geometry_holds_the_papers_systems_without_chain_issues(kernels, size, inputs, channels):
    settings = {"channels": channels, "input_size_px": inputs}
    values = Optics4fConfig.run_presets(settings)["paper"]
    if channels == 3 and kernels == 16:
        assert values["num_kernels"] == 16
    values.update(num_kernels=kernels, kernel_size=size)  # segmentation: the task's suggestion wins
    g = geometry(Optics4fConfig(**settings, **values))
    assert g.tiles == 2 * kernels and g.chain_issues() == []


@pytest.mark.parametrize("sets, lr", [
    ([], 0.03),                                       # grey: the Fashion-MNIST recipe
    (["task.dataset=shapes-rgb"], 0.01),              # RGB: the shapes-rgb recipe
    (["task.dataset=shapes-rgb", "optics.channels=1"], 0.03),  # the user's channels decide
    (["task.dataset=shapes-rgb", "train.lr=0.02"], 0.02),      # the user's lr wins
])
def test_the_recipe_follows_the_channels(sets, lr):
    from onnx_run.config import load_config

    cfg = load_config(None, ["optics.name=4f", "task.name=classification", *sets])
    assert (cfg.train.lr, cfg.train.optics_lr) == (lr, 0.05)
