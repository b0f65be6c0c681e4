"""Fabrication error models of the metasurface: each changes the PSFs as its physics says, from its seed."""

from __future__ import annotations

import copy

import attrs
import numpy as np
import pytest
import torch

from onnx_run.errors import UserError
from onnx_run.fabrication.device import build_error_models, fabricate

from onnx_run_optics_metasurface.config import MetasurfaceConfig
from onnx_run_optics_metasurface.errors import (DistanceError, DistanceErrorConfig, LateralShift, LateralShiftConfig,
                                                MinFeatureClip, MinFeatureConfig, PillarWidthError,
                                                PillarWidthErrorConfig, WavelengthShift, WavelengthShiftConfig)
from onnx_run_optics_metasurface.frontend import FixedPSFFrontend, MetasurfaceFrontend
from onnx_run_optics_metasurface.optics import lens_phase


@pytest.fixture(scope="module")
def lens_device() -> MetasurfaceFrontend:
    """A physical metasurface whose tiles are lenses focused on their tile centres (sharp, known PSFs)."""
    cfg = MetasurfaceConfig(kernel_mm=0.03, spacing_mm=0.01, kernel_size=5, sensor_pitch_um=4.0, distance_mm=0.3,
                            num_kernels=1, input_size_px=12, mode="physical")
    front = MetasurfaceFrontend(cfg, init_widths=False)
    geom = front.geometry()
    phase = np.broadcast_to(lens_phase(geom, 0), (2, cfg.pillars, cfg.pillars))
    front.set_widths_nm(front._widths_from_phase(phase))
    return front.frozen()


def _psf(front) -> torch.Tensor:
    with torch.no_grad():
        return front.psfs().clone()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reproducible(model, front):
    a, b, c = (model.apply_to_frontend(front, _gen(s)) for s in (7, 7, 8))
    pa, pb, pc = _psf(a), _psf(b), _psf(c)
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)
    assert torch.equal(_psf(front), _psf(front))  # the design itself is untouched
    return a


def test_lens_design_focuses(lens_device):
    p = _psf(lens_device)[0, 0]
    assert int(p.argmax()) == 12 and float(p[2, 2]) > 0.3 * float(p.sum())


def test_pillar_width_errors(lens_device):
    base = lens_device.widths_nm()
    glob = PillarWidthError(PillarWidthErrorConfig(global_sigma_nm=5.0, local_sigma_nm=0.0))
    dev = _reproducible(glob, lens_device)
    diff = dev.widths_nm() - base
    inside = (base > 70) & (base < 220)  # away from the clipped ends of the library
    assert float(diff[inside].std()) < 1e-4 and float(diff[inside].abs().mean()) > 0.01  # one bias for all
    local = PillarWidthError(PillarWidthErrorConfig(global_sigma_nm=0.0, local_sigma_nm=4.0))
    dev = _reproducible(local, lens_device)
    d = (dev.widths_nm() - base)[inside]
    assert float(d.mean()) == pytest.approx(0.0, abs=0.1) and float(d.std()) == pytest.approx(4.0, rel=0.05)
    # random local errors scatter light out of the focus
    big = PillarWidthError(PillarWidthErrorConfig(global_sigma_nm=0.0, local_sigma_nm=30.0))
    p0, p1 = _psf(lens_device)[0, 0], _psf(big.apply_to_frontend(lens_device, _gen(1)))[0, 0]
    assert float(p1[2, 2]) < 0.9 * float(p0[2, 2])


def test_min_feature_clipping(lens_device):
    clip = MinFeatureClip(MinFeatureConfig(min_feature_nm=100.0, min_gap_nm=100.0))
    dev = clip.apply_to_frontend(lens_device, _gen(0))
    w = dev.widths_nm()
    assert float(w.min()) >= 100.0 - 1e-4 and float(w.max()) <= 193.0 + 1e-4
    assert not torch.equal(_psf(dev), _psf(lens_device))
    # a process at least as good as the design range changes nothing
    loose = MinFeatureClip(MinFeatureConfig(min_feature_nm=50.0, min_gap_nm=50.0)).apply_to_frontend(lens_device, _gen(0))
    assert torch.allclose(_psf(loose), _psf(lens_device))
    bad = MinFeatureClip(MinFeatureConfig(min_feature_nm=150.0, min_gap_nm=150.0))
    with pytest.raises(NotImplementedError, match="no printable width"):
        bad.apply_to_frontend(lens_device, _gen(0))


def test_distance_error_defocuses(lens_device):
    model = DistanceError(DistanceErrorConfig(sigma_um=40.0))
    dev = _reproducible(model, lens_device)
    assert dev.distance_error_m != 0.0 and abs(dev.distance_error_m) < 5 * 40e-6
    # well beyond the depth of focus (lambda / NA^2 ~ 0.2 mm here) the spot blurs
    far = copy.deepcopy(lens_device)
    far.distance_error_m = 0.25e-3
    p0, p1 = _psf(lens_device)[0, 0], _psf(far)[0, 0]
    assert float(p1[2, 2]) < 0.7 * float(p0[2, 2])


def test_lateral_shift_moves_the_psf(lens_device):
    dev = _reproducible(LateralShift(LateralShiftConfig(sigma_um=2.0)), lens_device)
    assert dev.sensor_shift_m != (0.0, 0.0)
    # a shift of exactly one pixel moves the PSF by one pixel (computed, not resampled)
    moved = copy.deepcopy(lens_device)
    moved.sensor_shift_m = (4e-6, 0.0)
    p0, p1 = _psf(lens_device)[0, 0], _psf(moved)[0, 0]
    assert torch.allclose(p1[:-1], p0[1:], rtol=1e-3, atol=1e-6 * float(p0.max()))


def test_wavelength_shift(lens_device):
    dev = _reproducible(WavelengthShift(WavelengthShiftConfig(sigma_nm=20.0)), lens_device)
    assert dev.wavelength_shift_nm[0] != 0.0
    same = WavelengthShift(WavelengthShiftConfig(sigma_nm=0.0)).apply_to_frontend(lens_device, _gen(3))
    assert torch.allclose(_psf(same), _psf(lens_device))


def test_fabricate_composes_with_the_builtin_models(lens_device):
    specs = [{"name": "metasurface-width", "global_sigma_nm": 3.0, "local_sigma_nm": 2.0},
             {"name": "metasurface-min-feature"}, {"name": "metasurface-distance"},
             {"name": "metasurface-shift"}, {"name": "metasurface-wavelength"},
             {"name": "brightness", "sigma": 0.1}, {"name": "kernel-error", "sigma": 0.05}, {"name": "sensor-noise"}]
    models = build_error_models(specs)
    x = torch.rand(3, 1, 12, 12)
    a = fabricate(lens_device, models, seed=11)
    b = fabricate(lens_device, models, seed=11)
    assert torch.equal(a.capture(x, seed=1), b.capture(x, seed=1))
    inner = a.frontend
    while hasattr(inner, "inner"):
        inner = inner.inner
    assert isinstance(inner, FixedPSFFrontend)  # kernel-error froze the perturbed physical PSFs
    # metasurface errors need a physical design, and must come before kernel-error
    kernel_mode = MetasurfaceFrontend(attrs.evolve(lens_device.config, mode="kernel"))
    with pytest.raises(UserError, match="needs a realised metasurface"):
        fabricate(kernel_mode, build_error_models([{"name": "metasurface-width"}]), seed=0)
    with pytest.raises(UserError, match="apply it before kernel-error"):
        fabricate(lens_device, build_error_models([{"name": "kernel-error"}, {"name": "metasurface-width"}]), seed=0)
