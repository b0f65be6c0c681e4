"""Meta-atom library: the shipped table, interpolation (nodes, monotonicity, gradients), files, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from onnx_run.errors import UserError

from onnx_run_optics_metasurface.library import (MetaAtomLibrary, default_library_path, fit_library, load_library,
                                                 published_phase)


def test_published_fit_formula():
    # G at 233 nm: -2.28293 (exp((0.233^2 - 2 0.01878 0.233) / -0.07134) - 1) = 1.0772 waves
    assert published_phase(233.0, 532.0) / (2 * math.pi) == pytest.approx(1.0772, abs=1e-4)
    assert published_phase(60.0, 635.0) / (2 * math.pi) == pytest.approx(0.0382, abs=1e-4)


def test_shipped_libraries_describe_the_default_pillars():
    from onnx_run_optics_metasurface.rcwa import compare_with_fits

    rcwa, fits = load_library(), load_library("fits")
    assert default_library_path().exists() and "RCWA" in rcwa.metadata["source"]
    for lib in (rcwa, fits):
        assert lib.metadata["material"] == "Si3N4" and lib.metadata["period_nm"] == 293.0
        assert lib.metadata["height_nm"] == 750.0
        assert set(np.round(lib.wavelengths_nm)) == {635.0, 532.0, 450.0}
        lo, hi = lib.width_range_nm
        assert lo <= 60.0 and hi >= 233.0
    # the published fits: the green line covers a full 2 pi over the fabricable widths
    g = fits.wavelength_index(532.0)
    span = fits.phase(torch.tensor([60.0, 233.0], dtype=torch.float64), [g])[0]
    assert float(span[1] - span[0]) > 2 * math.pi
    # RCWA agrees with the fits where the pillars are not resonant (red, green); blue has
    # guided-mode resonances the smooth fit ignores
    dev = compare_with_fits(rcwa)
    assert dev["635"] < 0.05 and dev["532"] < 0.15 and dev["450"] > dev["635"]
    assert float(rcwa.amplitude.min()) < 0.5 < float(np.median(rcwa.amplitude))  # resonance dips are kept


def test_library_by_name_or_path(tmp_path):
    with pytest.raises(UserError, match=r"^optics\.library: meta-atom library .*nope\.npz not found; give a \.npz "
                                        r"path or one of rcwa, fits"):
        load_library(tmp_path / "nope.npz")
    assert load_library("") is load_library("rcwa")


def test_values_at_nodes_exact_and_dense_paths():
    lib = fit_library()
    w = torch.as_tensor(lib.widths_nm[::7])
    for li in range(3):
        ref = torch.as_tensor(lib.phase_rad[li, ::7])
        assert torch.allclose(lib.phase(w, [li])[0], ref, atol=1e-12)
        dense = lib.transmission(w, [li])[0]
        assert torch.allclose(torch.angle(dense * torch.exp(-1j * ref)), torch.zeros_like(ref), atol=1e-6)
        assert torch.allclose(dense.abs(), torch.ones_like(ref), atol=1e-6)


def test_monotone_between_nodes():
    # a monotone table with uneven steps: the cubic must not overshoot between nodes
    widths = np.array([60.0, 70, 75, 110, 150, 151, 200, 233])
    phase = np.array([[0.0, 0.1, 2.0, 2.1, 2.2, 4.0, 4.05, 6.0]])
    lib = MetaAtomLibrary(widths, [532.0], phase, np.ones_like(phase))
    w = torch.linspace(60, 233, 5000, dtype=torch.float64)
    for values in (lib.phase(w)[0], torch.angle(lib.transmission(w)[0] * np.exp(-1j * 3.0)) + 3.0):
        steps = torch.diff(values)
        steps = steps[steps.abs() < 1.0]  # the dense complex path wraps at +-pi: ignore the jump
        assert float(steps.min()) >= -1e-9
    # and the node values stay exact
    assert torch.allclose(lib.phase(torch.as_tensor(widths))[0], torch.as_tensor(phase[0]), atol=1e-12)


def test_gradients_gradcheck():
    lib = fit_library()
    gen = torch.Generator().manual_seed(0)
    w = (60.3 + 172 * torch.rand(12, generator=gen, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lib.phase(x), (w,))
    assert torch.autograd.gradcheck(lambda x: lib.transmission_exact(x), (w,))
    # the fast path: piecewise linear on a 1/32 nm grid; check away from its nodes
    w2 = (torch.floor(w.detach() * 32) / 32 + 0.5 / 32).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lib.transmission(x), (w2,), eps=1e-5, atol=1e-4)


def test_widths_for_phase_inverts_the_library():
    lib = load_library("fits")  # covers 2 pi at 532 nm: every phase is reachable
    g = lib.wavelength_index(532.0)
    target = np.random.default_rng(0).uniform(0, 2 * np.pi, (50,))
    w = lib.widths_for_phase(target, g, 60.0, 233.0)
    got = lib.phase(torch.as_tensor(w), [g])[0].numpy()
    err = np.angle(np.exp(1j * (got - target)))
    assert np.abs(err).max() < 0.05


def test_save_load_round_trip_and_errors(tmp_path):
    lib = fit_library(np.arange(60.0, 234.0, 3.0))
    path = lib.save(tmp_path / "lib.npz")
    back = MetaAtomLibrary.load(path)
    assert np.allclose(back.phase_rad, lib.phase_rad) and back.metadata == lib.metadata
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a valid library"):
        MetaAtomLibrary.load(tmp_path / "bad.npz")
    with pytest.raises(UserError, match=r"700 nm is not in the meta-atom library"):
        back.wavelength_index(700.0)
    with pytest.raises(UserError, match=r"40-233 nm fall outside"):
        back.check_widths(40.0, 233.0)
