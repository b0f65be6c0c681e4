"""Hardware parametrisations: limited phase range, bit depth (STE), bounded amplitudes."""

from __future__ import annotations

import math

import pytest
import torch

from onnx_run.physics import (bounded, constrained_phase, phase_levels, quantize_ste, raw_from_bounded,
                              raw_from_phase, requantised_raw)


@pytest.mark.parametrize("bits, range_pi", [(1, 2.0), (3, 2.0), (4, 1.5), (2, 1.0)])
def test_quantised_phase_takes_exactly_2_to_the_bits_levels(bits, range_pi):
    raw = torch.linspace(-20, 20, 50_001, dtype=torch.float64)
    phase = constrained_phase(raw, phase_range=range_pi * math.pi, bits=bits)
    values = torch.unique(phase)
    assert values.numel() == 2**bits
    assert torch.allclose(values, phase_levels(range_pi * math.pi, bits))
    assert float(phase.min()) >= 0 and float(phase.max()) <= range_pi * math.pi + 1e-12


def test_full_wave_levels_exclude_the_duplicate_of_zero_and_limited_range_includes_both_ends():
    assert torch.allclose(phase_levels(2 * math.pi, 2), torch.tensor([0, 0.5, 1, 1.5], dtype=torch.float64) * math.pi)
    assert torch.allclose(phase_levels(math.pi, 2), torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=torch.float64) * math.pi)


def test_straight_through_gradients():
    raw = torch.tensor([0.3, 2.0, 5.9], requires_grad=True)
    constrained_phase(raw, bits=3).sum().backward()
    assert torch.allclose(raw.grad, torch.ones(3))  # periodic range: identity gradient
    x = torch.tensor([0.26, 0.74], requires_grad=True)
    y = quantize_ste(x, 0.5)
    assert torch.equal(y.detach(), torch.tensor([0.5, 0.5]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(2))


def test_inverse_maps():
    phase = torch.tensor([0.1, 1.0, 3.0, 6.0], dtype=torch.float64)
    assert torch.allclose(constrained_phase(raw_from_phase(phase)), phase)
    limited = raw_from_phase(phase, phase_range=1.5 * math.pi)
    back = constrained_phase(limited, phase_range=1.5 * math.pi)
    assert torch.allclose(back[:3], phase[:3], atol=1e-6)
    # outside [0, 1.5 pi]: 6.0 rad is nearer 0 (through the wrap), 5.0 rad nearer the top
    assert float(back[3]) == pytest.approx(0.0, abs=1e-2)
    top = constrained_phase(raw_from_phase(torch.tensor(5.0), phase_range=1.5 * math.pi), phase_range=1.5 * math.pi)
    assert float(top) == pytest.approx(1.5 * math.pi, abs=1e-2)
    amp = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(bounded(raw_from_bounded(amp)), amp)
    assert float(bounded(torch.tensor(100.0), 0.1, 0.4)) == pytest.approx(0.4)


@pytest.mark.parametrize("bits, range_pi", [(1, 2.0), (2, 2.0), (4, 2.0), (2, 1.5), (3, 1.0)])
def test_requantised_design_sits_on_the_nearest_level(bits, range_pi):
    phase_range = range_pi * math.pi
    periodic = range_pi == 2.0
    raw = torch.linspace(-7, 7, 2001, dtype=torch.float64)
    design = constrained_phase(raw, phase_range=phase_range)  # continuous
    device = constrained_phase(requantised_raw(raw, phase_range=phase_range, bits=bits), phase_range=phase_range)
    levels = phase_levels(phase_range, bits)
    if periodic:  # the top of the range is level 0 again
        levels = torch.cat([levels, levels.new_tensor([phase_range])])
    tol = 1e-9 if periodic else 1e-2 * phase_range  # a limited range's ends are sigmoid limits

    def dist(a, b):
        d = (a - b).abs()
        return torch.minimum(d, phase_range - d) if periodic else d

    assert float((device.unsqueeze(-1) - levels).abs().min(-1).values.max()) < tol  # on a level
    nearest = (design.unsqueeze(-1) - levels).abs().min(-1).values
    assert float((dist(device, design) - nearest).abs().max()) < tol  # and on the closest one
