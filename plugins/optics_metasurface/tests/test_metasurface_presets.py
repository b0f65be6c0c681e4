"""The metasurface plugin's run preset ``paper`` (``onnx-run --preset paper``)."""

from __future__ import annotations

import tomllib

import pytest

from click.testing import CliRunner

from onnx_run.cli import cli

from onnx_run_optics_metasurface.config import MetasurfaceConfig
from onnx_run_optics_metasurface.layout import layout_for


def show(*args):
    res = CliRunner().invoke(cli, ["config", "show", "--optics", "metasurface", "--preset", "paper", *args])
    assert res.exit_code == 0, res.output
    return tomllib.loads(res.stdout)["optics"]


def test_grey_and_rgb_kernel_counts_and_published_geometry():
    grey = show("--task", "classification")
    assert (grey["num_kernels"], grey["kernel_size"], grey["channels"]) == (8, 7, 1)
    assert grey["library"] == "fits" and grey["distance_mm"] == 2.4 and grey["period_nm"] == 293.0
    assert grey["spacing_mm"] == 0.25
    rgb = show("--task", "classification", "--dataset", "shapes-rgb")
    assert (rgb["num_kernels"], rgb["channels"], rgb["input_size_px"]) == (16, 3, 32)
    assert rgb["spacing_mm"] == 0.29  # a 32 px x 12 um feature map fits between tiles
    assert not layout_for(MetasurfaceConfig(**{k: x for k, x in rgb.items() if k != "name"})).details[
        "feature_maps_overlap"]
    assert show("--task", "classification", "--set", "optics.library=rcwa")["library"] == "rcwa"


@pytest.mark.parametrize("sets, lr", [
    ([], 0.01),                                          # 8 kernels: the Fashion-MNIST recipe
    (["optics.num_kernels=4"], 0.01),
    (["optics.num_kernels=16"], 0.003),                  # the recipe searched at 16 kernels
    (["optics.num_kernels=12"], 0.003),                  # the nearest measured count
    (["--preset=paper", "task.dataset=shapes-rgb"], 0.003),  # the preset's 16 RGB kernels are seen
    (["optics.num_kernels=16", "train.lr=0.02"], 0.02),  # the user's lr wins
])
def test_the_recipe_follows_the_kernel_count(sets, lr):
    from onnx_run.config import load_config

    preset = [s.split("=", 1)[1] for s in sets if s.startswith("--preset=")]
    sets = [s for s in sets if not s.startswith("--preset=")]
    flags = {"preset": preset[0]} if preset else {}
    cfg = load_config(None, ["optics.name=metasurface", "task.name=classification", *sets], flags)
    assert (cfg.train.lr, cfg.train.optics_lr) == (lr, 0.05)
