"""Registers the built-in error models.

Models and settings are named as ``"module:attribute"``: listing them imports nothing heavy.
"""

from onnx_run.hookspecs import hookimpl

#: (name, model, settings, description) of the models in onnx_run.fabrication.errors
ERROR_MODELS = [
    ("brightness", "BrightnessError", "BrightnessConfig", "device throughput scale a ~ N(1, sigma)"),
    ("misalignment", "Misalignment", "MisalignmentConfig",
     "sensor shift ~ N(0, shift_px) and rotation ~ N(0, rotation_deg) per device"),
    ("kernel-error", "KernelError", "KernelErrorConfig", "PSF values scaled by 1 + sigma N(0,1) per device"),
    ("sensor-noise", "SensorNoise", "SensorNoiseConfig", "shot (Poisson, Gaussian approx.) + read noise per capture"),
    ("phase-quantisation", "PhaseQuantisation", "PhaseQuantisationConfig",
     "designed phase rounded to 2**bits levels (optics with quantise_phase: 4f, diffractive)"),
]


@hookimpl
def register_error_models(register):
    for name, model, settings, description in ERROR_MODELS:
        register(name, f"onnx_run.fabrication.errors:{model}", config=f"onnx_run.fabrication.errors:{settings}",
                 description=description)
