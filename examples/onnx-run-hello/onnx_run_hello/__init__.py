"""A minimal third-party onnx-run plugin.

It registers one error model, ``dim``, which makes a fabricated device's read-out darker
by a fixed factor, and one command, ``onnx-run hello``.
"""

import attrs
import click
from attrs import validators as v

import onnx_run
from onnx_run.components import ErrorModel, scaled_settings


@attrs.define(kw_only=True)
class DimConfig:
    """How much light the device loses (0 = none, 1 = all)."""

    loss: float = attrs.field(default=0.2, validator=[v.ge(0), v.lt(1)])

    def scaled(self, severity):
        """A device ``severity`` times as bad (``fabricate.severity``) loses that much more light."""
        return scaled_settings(self, severity, loss=1)


class Dim(ErrorModel):
    def apply_to_measurement(self, features, generator):
        return features * (1.0 - self.config.loss)


@onnx_run.hookimpl
def register_error_models(register):
    register("dim", Dim, config=DimConfig, description="read-out dimmed by a fixed loss factor")


@onnx_run.hookimpl
def register_commands(cli):
    @cli.command()
    def hello():
        """Say hello from the example plugin."""
        click.echo("Hello from onnx-run-hello")
