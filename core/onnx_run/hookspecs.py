"""The plugin contract: every hook a plugin may implement.

Modelled on llm and datasette: plugins are modules with functions decorated by
``onnx_run.hookimpl``; collect-all hooks receive a ``register`` callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

import click
import pluggy

if TYPE_CHECKING:
    from onnx_run.components import RunInfo

hookspec = pluggy.HookspecMarker("onnx_run")
hookimpl = pluggy.HookimplMarker("onnx_run")

#: ``register(name, factory, config=AttrsClass | None, description="")``
Register = Callable[..., None]


@hookspec
def register_optics(register: Register) -> None:
    """Register optical frontends.

    ``factory(config) -> onnx_run.components.OpticalFrontend``; ``config`` is the attrs
    class holding the frontend's physical settings (units in the names).
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks (classification, segmentation, ...).

    ``factory(config) -> onnx_run.components.Task``.
    """


@hookspec
def register_teachers(register: Register) -> None:
    """Register electronic teacher networks.

    ``factory(config, spec: onnx_run.components.TeacherSpec) -> torch.nn.Module`` mapping raw
    images (B, C, H, W) to the task's outputs.
    """


@hookspec
def register_error_models(register: Register) -> None:
    """Register fabrication / measurement error models.

    ``factory(config) -> onnx_run.components.ErrorModel``.
    """


@hookspec
def register_distillation_losses(register: Register) -> None:
    """Register distillation losses.

    ``factory(config) -> onnx_run.components.DistillationLoss``.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click subcommands to the ``onnx-run`` command group."""


@hookspec
def on_run_start(run: RunInfo) -> None:
    """Called once when a training run (one model, one seed) starts.

    ``run`` has ``run_dir``, ``name`` and ``seed``.
    """


@hookspec
def on_epoch_end(run: RunInfo, epoch: int, metrics: Mapping[str, float]) -> None:
    """Called after every epoch with that epoch's metrics (already in metrics.jsonl)."""


@hookspec
def on_run_end(run: RunInfo, summary: Mapping[str, Any]) -> None:
    """Called once when a run finishes, with its final summary (test metrics, wall time)."""
