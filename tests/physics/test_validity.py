"""Validity reports and the warnings that name the numbers."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from onnx_run.physics import (Grid, PhysicsWarning, clear_cache, propagate, propagation_report,
                              rayleigh_sommerfeld)


def test_report_numbers():
    grid = Grid(256, 8e-6, 532e-9)
    (r,) = propagation_report(grid, 0.05)
    half = 128 * 8e-6
    assert r.fresnel_number == pytest.approx(half**2 / (532e-9 * 0.05))
    assert r.critical_distance_m == pytest.approx(256 * 64e-12 / 532e-9)
    assert r.max_tf_distance_m == pytest.approx(512 * 64e-12 / 532e-9 * math.sqrt(1 - (532e-9 / 16e-6) ** 2))
    assert r.pitch_over_wavelength == pytest.approx(8e-6 / 532e-9)
    assert r.band_removed_fraction == 0.0 and r.ok


def test_no_warning_inside_the_valid_range():
    clear_cache()
    grid = Grid(64, 4e-6, 0.6e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        propagate(torch.ones(64, 64, dtype=torch.complex64), grid, 1e-3)


def test_aliased_transfer_function_warns_with_the_numbers():
    clear_cache()
    grid = Grid(64, 4e-6, 0.6e-6)  # z_max (2x pad) = 128 * 16e-12 / 0.6e-6 * sqrt(1 - (0.6 / 8)^2) = 3.404 mm
    with pytest.warns(PhysicsWarning, match=r"aliased: \|z\| = 0.01 m > z_max = 0.003404 m"):
        propagate(torch.ones(64, 64, dtype=torch.complex64), grid, 0.01, band_limit=False)


def test_fresnel_outside_the_paraxial_regime_warns():
    clear_cache()
    grid = Grid(64, 0.6e-6, 0.5e-6)  # steep angles: asin(lambda / 2 dx) = 25 deg
    with pytest.warns(PhysicsWarning, match="paraxial phase error"):
        propagate(torch.ones(64, 64, dtype=torch.complex64), grid, 80e-6, method="fresnel")


def test_rayleigh_sommerfeld_below_the_critical_distance_warns():
    grid = Grid(8, 1e-6, 0.5e-6)  # z_c = 16 um
    with pytest.warns(PhysicsWarning, match="below the critical distance"):
        rayleigh_sommerfeld(torch.ones(8, 8, dtype=torch.complex128), grid, 5e-6)
