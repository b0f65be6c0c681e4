"""Registers the built-in error models."""

from onnx_run.hookspecs import hookimpl


@hookimpl
def register_error_models(register):
    from onnx_run.fabrication.errors import builtin_error_models

    for name, factory, config, description in builtin_error_models():
        register(name, factory, config=config, description=description)
