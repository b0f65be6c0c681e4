"""onnx-run: hybrid optical neural networks with Neural Tangent Knowledge Distillation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("onnx-run")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

from onnx_run.errors import UserError  # noqa: E402
from onnx_run.hookspecs import hookimpl  # noqa: E402

__all__ = ["UserError", "__version__", "hookimpl"]
