"""onnx-run plugin module: registers the "4f" optical frontend.

The factory and config are named as ``"module:attribute"``: listing the plugins imports
neither the frontend nor torch.
"""

from __future__ import annotations

from onnx_run.hookspecs import hookimpl


@hookimpl
def register_optics(register):  # type: ignore[no-untyped-def]
    register(
        "4f",
        "onnx_run_optics_4f.frontend:Frontend4f",
        config="onnx_run_optics_4f.config:Optics4fConfig",
        description="4f system with a learnable Fourier-plane phase/amplitude mask (SLM/DOE); "
                    "incoherent tiled-PSF convolution, signed kernels as PSF pairs",
    )
