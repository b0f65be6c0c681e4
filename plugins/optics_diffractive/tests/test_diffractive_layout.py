"""Config, presets and the readout layout rule."""

from __future__ import annotations

import math

import pytest

from onnx_run.config import load_config
from onnx_run.errors import UserError
from onnx_run_optics_diffractive import PRESETS, DiffractiveConfig, DiffractiveFrontend, layout_for, resolve


def test_presets_carry_the_published_geometry():
    lin = resolve(DiffractiveConfig(preset="lin2018"))
    assert lin.wavelength_m == pytest.approx(0.75e-3)
    assert lin.neuron_pitch_m == pytest.approx(400e-6)
    assert lin.distances_m == pytest.approx((0.03,) * 6)
    assert lin.num_layers == 5 and lin.num_neurons == 80  # 200 in the paper, scaled for CPUs
    vis = resolve(DiffractiveConfig(preset="visible-slm"))
    assert vis.wavelength_m == pytest.approx(632.8e-9) and vis.neuron_pitch_m == pytest.approx(8e-6)
    assert vis.phase_bits == 8
    # the spacing rule of the docs: an edge neuron's diffraction cone reaches the far edge
    theta = math.asin(vis.wavelength_m / (2 * vis.neuron_pitch_m))
    assert vis.distances_m[1] == pytest.approx(vis.window_m / math.tan(theta), rel=0.02)


def test_user_keys_win_over_the_preset():
    g = resolve(DiffractiveConfig(preset="lin2018", num_neurons=40, spacing_mm=10.0, input_distance_mm=5.0))
    assert g.num_neurons == 40
    assert g.distances_m == pytest.approx((0.005, 0.01, 0.01, 0.01, 0.01, 0.01))
    g = resolve(DiffractiveConfig(num_layers=2, distances_mm=[1.0, 2.0, 3.0]))
    assert g.distances_m == pytest.approx((1e-3, 2e-3, 3e-3))


def test_layout_rows_like_lin2018_detectors():
    lay = layout_for(DiffractiveConfig(num_kernels=10, kernel_size=4))
    assert (lay.num_kernels, lay.rows, lay.cols) == (10, 3, 4)
    assert lay.details["grid"] == "3-4-3 per row"
    centres = lay.details["region_centres_mm"]
    assert len(centres) == 10
    assert sum(c[0] for c in centres) == pytest.approx(0, abs=1e-9)  # symmetric about the axis
    lay9 = layout_for(DiffractiveConfig())
    assert (lay9.rows, lay9.cols, lay9.kernel_size_px) == (3, 3, 8)
    assert lay9.details["region_mm"] == pytest.approx(3.2)


def test_regions_that_do_not_fit_name_the_smallest_layer():
    with pytest.raises(UserError) as err:
        layout_for(DiffractiveConfig(num_neurons=20, num_kernels=9, kernel_size=8))
    msg = str(err.value)
    assert "\n" not in msg and "smallest layer that fits them is 40 neurons" in msg
    with pytest.raises(UserError, match="fits no readout region.*smallest layer that fits one is 30 neurons"):
        layout_for(DiffractiveConfig(num_neurons=20, num_kernels=1, kernel_size=30))
    # the suggested size works
    assert layout_for(DiffractiveConfig(num_neurons=40, num_kernels=9, kernel_size=8)).num_kernels == 9


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="object_size_neurons"):
        resolve(DiffractiveConfig(num_neurons=20, object_size_neurons=30, num_kernels=1, kernel_size=2))
    with pytest.raises(UserError, match="distances_mm.*needs 6 gaps"):
        resolve(DiffractiveConfig(distances_mm=[1.0, 2.0]))
    for key, value in [("preset", "lin2019"), ("phase_range_pi", 3.0), ("channels", 2), ("num_kernels", 0),
                       ("modulation", "amplitude"), ("wavelength_nm", -1.0)]:
        with pytest.raises(UserError, match=f"optics.{key}"):
            load_config(sets=[f"optics.name=\"diffractive\"", f"optics.{key}={value!r}".replace("'", '"')])


def test_config_through_the_run_config_and_task_suggestions():
    cfg = load_config(sets=["optics.name=\"diffractive\"", "optics.preset=\"visible-slm\"", "optics.num_neurons=48"])
    front = cfg.optics.build()
    assert isinstance(front, DiffractiveFrontend)
    assert front.geometry.num_neurons == 48 and front.layout().num_kernels == 9
    # the all-optical task asks for one region per class
    cfg = load_config(sets=["optics.name=\"diffractive\"", "task.name=\"all-optical\""])
    assert cfg.optics.config.num_kernels == 10
    # a setting that cannot fit is refused while the config is resolved (before any run directory)
    with pytest.raises(UserError, match="optics.num_neurons: 16 .* smallest layer that fits them is 40 neurons"):
        load_config(sets=["optics.name=\"diffractive\"", "optics.num_neurons=16"])


def test_every_preset_builds_and_small_windows_warn():
    """Shrinking a preset's layer to 32 neurons keeps its gaps: the physics library's validity
    check must say the band limit now cuts most of the band."""
    from onnx_run.physics import PhysicsWarning, clear_cache

    for name in PRESETS:
        clear_cache()
        with pytest.warns(PhysicsWarning, match="band limit removes"):
            front = DiffractiveFrontend(DiffractiveConfig(preset=name, num_neurons=32, num_kernels=4, kernel_size=4))
            assert front.feature_shape() == (4, 4, 4)
