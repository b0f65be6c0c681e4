"""The metasurface frontend: config checks, layout rule, forward model, realisation, CLI."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from onnx_run.config import load_config, structure_section
from onnx_run.errors import UserError

from onnx_run_optics_metasurface.config import MetasurfaceConfig
from onnx_run_optics_metasurface.frontend import FixedPSFFrontend, MetasurfaceFrontend, normalised_error
from onnx_run_optics_metasurface.layout import layout_for, tile_centres_mm


def small(**kw) -> MetasurfaceConfig:
    """A tiny but physical metasurface: 102 x 102 pillars per tile, 3 x 3 kernels at 8 um."""
    base = dict(kernel_mm=0.03, spacing_mm=0.01, kernel_size=3, sensor_pitch_um=8.0, distance_mm=0.5,
                num_kernels=2, input_size_px=12, realise_iterations=40, gs_iterations=10)
    base.update(kw)
    return MetasurfaceConfig(**base)


# -- config and layout ----------------------------------------------------------------------------
def test_config_errors_name_the_key():
    with pytest.raises(UserError, match=r"^optics\.channels: must be in \[1, 3\]"):
        structure_section({"channels": 2}, MetasurfaceConfig, "optics")
    with pytest.raises(UserError, match=r"optics\.sensor_pitch_um: .*allowed: sensor_pitch_um <= 14\.29"):
        structure_section({"sensor_pitch_um": 20.0}, MetasurfaceConfig, "optics")
    with pytest.raises(UserError, match=r"optics\.max_width_nm: must be < period_nm"):
        structure_section({"max_width_nm": 300.0}, MetasurfaceConfig, "optics")
    with pytest.raises(UserError, match=r"optics: unknown key 'pitch_um'"):
        structure_section({"pitch_um": 3.0}, MetasurfaceConfig, "optics")


def test_layout_follows_the_paper_rule():
    # floor((h + d) / (k + d)) per axis: (1.0 + 0.25) / 0.35 -> 3 x 3 = 9 tiles -> 4 signed kernels
    lay = layout_for(MetasurfaceConfig(height_mm=1.0, width_mm=1.0, num_kernels=0))
    assert (lay.details["fits_tiles"], lay.num_kernels, lay.details["max_kernels"]) == (9, 4, 4)
    assert lay.details["used_grid"] == "3 x 3" and (lay.rows, lay.cols) == (3, 3)
    # unsigned kernels take one tile each
    assert layout_for(MetasurfaceConfig(height_mm=1.0, width_mm=1.0, num_kernels=0, signed=False)).num_kernels == 9
    # rectangular: 1 row x 6 cols fits
    lay = layout_for(MetasurfaceConfig(height_mm=0.1, width_mm=2.0, num_kernels=3))
    assert (lay.details["fits_tiles"], lay.rows, lay.cols) == (6, 1, 6)
    # default: the smallest square grid for 16 tiles: 4 x 4 of 0.1 mm with 0.25 mm gaps
    lay = MetasurfaceFrontend.layout_for(MetasurfaceConfig())
    assert (lay.num_kernels, lay.rows, lay.cols, lay.details["height_mm"]) == (8, 4, 4, pytest.approx(1.15))
    assert lay.details["feature_maps_overlap"] is False


def test_too_many_kernels_names_the_smallest_size_that_fits():
    with pytest.raises(UserError, match=r"optics\.num_kernels: 5 signed kernels need 10 PSF tiles but a 1 x 1 mm "
                                        r"metasurface fits 9 .*smallest square metasurface that fits 10 is 1\.15 x 1\.15 mm"):
        layout_for(MetasurfaceConfig(height_mm=1.0, width_mm=1.0, num_kernels=5))


def test_tile_centres_are_symmetric_and_spaced():
    cfg = MetasurfaceConfig()
    c = tile_centres_mm(cfg)
    assert c.shape == (16, 2)
    assert abs(c[:, 0].mean()) < 1e-12 and abs(c[:, 1].mean()) < 1e-12
    d = torch.cdist(torch.as_tensor(c), torch.as_tensor(c)) + torch.eye(16) * 9
    assert float(d.min()) == pytest.approx(0.35)


def test_task_suggested_keys_are_accepted():
    cfg = load_config(sets=["optics.name=metasurface", "optics.input_size_px=64", "optics.kernel_size=3",
                            "optics.num_kernels=56", "optics.channels=3"])
    front = cfg.optics.build()
    assert front.feature_shape() == (56, 64, 64) and front.in_channels == 3
    assert front.layout().details["psf_tiles"] == 112


# -- forward model ---------------------------------------------------------------------------------
def test_kernel_mode_psfs_are_physical_and_features_are_signed_convolutions():
    torch.manual_seed(0)
    front = MetasurfaceFrontend(MetasurfaceConfig(channels=3, input_size_px=16, num_kernels=3))
    p = front.psfs().detach()
    assert p.shape == (6, 3, 7, 7) and float(p.min()) >= 0
    assert float(p.flatten(2).sum(-1).max()) <= 1.0  # energy conservation per wavelength
    x = torch.rand(4, 3, 16, 16)
    y = front(x)
    k = front.kernels()
    ref = F.conv2d(x, k.flip(-2, -1), padding=3)  # true convolution with the signed kernels
    assert y.shape == (4, 3, 16, 16) and torch.allclose(y, ref, atol=1e-5)
    assert 0.01 < float(y.detach().abs().mean()) < 10  # O(1) features with the fixed gain


def test_physical_mode_energy_and_gradients():
    torch.manual_seed(0)
    front = MetasurfaceFrontend(small(mode="physical"))
    p = front.psfs().detach()
    assert p.shape == (4, 1, 3, 3) and 0 < float(p.flatten(1).sum(1).max()) <= 1.0
    y = front(torch.rand(2, 1, 12, 12))
    y.square().mean().backward()
    assert front.width_logits.grad is not None and float(front.width_logits.grad.abs().sum()) > 0
    assert front.tile_gain.grad is not None


def test_realise_reduces_the_fit_error_and_reloads():
    torch.manual_seed(1)
    kern = MetasurfaceFrontend(small())
    realised, report = kern.realise(progress=False)
    assert report["psf_error_mean"] < 0.6 * report["psf_error_initial_mean"]
    assert report["fit_error_mean"] < 0.25 and len(report["fit_error_per_kernel"]) == 2
    assert isinstance(realised, MetasurfaceFrontend) and realised.mode == "physical"
    # the realised frontend computes (nearly) the trained kernels
    rel = (realised.kernels() - kern.kernels()).norm() / kern.kernels().norm()
    assert float(rel) == pytest.approx(report["fit_error_mean"], abs=0.1) and float(rel) < 0.25
    assert torch.all(realised.design_widths_nm() >= 60.0) and torch.all(realised.design_widths_nm() <= 233.0)
    # pipeline round trip: state dict -> load_realised -> same kernels
    again = kern.load_realised(realised.state_dict())
    assert torch.allclose(again.kernels(), realised.kernels(), atol=1e-6)
    # more iterations fit better: the descent is doing the work
    phys = MetasurfaceFrontend(attrs.evolve(kern.config, mode="physical"), init_widths=False)
    few = phys.design(kern.psfs().detach(), progress=False, iterations=2)
    assert report["psf_error_mean"] < few["psf_error_mean"]


def test_perturb_kernels_is_reproducible():
    front = MetasurfaceFrontend(small())
    a = front.perturb_kernels(0.1, torch.Generator().manual_seed(5))
    b = front.perturb_kernels(0.1, torch.Generator().manual_seed(5))
    c = front.perturb_kernels(0.1, torch.Generator().manual_seed(6))
    assert isinstance(a, FixedPSFFrontend)
    assert torch.equal(a.kernels(), b.kernels()) and not torch.equal(a.kernels(), c.kernels())
    rel = (a.kernels() - front.kernels()).norm() / front.kernels().norm()
    assert 0.01 < float(rel) < 0.5
    x = torch.rand(2, 1, 12, 12)
    assert a(x).shape == front(x).shape


def test_normalised_error_is_scale_free():
    t = torch.rand(3, 1, 3, 3)
    assert torch.allclose(normalised_error(5 * t, t), torch.zeros(3), atol=1e-6)
    assert float(normalised_error(torch.rand(3, 1, 3, 3), t).min()) > 0


# -- command line ---------------------------------------------------------------------------------
def test_build_library_without_the_extra_is_a_one_line_error(monkeypatch, tmp_path):
    from onnx_run.cli import cli

    monkeypatch.setitem(sys.modules, "meent", None)  # import meent -> ImportError
    res = CliRunner().invoke(cli, ["metasurface", "build-library", "--out", str(tmp_path / "x.npz")])
    assert res.exit_code == 2
    assert "pip install 'onnx-run-optics-metasurface[rcwa]'" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.npz").exists()


def test_show_library_through_the_cli(tmp_path):
    from onnx_run.cli import cli

    res = CliRunner().invoke(cli, ["metasurface", "show-library", "--png", str(tmp_path / "lib.png")])
    assert res.exit_code == 0, res.output
    assert "Si3N4 pillars 750" in res.output and (tmp_path / "lib.png").exists()


def test_a_layout_that_does_not_fit_fails_in_one_line_through_the_installed_entry_point():
    bad = subprocess.run([sys.executable, "-m", "onnx_run", "--optics", "metasurface", "--set", "optics.height_mm=0.3",
                          "--set", "optics.width_mm=0.3", "--check"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "smallest square metasurface that fits 16 is 1.15" in bad.stderr
