"""Built-in error models that apply to any optical frontend.

They act on what every frontend has: its sensor read-out. Optics plugins add errors of
their own physics (pillar widths, layer misalignment) through ``register_error_models``.
"""

from __future__ import annotations

import math

import attrs
import torch
from attrs import validators as v

from onnx_run.components import ErrorModel, OpticalFrontend, replace_optics, scaled_settings


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

    def scaled(self, severity: float) -> "BrightnessConfig":
        return scaled_settings(self, severity, sigma=1)


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

    def scaled(self, severity: float) -> "SensorNoiseConfig":
        return scaled_settings(self, severity, photons_at_unit=-2, read_sigma=1)


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


class _Misaligned(torch.nn.Module):
    """Sensor displaced and rotated relative to the optics: the read-out is resampled."""

    def __init__(self, inner: torch.nn.Module, shift_px: tuple[float, float], rotation_deg: float):
        super().__init__()
        self.inner = inner
        self.shift_px = shift_px
        self.rotation_deg = rotation_deg

    def forward(self, x):
        feats = self.inner(x)
        return shift_rotate(feats, self.shift_px, self.rotation_deg)


def shift_rotate(feats: torch.Tensor, shift_px: tuple[float, float], rotation_deg: float) -> torch.Tensor:
    """Resample (B, K, H, W) maps shifted by (dy, dx) pixels and rotated about the centre
    (bilinear, zeros outside: light that misses the sensor is lost)."""
    import math

    import torch.nn.functional as F

    b, _, h, w = feats.shape
    theta = math.radians(rotation_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    dy, dx = shift_px
    # normalised coordinates: x in [-1, 1] spans w pixels; output(p) = input(R^-1 (p - t))
    mat = torch.tensor([[cos, sin * h / w, -2 * dx / w], [-sin * w / h, cos, -2 * dy / h]],
                       dtype=feats.dtype, device=feats.device)
    grid = F.affine_grid(mat.expand(b, 2, 3), list(feats.shape), align_corners=False)
    return F.grid_sample(feats, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@attrs.define(kw_only=True)
class MisalignmentConfig:
    """Kernel-to-pixel-grid misalignment: a lateral shift ~ N(0, shift_px) per axis (sensor
    pixels, sub-pixel allowed) and a rotation ~ N(0, rotation_deg), sampled per device."""

    shift_px: float = attrs.field(default=0.5, validator=v.ge(0))
    rotation_deg: float = attrs.field(default=1.0, validator=v.ge(0))

    def scaled(self, severity: float) -> "MisalignmentConfig":
        return scaled_settings(self, severity, shift_px=1, rotation_deg=1)


class Misalignment(ErrorModel):
    def apply_to_frontend(self, frontend, generator):
        d = torch.randn(3, generator=generator)
        shift = (float(d[0]) * self.config.shift_px, float(d[1]) * self.config.shift_px)
        return _Misaligned(frontend, shift, float(d[2]) * self.config.rotation_deg)


@attrs.define(kw_only=True)
class KernelErrorConfig:
    """Fabrication error of the optical kernels: each PSF value scaled by (1 + sigma * N(0, 1)),
    sampled per device (delta in the paper's error model)."""

    sigma: float = attrs.field(default=0.1, validator=[v.ge(0), v.lt(1)])

    def scaled(self, severity: float) -> "KernelErrorConfig":
        return scaled_settings(self, severity, sigma=1)


class KernelError(ErrorModel):
    requires = frozenset({"perturb_kernels"})

    def apply_to_frontend(self, frontend, generator):
        return replace_optics(frontend, lambda o: o.perturb_kernels(self.config.sigma, generator))


@attrs.define(kw_only=True)
class PhaseQuantisationConfig:
    """The device holds only 2**bits phase levels over its range (an SLM or a lithography step
    coarser than the design): the designed phase is rounded to the nearest level."""

    bits: int = attrs.field(default=4, validator=[v.ge(1), v.le(16)])

    def scaled(self, severity: float) -> "PhaseQuantisationConfig":
        """The phase step (2 pi / 2**bits) ``severity`` times coarser: log2(severity) bits fewer."""
        return attrs.evolve(self, bits=max(1, self.bits - round(math.log2(severity))))


class PhaseQuantisation(ErrorModel):
    requires = frozenset({"quantise_phase"})

    def apply_to_frontend(self, frontend, generator):
        return replace_optics(frontend, lambda o: o.quantise_phase(self.config.bits))
