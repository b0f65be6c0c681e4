"""Built-in error models that apply to any optical frontend.

They act on what every frontend has: its sensor read-out. Optics plugins add errors of
their own physics (pillar widths, layer misalignment) through ``register_error_models``.
"""

from __future__ import annotations

import attrs
import torch
from attrs import validators as v

from onnx_run.components import ErrorModel, OpticalFrontend


class _Brightness(torch.nn.Module):
    """A frozen frontend whose read-out is scaled by a device-specific factor."""

    def __init__(self, inner: OpticalFrontend, scale: float):
        super().__init__()
        self.inner = inner
        self.scale = scale

    def forward(self, x):
        return self.inner(x) * self.scale


@attrs.define(kw_only=True)
class BrightnessConfig:
    """Overall throughput error: the read-out is multiplied by a ~ N(1, sigma), sampled per device."""

    sigma: float = attrs.field(default=0.1, validator=[v.ge(0), v.lt(1)])


class BrightnessError(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        scale = 1.0 + self.config.sigma * float(torch.randn((), generator=generator))
        wrapped = _Brightness(frontend, max(scale, 0.05))
        return wrapped


@attrs.define(kw_only=True)
class SensorNoiseConfig:
    """Per-capture sensor noise relative to the feature scale: Poisson-like shot noise with
    ``photons_at_unit`` photo-electrons at a feature value of 1, plus Gaussian read noise of
    ``read_sigma`` (in feature units). Zero-mean: the noisy read-out preserves the mean."""

    photons_at_unit: float = attrs.field(default=1000.0, validator=v.gt(0))
    read_sigma: float = attrs.field(default=0.01, validator=v.ge(0))


class SensorNoise(ErrorModel):
    def apply_to_measurement(self, features, generator):
        cfg = self.config
        # shot noise: variance equal to the mean in electron units, Gaussian approximation
        electrons = features.clamp_min(0) * cfg.photons_at_unit
        shot = torch.randn(features.shape, generator=generator, device=features.device) if generator is not None \
            else torch.randn_like(features)
        read = torch.randn(features.shape, generator=generator, device=features.device) if generator is not None \
            else torch.randn_like(features)
        return features + shot * electrons.sqrt() / cfg.photons_at_unit + read * cfg.read_sigma


def builtin_error_models():
    return [
        ("brightness", BrightnessError, BrightnessConfig, "device throughput scale a ~ N(1, sigma)"),
        ("sensor-noise", SensorNoise, SensorNoiseConfig, "shot (Poisson, Gaussian approx.) + read noise per capture"),
    ]
