"""Hook implementations: the ``diffractive`` optics, its error models and the ``all-optical`` task."""

from onnx_run.hookspecs import hookimpl


@hookimpl
def register_optics(register):
    from onnx_run_optics_diffractive.config import DiffractiveConfig
    from onnx_run_optics_diffractive.export import export_stack
    from onnx_run_optics_diffractive.frontend import DiffractiveFrontend

    # the wiring: export.py reads the frontend, the frontend never imports its exporter
    DiffractiveFrontend.export = export_stack
    register("diffractive", DiffractiveFrontend, config=DiffractiveConfig,
             description="D2NN: L phase (or complex) layers of N x N neurons, angular-spectrum gaps, "
                         "K sensor regions (presets lin2018 0.4 THz, visible-slm 632.8 nm)")


@hookimpl
def register_error_models(register):
    from onnx_run_optics_diffractive.errors import error_models

    for name, factory, config, description in error_models():
        register(name, factory, config=config, description=description)


@hookimpl
def register_tasks(register):
    from onnx_run_optics_diffractive.alloptical import AllOpticalConfig, AllOpticalTask

    register("all-optical", AllOpticalTask, config=AllOpticalConfig,
             description="classification by one optical detector per class (Lin 2018): the class is the "
                         "brightest readout region; needs optics.num_kernels = classes")
