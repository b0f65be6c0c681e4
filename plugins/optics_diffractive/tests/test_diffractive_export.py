"""Export: files readable, heights consistent with phases, summary of the physical stack."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from onnx_run_optics_diffractive.export import export_stack


def test_export_files_are_readable(make_stack, tmp_path):
    front = make_stack(num_layers=2, realise_phase_bits=2, base_thickness_um=500.0)
    real, report = front.realise(progress=False)
    files = export_stack(real, tmp_path)
    assert all(p.exists() for p in files)
    names = {p.name for p in files}
    for l in (1, 2):
        assert {f"layer{l}_phase_rad.npy", f"layer{l}_height_um.npy", f"layer{l}_phase.png",
                f"layer{l}_height.png"} <= names
    g = real.geometry
    phase = np.load(tmp_path / "layer1_phase_rad.npy")
    height = np.load(tmp_path / "layer1_height_um.npy")
    assert phase.shape == height.shape == (24, 24)
    # phi = 2 pi (n - 1) h / lambda
    np.testing.assert_allclose(2 * math.pi * (g.material_index - 1) * height * 1e-6 / g.wavelength_m, phase,
                               rtol=1e-5, atol=1e-6)
    assert len(np.unique(phase)) <= 4
    png = Image.open(tmp_path / "layer2_height.png")
    assert png.size == (24, 24)
    Image.open(tmp_path / "stack_phases.png").verify()
    summary = json.loads((tmp_path / "stack.json").read_text())
    assert summary["wavelength_nm"] == pytest.approx(750_000)
    assert summary["distances_mm"] == pytest.approx([6.0, 6.0, 6.0])
    assert summary["material_index"] == pytest.approx(1.7227)
    assert summary["thickness_max_um"] == pytest.approx(500 + float(height.max()), rel=1e-4)
    assert summary["height_2pi_um"] == pytest.approx(750 / 0.7227, rel=1e-4)
    assert summary["readout"]["regions"] == 4
    assert "Diffractive stack" in (tmp_path / "stack.md").read_text()
    assert report["height_max_um"] == pytest.approx(float(max(height.max(), np.load(
        tmp_path / "layer2_height_um.npy").max())), rel=1e-4)


def test_complex_export_has_amplitudes(make_stack, tmp_path):
    files = export_stack(make_stack(modulation="complex", amplitude_min=0.1), tmp_path)
    amp = np.load(tmp_path / "layer1_amplitude.npy")
    assert amp.min() >= 0.1 - 1e-6 and amp.max() <= 1 + 1e-6
    assert any(p.name == "layer2_amplitude.png" for p in files)


def test_registered_frontend_exports_through_the_contract(make_stack, tmp_path):
    """The plugin wires export.py to the frontend it registers: ``frontend.export`` (what the
    pipeline calls) writes what ``export_stack`` writes."""
    from onnx_run.plugins import registry

    registry()  # loads the plugins, which wire the exporter
    front = make_stack(num_layers=2)
    names = {p.name for p in front.export(tmp_path / "a")}
    assert names and names == {p.name for p in export_stack(front, tmp_path / "b")}
