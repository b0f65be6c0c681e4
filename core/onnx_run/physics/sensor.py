"""Image sensor: integration onto its own pixel grid, then photons -> electrons -> digital numbers.

Model (per pixel): ``e = min(Poisson(QE * photons), full_well) + N(0, read_noise_e^2)``,
``DN = gain * e``, then the ADC rounds and clips to ``[0, 2^bits - 1]``. The expected value is
``gain * QE * photons`` (before clipping): the noise is *drawn around* the signal, never added on
top of it (a public library once added a Poisson sample to the signal, doubling the mean; the
tests check for that). Noise is off unless asked. Gradients are straight-through: the backward
pass sees the noise-free, unrounded mean (clipping keeps its true zero gradient).
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import torch

from onnx_run.physics.elements import pixel_overlap
from onnx_run.physics.grid import Grid

_pos = attrs.validators.gt(0)
_nonneg = attrs.validators.ge(0)


def integrate_pixels(irradiance: torch.Tensor, grid: Grid, sensor_pitch_m: float,
                     sensor_shape: int | Sequence[int], *, offset_m: Sequence[float] = (0.0, 0.0)) -> torch.Tensor:
    """Power collected by each sensor pixel: the integral of ``irradiance`` (..., H, W) over it.

    The irradiance is taken as constant over each simulation cell (pitch ``grid.pitch_m``); the
    sensor (centred, shifted by ``offset_m``) has its own pitch and shape. Units: irradiance in
    W/m^2 gives W per pixel. Linear, hence differentiable.
    """
    shape = (int(sensor_shape), int(sensor_shape)) if isinstance(sensor_shape, int) else tuple(int(v) for v in sensor_shape)
    real = torch.float64 if irradiance.dtype == torch.float64 else torch.float32
    # overlap (sensor cell, sim cell) in metres; the sim grid is shifted by -offset relative to the sensor
    ry = torch.as_tensor(pixel_overlap(shape[0], sensor_pitch_m, grid.shape[0], grid.pitch_m, offset_m=-float(offset_m[0])),
                         device=irradiance.device, dtype=real)
    rx = torch.as_tensor(pixel_overlap(shape[1], sensor_pitch_m, grid.shape[1], grid.pitch_m, offset_m=-float(offset_m[1])),
                         device=irradiance.device, dtype=real)
    return ry @ irradiance.to(real) @ rx.transpose(0, 1)


@attrs.frozen(kw_only=True)
class Sensor:
    """Photon-to-digital-number readout of a pixel sensor (see module docstring).

    ``adc_bits = 0`` means no ADC (no rounding, no clipping); ``full_well_e = None`` no saturation.
    """

    quantum_efficiency: float = attrs.field(default=1.0, converter=float,
                                            validator=[_pos, attrs.validators.le(1.0)])
    gain_dn_per_e: float = attrs.field(default=1.0, converter=float, validator=_pos)
    read_noise_e: float = attrs.field(default=0.0, converter=float, validator=_nonneg)
    adc_bits: int = attrs.field(default=0, validator=[attrs.validators.instance_of(int), _nonneg,
                                                      attrs.validators.le(32)])
    full_well_e: float | None = attrs.field(default=None, validator=attrs.validators.optional(_pos))
    noise: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @property
    def max_dn(self) -> float:
        return float(2**self.adc_bits - 1) if self.adc_bits else math.inf

    def mean_dn(self, photons: torch.Tensor) -> torch.Tensor:
        """Noise-free response: ``gain * QE * photons``, with saturation and ADC range applied."""
        e = self.quantum_efficiency * photons
        if self.full_well_e is not None:
            e = e.clamp(max=self.full_well_e)
        dn = self.gain_dn_per_e * e
        if self.adc_bits:
            dn = dn.clamp(0.0, self.max_dn)
        return dn

    def expected_variance(self, photons: torch.Tensor | float) -> torch.Tensor | float:
        """Variance of the readout (no clipping): ``gain^2 (QE photons + read^2)`` (+1/12 with an ADC)."""
        var = self.gain_dn_per_e**2 * (self.quantum_efficiency * photons + self.read_noise_e**2)
        return var + (1.0 / 12.0 if self.adc_bits else 0.0)

    def __call__(self, photons: torch.Tensor, *, generator: torch.Generator | None = None,
                 noise: bool | None = None) -> torch.Tensor:
        """Read out expected photon counts per pixel; ``noise`` overrides the configured flag."""
        mean = self.mean_dn(photons)
        use_noise = self.noise if noise is None else noise
        if not use_noise and not self.adc_bits:
            return mean
        with torch.no_grad():
            e = self.quantum_efficiency * photons.detach().clamp(min=0)
            if use_noise:
                e = torch.poisson(e, generator=generator)
            if self.full_well_e is not None:
                e = e.clamp(max=self.full_well_e)
            if use_noise and self.read_noise_e > 0:
                e = e + self.read_noise_e * torch.randn(e.shape, generator=generator, device=e.device, dtype=e.dtype)
            dn = self.gain_dn_per_e * e
            if self.adc_bits:
                dn = torch.round(dn).clamp(0.0, self.max_dn)
        return mean + (dn - mean.detach())
