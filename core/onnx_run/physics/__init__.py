"""Wave optics shared by every optics plugin: sampled planes, propagation, lenses and masks,
incoherent/coherent imaging, sensors, hardware parametrisations and validity checks.

Units are SI inside (metres); names carry units. Conventions: docs/physics.md.
"""

from onnx_run.physics.elements import (amplitude_mask, circular_aperture, height_to_phase, phase_mask,
                                       phase_to_height, pixel_overlap, rect_aperture, resample_mask,
                                       square_aperture, thin_lens)
from onnx_run.physics.grid import Grid, centred_coords, padded_size, stack_wavelengths
from onnx_run.physics.incoherent import (coherent_conv, convolve2d, incoherent_conv, signed_to_pairs,
                                         split_signed, subtract_pairs)
from onnx_run.physics.parametrize import (bounded, constrained_phase, phase_levels, quantize_ste,
                                          raw_from_bounded, raw_from_phase, requantised_raw)
from onnx_run.physics.propagation import (angular_spectrum, apply_transfer_function, clear_cache,
                                          fourier_lens, fresnel, propagate, rayleigh_sommerfeld,
                                          transfer_function)
from onnx_run.physics.sensor import Sensor, integrate_pixels
from onnx_run.physics.validity import (LensReport, PhysicsWarning, PropagationReport, band_limit_frequency,
                                       lens_report, propagation_report, removed_fraction, warn_issues)

__all__ = [
    "Grid", "centred_coords", "padded_size", "stack_wavelengths",
    "angular_spectrum", "fresnel", "propagate", "fourier_lens", "rayleigh_sommerfeld",
    "transfer_function", "apply_transfer_function", "clear_cache",
    "thin_lens", "circular_aperture", "square_aperture", "rect_aperture", "phase_mask", "amplitude_mask",
    "resample_mask", "pixel_overlap", "height_to_phase", "phase_to_height",
    "convolve2d", "incoherent_conv", "coherent_conv", "split_signed", "signed_to_pairs", "subtract_pairs",
    "Sensor", "integrate_pixels",
    "constrained_phase", "phase_levels", "quantize_ste", "raw_from_phase", "requantised_raw", "bounded", "raw_from_bounded",
    "PhysicsWarning", "PropagationReport", "LensReport", "propagation_report", "lens_report",
    "band_limit_frequency", "removed_fraction", "warn_issues",
]
