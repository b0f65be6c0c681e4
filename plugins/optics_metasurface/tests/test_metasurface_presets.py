"""The metasurface plugin's run preset ``paper`` (``onnx-run --preset paper``)."""

from __future__ import annotations

import tomllib

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
