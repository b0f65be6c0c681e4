"""Fabrication and assembly errors of a metasurface, applied to the physical design.

Each model returns a perturbed copy of the (realised, physical) metasurface frontend; the PSFs
are then recomputed through the full physics (library -> angular spectrum -> pixels), so the
errors act the way they would on a device. All randomness comes from the generator handed in
by ``onnx_run.fabrication.device.fabricate`` (one per device seed): same seed, same device.
Errors of the built-in models (brightness, misalignment, kernel-error, sensor-noise) compose
with these: wrappers they add are looked through.
"""

from __future__ import annotations

import copy
from typing import Callable

import attrs
import torch
from attrs import validators as v

from onnx_run.components import ErrorModel, OpticalFrontend, scaled_settings


def _apply(frontend: torch.nn.Module, what: str, change: Callable[[OpticalFrontend], None]) -> torch.nn.Module:
    """Find the metasurface inside wrappers (``.inner``), change a copy of it, put it back."""
    from onnx_run_optics_metasurface.frontend import MetasurfaceFrontend

    parent, inner = None, frontend
    while not isinstance(inner, MetasurfaceFrontend) and hasattr(inner, "inner"):
        parent, inner = inner, inner.inner
    if not isinstance(inner, MetasurfaceFrontend):
        raise NotImplementedError(f"{what} applies to a metasurface frontend, got {type(inner).__name__} "
                                  f"(apply it before kernel-error, which freezes the PSFs)")
    if inner.mode != "physical":
        raise NotImplementedError(f"{what} needs a realised metasurface (pillar widths); realise the kernel-mode "
                                  f"frontend first")
    device = copy.deepcopy(inner)
    change(device)
    device._psf_cache = None
    if parent is None:
        return device
    parent.inner = device
    return frontend


def _add_width_offset(frontend: OpticalFrontend, offset: torch.Tensor) -> None:
    current = getattr(frontend, "width_offset_nm", None)
    if current is None:
        frontend.register_buffer("width_offset_nm", offset.to(frontend.width_logits))
    else:
        current.add_(offset.to(current))


@attrs.define(kw_only=True)
class PillarWidthErrorConfig:
    """Pillar widths as fabricated: w + global_sigma_nm N(0,1) (one draw per device: exposure/etch
    bias) + local_sigma_nm N(0,1) per pillar. Defaults: the duty-cycle errors of Tseng et al. 2021
    (3% global, 1.5% local) at the 293 nm period."""

    global_sigma_nm: float = attrs.field(default=8.8, validator=[v.ge(0), v.le(200)])
    local_sigma_nm: float = attrs.field(default=4.4, validator=[v.ge(0), v.le(200)])

    def scaled(self, severity: float) -> "PillarWidthErrorConfig":
        return scaled_settings(self, severity, global_sigma_nm=1, local_sigma_nm=1)


class PillarWidthError(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        def change(dev):
            shape = dev.width_logits.shape
            bias = float(torch.randn((), generator=generator)) * self.config.global_sigma_nm
            local = torch.randn(shape, generator=generator) * self.config.local_sigma_nm
            _add_width_offset(dev, local + bias)

        return _apply(frontend, "metasurface-width", change)


@attrs.define(kw_only=True)
class MinFeatureConfig:
    """The process cannot print pillars narrower than ``min_feature_nm`` or gaps narrower than
    ``min_gap_nm``: widths are clipped into [min_feature_nm, period - min_gap_nm] (deterministic)."""

    min_feature_nm: float = attrs.field(default=80.0, validator=[v.ge(0), v.le(10000)])
    min_gap_nm: float = attrs.field(default=80.0, validator=[v.ge(0), v.le(10000)])

    def scaled(self, severity: float) -> "MinFeatureConfig":
        return scaled_settings(self, severity, min_feature_nm=1, min_gap_nm=1)


class MinFeatureClip(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        def change(dev):
            hi = dev.config.period_nm - self.config.min_gap_nm
            if hi <= self.config.min_feature_nm:
                raise NotImplementedError(
                    f"metasurface-min-feature: min_feature_nm {self.config.min_feature_nm:g} + min_gap_nm "
                    f"{self.config.min_gap_nm:g} leave no printable width in a {dev.config.period_nm:g} nm cell")
            lo = self.config.min_feature_nm
            if dev.width_clip_nm is not None:
                lo, hi = max(lo, dev.width_clip_nm[0]), min(hi, dev.width_clip_nm[1])
            dev.width_clip_nm = (lo, hi)

        return _apply(frontend, "metasurface-min-feature", change)


@attrs.define(kw_only=True)
class DistanceErrorConfig:
    """Metasurface-to-sensor distance off by sigma_um N(0,1) (spacer / mount tolerance), per device."""

    sigma_um: float = attrs.field(default=10.0, validator=[v.ge(0), v.le(10000)])

    def scaled(self, severity: float) -> "DistanceErrorConfig":
        return scaled_settings(self, severity, sigma_um=1)


class DistanceError(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        def change(dev):
            dev.distance_error_m += float(torch.randn((), generator=generator)) * self.config.sigma_um * 1e-6
            if dev.config.distance_mm * 1e-3 + dev.distance_error_m <= 0:
                dev.distance_error_m = -0.5 * dev.config.distance_mm * 1e-3

        return _apply(frontend, "metasurface-distance", change)


@attrs.define(kw_only=True)
class LateralShiftConfig:
    """Sensor displaced laterally relative to the metasurface by sigma_um N(0,1) per axis, per
    device: every PSF window moves by the same sub-pixel amount (computed exactly, not resampled)."""

    sigma_um: float = attrs.field(default=2.0, validator=[v.ge(0), v.le(10000)])

    def scaled(self, severity: float) -> "LateralShiftConfig":
        return scaled_settings(self, severity, sigma_um=1)


class LateralShift(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        def change(dev):
            d = torch.randn(2, generator=generator) * self.config.sigma_um * 1e-6
            dev.sensor_shift_m = (dev.sensor_shift_m[0] + float(d[0]), dev.sensor_shift_m[1] + float(d[1]))

        return _apply(frontend, "metasurface-shift", change)


@attrs.define(kw_only=True)
class WavelengthShiftConfig:
    """Illumination off its design line by sigma_nm N(0,1), per channel and device (source drift,
    LED vs laser). Propagation is exact at the new wavelength; the meta-atom phase is scaled by
    lambda / lambda' (pillar dispersion neglected)."""

    sigma_nm: float = attrs.field(default=2.0, validator=[v.ge(0), v.le(200)])

    def scaled(self, severity: float) -> "WavelengthShiftConfig":
        return scaled_settings(self, severity, sigma_nm=1)


class WavelengthShift(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        def change(dev):
            d = torch.randn(dev.in_channels, generator=generator) * self.config.sigma_nm
            dev.wavelength_shift_nm = tuple(s + float(x) for s, x in zip(dev.wavelength_shift_nm, d))

        return _apply(frontend, "metasurface-wavelength", change)
