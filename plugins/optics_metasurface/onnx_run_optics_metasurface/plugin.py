"""Hook implementations: the ``metasurface`` optics, its error models, and ``onnx-run metasurface``.

Components are named as ``"module:attribute"``: listing them imports nothing heavy.
"""

from __future__ import annotations

from onnx_run import hookimpl


_PKG = "onnx_run_optics_metasurface"


@hookimpl
def register_optics(register):
    register("metasurface", f"{_PKG}.registered:MetasurfaceFrontend", config=f"{_PKG}.config:MetasurfaceConfig",
             description="PSF-engineered Si3N4 metasurface: signed kernels as +/- sub-aperture PSF pairs")


#: (name, model, settings, description), named as "module:attribute": imported when used
ERROR_MODELS = [
    ("metasurface-width", "PillarWidthError", "PillarWidthErrorConfig",
     "pillar widths + global and local N(0, sigma) nm per device (etch bias, roughness)"),
    ("metasurface-min-feature", "MinFeatureClip", "MinFeatureConfig",
     "widths clipped to the process's minimum feature and gap"),
    ("metasurface-distance", "DistanceError", "DistanceErrorConfig",
     "metasurface-to-sensor distance + N(0, sigma_um) per device"),
    ("metasurface-shift", "LateralShift", "LateralShiftConfig",
     "sensor lateral shift N(0, sigma_um) per axis and device, PSFs recomputed exactly"),
    ("metasurface-wavelength", "WavelengthShift", "WavelengthShiftConfig",
     "illumination wavelength + N(0, sigma_nm) per channel and device"),
]


@hookimpl
def register_error_models(register):
    for name, model, settings, description in ERROR_MODELS:
        register(name, f"{_PKG}.errors:{model}", config=f"{_PKG}.errors:{settings}", description=description)


@hookimpl
def register_commands(cli):
    from onnx_run_optics_metasurface.cli import make_group

    cli.add_command(make_group())
