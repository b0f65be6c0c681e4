"""Error models: reproducible from the generator, change the output, frozen, through wrappers."""

from __future__ import annotations

import pytest
import torch

from onnx_run.fabrication.device import build_error_models, fabricate
from onnx_run.fabrication.errors import BrightnessConfig, BrightnessError, KernelError, KernelErrorConfig
from onnx_run_optics_diffractive.errors import (AxialError, AxialErrorConfig, HeightError, HeightErrorConfig,
                                                LayerMisalignment, LayerMisalignmentConfig, TiltConfig, TiltError)
from onnx_run_optics_diffractive.frontend import DiffractiveFrontend

MODELS = [
    (LayerMisalignment, LayerMisalignmentConfig(shift_neurons=0.5, rotation_deg=0.5)),
    (AxialError, AxialErrorConfig(sigma_fraction=0.05)),
    (TiltError, TiltConfig(sigma_deg=2.0, strips=4)),
    (HeightError, HeightErrorConfig(sigma_fraction=0.05, scale_sigma=0.05)),
    (KernelError, KernelErrorConfig(sigma=0.1)),  # the core's model, through perturb_kernels
]


def _apply(model, front, seed):
    return model.apply_to_frontend(front, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cls,cfg", MODELS, ids=[m[0].__name__ for m in MODELS])
def test_error_model_reproducible_and_effective(make_stack, images, cls, cfg):
    front = make_stack(num_layers=2)
    model = cls(cfg)
    a, b, c = _apply(model, front, 7), _apply(model, front, 7), _apply(model, front, 8)
    with torch.no_grad():
        ya, yb, yc, y0 = a(images), b(images), c(images), front(images)
    assert torch.equal(ya, yb)
    rel = lambda p, q: float((p - q).norm() / q.norm())  # noqa: E731
    assert rel(ya, y0) > 1e-3
    assert rel(ya, yc) > 1e-3
    assert isinstance(a, DiffractiveFrontend)
    assert not any(p.requires_grad for p in a.parameters())
    assert front.phase_raw.requires_grad  # the design itself is untouched
    assert float(front.height_error_m.abs().max()) == 0 and float(front.pose.abs().max()) == 0


def test_zero_magnitude_is_the_identity(make_stack, images):
    front = make_stack()
    for model in (LayerMisalignment(LayerMisalignmentConfig(shift_neurons=0, rotation_deg=0)),
                  AxialError(AxialErrorConfig(sigma_fraction=0)),
                  HeightError(HeightErrorConfig(sigma_fraction=0, scale_sigma=0))):
        out = _apply(model, front, 3)
        assert torch.allclose(out(images), front(images), atol=1e-6)


def test_whole_neuron_shift_moves_the_mask(make_stack):
    """A shift of exactly one neuron is a pure index shift of the transmission (opaque edge)."""
    front = make_stack(num_layers=1)
    pitch = front.geometry.neuron_pitch_m
    pose = torch.zeros(1, 5, dtype=torch.float64)
    pose[0, 1] = pitch
    moved = front.perturbed(pose=pose)
    t0 = front.layer_transmissions()[0, 0].detach()
    t1 = moved.layer_transmissions()[0, 0].detach()
    assert torch.allclose(t1[:, 1:], t0[:, :-1], atol=1e-6)
    assert float(t1[:, 0].abs().max()) == 0


def test_errors_compound_through_core_wrappers(make_stack, images):
    """After the core's brightness wrapper, the plugin's models still find the stack."""
    front = make_stack()
    models = [BrightnessError(BrightnessConfig(sigma=0.1)), HeightError(HeightErrorConfig()),
              AxialError(AxialErrorConfig())]
    dev1 = fabricate(front, models, seed=5)
    dev2 = fabricate(front, models, seed=5)
    assert torch.equal(dev1(images), dev2(images))
    assert float(dev1.frontend.inner.height_error_m.abs().max()) > 0


def test_registered_by_name_through_the_plugin():
    models = build_error_models([{"name": "diffractive-misalignment", "shift_um": 50.0},
                                 {"name": "diffractive-tilt", "sigma_deg": 0.2}, {"name": "diffractive-axial"},
                                 {"name": "diffractive-height", "sigma_um": 5.0}])
    assert [type(m).__name__ for m in models] == ["LayerMisalignment", "TiltError", "AxialError", "HeightError"]


def test_other_optics_are_refused():
    from onnx_run.errors import UserError

    class Other(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UserError, match="diffractive optics only"):
        fabricate(Other(), [HeightError(HeightErrorConfig())], seed=0)


def test_core_phase_quantisation_rounds_every_layer(make_stack, images):
    import math

    front = make_stack(num_layers=2)
    step = front.geometry.phase_range / 4
    device = fabricate(front, build_error_models([{"name": "phase-quantisation", "bits": 2}]), seed=0)
    phases = device.frontend.phases().detach()
    on_level = torch.remainder(phases + step / 2, step) - step / 2
    assert float(on_level.abs().max()) < 1e-4 and step == math.pi / 2
    assert not torch.allclose(device(images), front(images), atol=1e-6)


def test_the_fabrication_state_is_reread_whenever_it_changes(make_stack, images):
    """The forward pass reads poses and gap errors on the host once per change (not per call):
    in-place edits, loaded states, copies and moves must all be seen."""
    front = make_stack(num_layers=2).eval()
    with torch.no_grad():
        design = front(images)
        pitch = front.geometry.neuron_pitch_m
        shifted = front.perturbed(pose=torch.tensor([[pitch, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float64))
        expected = shifted(images)
        assert not torch.allclose(expected, design)
        state = {k: v.clone() for k, v in front.state_dict().items()}
        front.pose[0, 0] = pitch  # an in-place edit after a forward pass
        assert torch.allclose(front(images), expected)
        front.distance_error_m[1] = 1e-3
        moved_gap = front(images)
        assert not torch.allclose(moved_gap, expected)
        assert front.gaps_m()[1] == pytest.approx(front.geometry.distances_m[1] + 1e-3)
        front.load_state_dict(state)  # back to the design
        assert torch.allclose(front(images), design)
        assert torch.allclose(shifted.to(torch.float64).to(torch.float32)(images), expected)  # a move keeps it
