"""onnx-run plugin module: registers the "4f" optical frontend."""

from __future__ import annotations

from onnx_run.hookspecs import hookimpl

from onnx_run_optics_4f.config import Optics4fConfig
from onnx_run_optics_4f.frontend import Frontend4f


@hookimpl
def register_optics(register):  # type: ignore[no-untyped-def]
    register(
        "4f",
        Frontend4f,
        config=Optics4fConfig,
        description="4f system with a learnable Fourier-plane phase/amplitude mask (SLM/DOE); "
                    "incoherent tiled-PSF convolution, signed kernels as PSF pairs",
    )
