"""Hook implementations: the ``metasurface`` optics, its error models, and ``onnx-run metasurface``."""

from __future__ import annotations

from onnx_run import hookimpl


@hookimpl
def register_optics(register):
    from onnx_run_optics_metasurface.config import MetasurfaceConfig
    from onnx_run_optics_metasurface.export import export_frontend
    from onnx_run_optics_metasurface.frontend import MetasurfaceFrontend

    # the wiring: export.py reads the frontend, the frontend never imports its exporter
    MetasurfaceFrontend.export = export_frontend

    register("metasurface", MetasurfaceFrontend, config=MetasurfaceConfig,
             description="PSF-engineered Si3N4 metasurface: signed kernels as +/- sub-aperture PSF pairs")


@hookimpl
def register_error_models(register):
    from onnx_run_optics_metasurface.errors import ERROR_MODELS

    for name, factory, config, description in ERROR_MODELS:
        register(name, factory, config=config, description=description)


@hookimpl
def register_commands(cli):
    from onnx_run_optics_metasurface.cli import make_group

    cli.add_command(make_group())
