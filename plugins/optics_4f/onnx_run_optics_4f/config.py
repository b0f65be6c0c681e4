"""Configuration of the 4f frontend: physical parameters, units in the names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

_v = attrs.validators
_number = _v.instance_of((int, float))
_int = _v.instance_of(int)
_bool = _v.instance_of(bool)

#: the RGB laser lines used when channels = 3 (nm), as in the authors' polychromatic designs
RGB_WAVELENGTHS_NM = (635.0, 532.0, 450.0)


def _odd(_inst: object, attr: attrs.Attribute, value: int) -> None:
    if value % 2 == 0:
        raise ValueError(f"{attr.name} must be odd (tiles are centred on a pixel), got {value}")


@attrs.define(kw_only=True)
class Optics4fConfig:
    """A 4f system with a learnable Fourier-plane mask (SLM or DOE), incoherent by default.

    Defaults (physically consistent, see docs/physics.md "4f defaults"): 532 nm, two f = 15 mm
    lenses, a 216 x 216 mask of 8 um pixels, a 5.86 um-pitch sensor, a 28 x 28 input displayed at
    the sensor pitch, 8 signed 7 x 7 kernels as 16 tiled PSFs (4 x 4 tiles, 34 px apart).
    """

    wavelength_nm: float = attrs.field(default=532.0, validator=[_number, _v.gt(0), _v.lt(100_000)])
    focal_length_mm: float = attrs.field(default=15.0, validator=[_number, _v.gt(0)])
    slm_pitch_um: float = attrs.field(default=8.0, validator=[_number, _v.gt(0)])
    slm_pixels: int = attrs.field(default=216, validator=[_int, _v.ge(8), _v.le(8192)])
    sensor_pitch_um: float = attrs.field(default=5.86, validator=[_number, _v.gt(0)])
    num_kernels: int = attrs.field(default=8, validator=[_int, _v.ge(1), _v.le(4096)])
    kernel_size: int = attrs.field(default=7, validator=[_int, _v.ge(1), _v.le(255), _odd])
    signed: bool = attrs.field(default=True, validator=_bool)
    mask: str = attrs.field(default="phase", validator=_v.in_(("phase", "amplitude", "complex")))
    #: SLM/DOE phase levels are 2**phase_bits; 0 = continuous phase
    phase_bits: int = attrs.field(default=8, validator=[_int, _v.ge(0), _v.le(16)])
    #: phase stroke of the device in units of pi (2.0 = full wave, periodic)
    phase_range_pi: float = attrs.field(default=2.0, validator=[_number, _v.gt(0), _v.le(16)])
    coherent: bool = attrs.field(default=False, validator=_bool)
    input_size_px: int = attrs.field(default=28, validator=[_int, _v.ge(1), _v.le(4096)])
    #: 1 (monochrome at wavelength_nm) or 3 (RGB at 635/532/450 nm)
    channels: int = attrs.field(default=1, validator=_v.in_((1, 3)))
    noise: bool = attrs.field(default=False, validator=_bool)
    #: simulate the whole sensor (stray light between tiles) instead of the kernel windows only
    crosstalk: bool = attrs.field(default=False, validator=_bool)
    #: photo-electrons for an output value of 1 (sets the shot-noise level)
    electrons_per_unit: float = attrs.field(default=1000.0, validator=[_number, _v.gt(0)])
    read_noise_e: float = attrs.field(default=2.0, validator=[_number, _v.ge(0)])
    #: ADC bits at 1 DN per electron; 0 = no ADC rounding or clipping
    adc_bits: int = attrs.field(default=0, validator=[_int, _v.ge(0), _v.le(24)])
    #: fixed output gain; None = number of tiles (a tile holding its equal share of the light sums to 1)
    output_gain: float | None = attrs.field(default=None, validator=_v.optional([_number, _v.gt(0)]))
    init: str = attrs.field(default="gerchberg_saxton", validator=_v.in_(("gerchberg_saxton", "random")))
    init_iterations: int = attrs.field(default=20, validator=[_int, _v.ge(0), _v.le(10_000)])
    seed: int = attrs.field(default=0, validator=_int)

    @classmethod
    def core_defaults(cls, task_kind: str, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The classification recipe ``onnx-run compare`` chose for the 4f optics on real
        Fashion-MNIST (6-point grid on validation, docs/ntk.md): backend lr 0.03, mask lr 0.05
        (86.68 % val against 85.98 % at the task's 0.01 / the core's 0.02). RGB optics (three
        channels) feed the backend 8 x 16 x 16 maps of 32 px images and take backend lr 0.01:
        on shapes-rgb at 8 kernels, 47.1 % val against 37.9 % at 0.03 (3 seeds) and 39.0 % at
        0.003 (docs/estimate.md)."""
        if task_kind != "classification":
            return {}
        rgb = settings.get("channels", 1) == 3
        return {"train": {"lr": 0.01 if rgb else 0.03, "optics_lr": 0.05}}

    @classmethod
    def run_presets(cls, settings):  # type: ignore[no-untyped-def]
        """Run presets (``onnx-run --preset NAME``), given the settings already chosen.

        ``paper``: the paper's kernels, 8 signed 7 x 7 (16 for RGB, its CIFAR system), on a
        larger SLM and a longer 4f: f = 40 mm and 560 x 560 pixels of 8 um (4.48 mm). Its field
        of view (lambda f / p = 454 sensor px at 532 nm, 384 px at 450 nm) holds the 112 tiles of
        the segmentation system (56 signed 3 x 3 kernels at 32 px: 11 x 11 tiles of 34 px) and the
        32 tiles of the CIFAR one (6 x 6 of 38 px) without grating replicas in RGB, and the mask
        resolves lambda f / (M p) = 5.67 um <= the 5.86 um sensor pixel up to 635 nm.
        """
        rgb = settings.get("channels", 1) == 3
        return {"paper": {"num_kernels": 16 if rgb else 8, "kernel_size": 7, "focal_length_mm": 40.0,
                          "slm_pixels": 560}}

    @property
    def wavelengths_nm(self) -> tuple[float, ...]:
        return (float(self.wavelength_nm),) if self.channels == 1 else RGB_WAVELENGTHS_NM
