"""Hook implementations: the ``diffractive`` optics, its error models and the ``all-optical`` task.

Components are named as ``"module:attribute"``: listing them imports nothing heavy.
"""

from onnx_run.hookspecs import hookimpl

_PKG = "onnx_run_optics_diffractive"

#: (name, model, settings, description) of the error models in errors.py
ERROR_MODELS = [
    ("diffractive-misalignment", "LayerMisalignment", "LayerMisalignmentConfig",
     "diffractive layers shifted ~ N(0, shift) per axis and rotated ~ N(0, rotation_deg), per layer"),
    ("diffractive-axial", "AxialError", "AxialErrorConfig",
     "diffractive gaps d (1 + sigma_fraction N) + sigma_um N, per gap"),
    ("diffractive-tilt", "TiltError", "TiltConfig",
     "diffractive layers tilted ~ N(0, sigma_deg) about x and y (staircase model), per layer"),
    ("diffractive-height", "HeightError", "HeightErrorConfig",
     "diffractive relief height noise per neuron + a scale error per layer"),
]


@hookimpl
def register_optics(register):
    register("diffractive", f"{_PKG}.registered:DiffractiveFrontend", config=f"{_PKG}.config:DiffractiveConfig",
             description="D2NN: L phase (or complex) layers of N x N neurons, angular-spectrum gaps, "
                         "K sensor regions (presets lin2018 0.4 THz, visible-slm 632.8 nm)")


@hookimpl
def register_error_models(register):
    for name, model, settings, description in ERROR_MODELS:
        register(name, f"{_PKG}.errors:{model}", config=f"{_PKG}.errors:{settings}", description=description)


@hookimpl
def register_tasks(register):
    register("all-optical", f"{_PKG}.alloptical:AllOpticalTask", config=f"{_PKG}.alloptical_settings:AllOpticalConfig",
             description="classification by one optical detector per class (Lin 2018): the class is the "
                         "brightest readout region; needs optics.num_kernels = classes")
