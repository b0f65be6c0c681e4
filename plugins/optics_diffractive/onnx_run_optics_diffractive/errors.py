"""Fabrication and assembly errors of a diffractive stack.

Each model draws its numbers from the generator it is given (in a fixed order, so one device
seed gives one device) and returns a perturbed, frozen copy of the stack. They find the stack
through wrappers added by earlier error models (``.inner``), as the core's ``kernel-error`` does.
"""

from __future__ import annotations

import math
from typing import Callable

import attrs
import torch
from attrs import validators as v

from onnx_run.components import ErrorModel, scaled_settings

from onnx_run_optics_diffractive.frontend import POSE, DiffractiveFrontend


def _on_stack(frontend, name: str, fn: Callable[[DiffractiveFrontend], DiffractiveFrontend]):
    if isinstance(frontend, DiffractiveFrontend):
        return fn(frontend)
    parent = frontend
    while hasattr(parent, "inner"):
        if isinstance(parent.inner, DiffractiveFrontend):
            parent.inner = fn(parent.inner)
            return frontend
        parent = parent.inner
    raise NotImplementedError(f"{name} applies to the diffractive optics only, not to {type(frontend).__name__}")


@attrs.define(kw_only=True)
class LayerMisalignmentConfig:
    """Each layer displaced laterally by (dy, dx) ~ N(0, sigma) per axis and rotated about the
    optical axis by ~ N(0, rotation_deg); sigma = ``shift_um`` if > 0, else ``shift_neurons``
    neuron pitches. Layers are resampled as pixelated masks (area mean over each cell)."""

    shift_neurons: float = attrs.field(default=0.25, validator=v.ge(0))
    shift_um: float = attrs.field(default=0.0, validator=v.ge(0))
    rotation_deg: float = attrs.field(default=0.1, validator=[v.ge(0), v.le(45)])

    def scaled(self, severity: float) -> "LayerMisalignmentConfig":
        return scaled_settings(self, severity, shift_neurons=1, shift_um=1, rotation_deg=1)


class LayerMisalignment(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        cfg = self.config

        def fn(stack: DiffractiveFrontend) -> DiffractiveFrontend:
            g = stack.geometry
            sigma = cfg.shift_um * 1e-6 if cfg.shift_um > 0 else cfg.shift_neurons * g.neuron_pitch_m
            d = torch.randn(g.num_layers, 3, generator=generator, dtype=torch.float64)
            pose = torch.zeros(g.num_layers, len(POSE), dtype=torch.float64)
            pose[:, 0:2] = d[:, 0:2] * sigma
            pose[:, 2] = d[:, 2] * math.radians(cfg.rotation_deg)
            return stack.perturbed(pose=pose)

        return _on_stack(frontend, "diffractive-misalignment", fn)


@attrs.define(kw_only=True)
class AxialErrorConfig:
    """Every gap (input -> layer 1, ..., layer L -> sensor) becomes d (1 + sigma_fraction N) +
    sigma_um N' (independent draws), kept above 10% of its design length."""

    sigma_fraction: float = attrs.field(default=0.01, validator=[v.ge(0), v.lt(0.5)])
    sigma_um: float = attrs.field(default=0.0, validator=v.ge(0))

    def scaled(self, severity: float) -> "AxialErrorConfig":
        return scaled_settings(self, severity, sigma_fraction=1, sigma_um=1)


class AxialError(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        cfg = self.config

        def fn(stack: DiffractiveFrontend) -> DiffractiveFrontend:
            d = torch.tensor(stack.gaps_m(), dtype=torch.float64)
            noise = torch.randn(2, d.numel(), generator=generator, dtype=torch.float64)
            err = d * cfg.sigma_fraction * noise[0] + cfg.sigma_um * 1e-6 * noise[1]
            err = torch.maximum(err, -0.9 * d)
            return stack.perturbed(distance_error_m=err)

        return _on_stack(frontend, "diffractive-axial", fn)


@attrs.define(kw_only=True)
class TiltConfig:
    """Each layer tilted about the x and y axes (through its centre) by ~ N(0, sigma_deg).

    Modelled as a staircase of ``strips`` strips at their own axial offsets (the obliquity of
    the diffracted light makes that offset matter), plus the cos(tilt) foreshortening of the
    pattern; the 1/cos path-length change through a thin relief (~1e-4 at 1 deg) is neglected.
    Costs 2 * strips extra propagations per tilted layer in every forward pass.
    """

    sigma_deg: float = attrs.field(default=0.5, validator=[v.ge(0), v.le(20)])
    strips: int = attrs.field(default=8, validator=[v.ge(1), v.le(64)])

    def scaled(self, severity: float) -> "TiltConfig":
        return scaled_settings(self, severity, sigma_deg=1)


class TiltError(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        cfg = self.config

        def fn(stack: DiffractiveFrontend) -> DiffractiveFrontend:
            g = stack.geometry
            d = torch.randn(g.num_layers, 2, generator=generator, dtype=torch.float64)
            pose = torch.zeros(g.num_layers, len(POSE), dtype=torch.float64)
            pose[:, 3:5] = d * math.radians(cfg.sigma_deg)
            return stack.perturbed(pose=pose, tilt_strips=cfg.strips)

        return _on_stack(frontend, "diffractive-tilt", fn)


@attrs.define(kw_only=True)
class HeightErrorConfig:
    """Relief errors of the printed / etched layers: every neuron's height + N(0, sigma) with
    sigma = ``sigma_um`` if > 0 else ``sigma_fraction`` of the 2 pi height lambda / (n - 1);
    plus one global scale error per layer (1 + scale_sigma N): index or shrinkage error."""

    sigma_fraction: float = attrs.field(default=0.02, validator=[v.ge(0), v.le(1)])
    sigma_um: float = attrs.field(default=0.0, validator=v.ge(0))
    scale_sigma: float = attrs.field(default=0.01, validator=[v.ge(0), v.lt(0.5)])

    def scaled(self, severity: float) -> "HeightErrorConfig":
        return scaled_settings(self, severity, sigma_fraction=1, sigma_um=1, scale_sigma=1)


class HeightError(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        cfg = self.config

        def fn(stack: DiffractiveFrontend) -> DiffractiveFrontend:
            g = stack.geometry
            sigma = cfg.sigma_um * 1e-6 if cfg.sigma_um > 0 else cfg.sigma_fraction * g.height_2pi_m
            with torch.no_grad():
                h = stack.heights_m().detach().cpu().double()
            local = torch.randn(h.shape, generator=generator, dtype=torch.float64) * sigma
            scale = torch.randn(g.num_layers, 1, 1, generator=generator, dtype=torch.float64) * cfg.scale_sigma
            return stack.perturbed(height_error_m=(local + scale * h).float())

        return _on_stack(frontend, "diffractive-height", fn)
