"""Mixed precision where the physics allows it (``run.precision``).

- ``fp32`` (default): everything in float32 / complex64.
- ``bf16``: the digital parts (the backend, the teacher network) run under
  ``torch.autocast(dtype=torch.bfloat16)``, on CPU and CUDA; no gradient scaling.
- ``fp16``: the same with float16, CUDA only, with a ``torch.amp.GradScaler`` (steps whose
  gradients overflow are skipped).

The optical frontend always runs in float32 / complex64 (:class:`HybridModel` switches autocast
off around it, and casts a half-precision input back to float32): bf16 keeps 8 significant bits,
so a phase near 2 pi would be off by up to ~0.01 rad before any propagation, and the FFTs,
interference and PSF convolutions of the optics sum many such terms. The empirical NTK
(:mod:`onnx_run.ntk`) is computed in float32 too (:func:`float32_region`): NTKD compares Gram
matrices of per-sample gradients, sums of many products that bf16 would round to ~0.4 %.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from onnx_run.errors import UserError

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_AUTOCAST_DEVICES = ("cpu", "cuda")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision setting; None for fp32 (no autocast)."""
    try:
        return _DTYPES[precision]
    except KeyError:
        raise UserError(f"run.precision: unknown value {precision!r}; allowed: {', '.join(PRECISIONS)}") from None


def check_precision(precision: str, device: torch.device | str) -> str:
    """Refuse a precision the device cannot run (one-line UserError); return the precision."""
    autocast_dtype(precision)
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise UserError(f"run.precision: 'fp16' needs a CUDA device, but this run uses {kind!r}; "
                        f"allowed on {kind}: 'fp32' or 'bf16'")
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the digital parts under ``precision`` (a no-op for fp32)."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def make_grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled for fp16 only (bf16 has float32's exponent range: no scaling)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def autocast_active() -> bool:
    return any(torch.is_autocast_enabled(kind) for kind in _AUTOCAST_DEVICES)


@contextlib.contextmanager
def float32_region() -> Iterator[None]:
    """Switch autocast off (for every device type where it is on) inside the block.

    Used around the optical frontend and the NTK computations. A no-op outside autocast.
    """
    with contextlib.ExitStack() as stack:
        for kind in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(kind):
                stack.enter_context(torch.autocast(kind, enabled=False))
        yield


def to_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision floats to float32; float32/float64/complex/integer tensors unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


__all__ = ["PRECISIONS", "autocast", "autocast_active", "autocast_dtype", "check_precision", "float32_region",
           "make_grad_scaler", "to_float32"]
