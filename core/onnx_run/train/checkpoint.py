"""Checkpoints that survive a kill: written atomically, loaded with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from onnx_run.errors import UserError
from onnx_run.files import atomic_path


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


class UnreadableCheckpoint(UserError):
    """A checkpoint torch cannot read safely; ``why`` says why in a few words."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"checkpoint {path}: {why}; allowed: a file written by torch.save(model.state_dict(), path)")
        self.path, self.why = path, why


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects (weights_only=True)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path}: not found") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file is a user error
        raise UnreadableCheckpoint(path, _why_unreadable(exc)) from None


def _why_unreadable(exc: Exception) -> str:
    """torch.load's failure in a few words (its own message runs to many lines and advises
    weights_only=False, which onnx-run never does)."""
    import re

    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found:
        return (f"holds a Python object ({found.group(1)}), not only tensors, and onnx-run never unpickles "
                f"arbitrary objects")
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    return f"not a torch checkpoint (torch.load failed with {type(exc).__name__})"


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """Load a user's state dict with a one-line error on missing keys or shape mismatches."""
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"{source}: expected a state dict (mapping of parameter names to tensors)")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(
            f"{source}: parameter names do not match the model: missing {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise UserError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(state[key].shape)}, "
                f"model {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)
