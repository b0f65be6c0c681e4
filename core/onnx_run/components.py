"""The small contracts every plugin component fulfils.

An optics plugin returns an :class:`OpticalFrontend`, a task plugin a :class:`Task`, and so
on. The core talks to components only through these classes, never to a plugin directly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs
import torch
from torch import nn

from onnx_run.precision import float32_region, to_float32


@attrs.frozen
class Layout:
    """How the kernels of a frontend are arranged physically.

    ``details`` holds human-readable physical numbers (sizes with units in the key names)
    for reports and for ``onnx-run estimate``.
    """

    num_kernels: int
    rows: int
    cols: int
    kernel_size_px: int
    details: Mapping[str, Any] = attrs.field(factory=dict)


class OpticalFrontend(nn.Module):
    """An optical frontend: one linear optical layer read out by a sensor.

    Input: intensities (B, C, H, W), C = ``in_channels`` (1 or 3 wavelength channels),
    (H, W) = ``input_size``. Output: sensor feature maps (B, K, H', W'), real; when the
    kernels are signed, positive/negative PSF pairs are subtracted digitally, so K is the
    number of signed kernels.
    """

    #: optional abilities this optics offers, each a method of the same name (declared, never
    #: guessed with hasattr, so that a run refuses what needs one before anything trains):
    #: ``perturb_kernels(sigma, generator)`` -> a perturbed copy (error model ``kernel-error``);
    #: ``quantise_phase(bits)`` -> a copy with 2**bits phase levels (``phase-quantisation``)
    capabilities: frozenset[str] = frozenset()
    #: wavelength channels of the input (1 monochrome, 3 RGB)
    in_channels: int = 1
    #: input image size in pixels (rows, cols)
    input_size: tuple[int, int] = (28, 28)

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # -- shape -----------------------------------------------------------------------------
    @property
    def num_kernels(self) -> int:
        return self.layout().num_kernels

    def feature_shape(self) -> tuple[int, int, int]:
        """(K, H', W') of the output, found by a dry forward pass."""
        with torch.no_grad():
            p = next(iter(self.parameters()), None)
            dev = p.device if p is not None else torch.device("cpu")
            out = self(torch.zeros(1, self.in_channels, *self.input_size, device=dev))
        return tuple(out.shape[1:])  # type: ignore[return-value]

    # -- physics -----------------------------------------------------------------------------
    def layout(self) -> Layout:
        """The physical arrangement of the kernels."""
        raise NotImplementedError

    def kernels(self) -> torch.Tensor:
        """Effective signed kernels (K, C, kh, kw) in sensor pixels, for figures and reports."""
        raise NotImplementedError

    # -- life cycle ----------------------------------------------------------------------------
    def realise(self, *, progress: bool = True) -> tuple["OpticalFrontend", dict[str, Any]]:
        """Turn learned kernels into a physical design; returns (realised frontend, report).

        The default realisation is exact: the design already is physical.
        """
        return copy.deepcopy(self), {"exact": True}

    def load_realised(self, state: dict[str, Any]) -> "OpticalFrontend":
        """Rebuild a realised frontend from the state dict of one returned by :meth:`realise`
        (the pipeline stores state dicts, never pickled modules)."""
        clone = copy.deepcopy(self)
        clone.load_state_dict(state)
        return clone

    def frozen(self) -> "OpticalFrontend":
        """A copy with every parameter frozen (a fabricated device cannot learn)."""
        clone = copy.deepcopy(self)
        for p in clone.parameters():
            p.requires_grad_(False)
        return clone

    def export(self, out_dir: Path) -> list[Path]:
        """Write the design (arrays, previews, layouts) to ``out_dir``; return the files."""
        return []


@attrs.frozen
class TeacherSpec:
    """What a teacher factory needs to know about the data it will see."""

    task_kind: str  # "classification" | "segmentation"
    channels: int
    image_size: tuple[int, int]
    num_outputs: int  # classes (classification) or mask classes (segmentation)


class Task:
    """A learning task: data, backend, loss, metrics and the NTK output reduction.

    Its suggestions for the other sections (:meth:`optics_defaults`, :meth:`core_defaults`,
    :meth:`distill_defaults`, the default teacher) may live on its config class, which then
    declares ``task_kind`` (a ``ClassVar``): resolving a run (``onnx-run config show``) then reads
    them from the config and never builds the task, nor imports its module. The methods here
    read them from there; a task may override them instead (then the task is built to ask).
    """

    kind: str = "classification"
    #: the metric reported in results tables, higher is better
    primary_metric: str = "accuracy"
    #: teacher used when the config does not name one (or its config's ``default_teacher()``)
    default_teacher: str = "lenet"

    def __init__(self, config: Any):
        self.config = config
        teacher = getattr(config, "default_teacher", None)
        if callable(teacher):
            self.default_teacher = teacher()

    def _from_config(self, name: str) -> dict[str, Any]:
        hook = getattr(self.config, name, None)
        return dict(hook()) if callable(hook) else {}

    def optics_defaults(self) -> dict[str, Any]:
        """Optics settings this task suggests (e.g. ``input_size_px``, ``num_kernels``).

        Applied to the chosen optics config only for keys it has and the user did not set.
        """
        return self._from_config("optics_defaults")

    def core_defaults(self) -> dict[str, dict[str, Any]]:
        """Settings of the core's sections this task suggests, ``{section: {key: value}}``
        (classification: a backend learning rate of 0.01, measured best at 15 epochs on digits).

        They sit above the built-in defaults and below a run preset and the user's settings.
        """
        return self._from_config("core_defaults")

    def distill_defaults(self) -> dict[str, dict[str, Any]]:
        """Settings this task suggests for distillation losses, ``{loss name: {key: value}}``
        (segmentation: NTKD kernels on 16 samples of each batch, what fits a CPU).

        Applied like :meth:`optics_defaults`: only keys the loss's config has and the user did not set.
        """
        return self._from_config("distill_defaults")

    def datasets(self, *, image_size: tuple[int, int], channels: int, seed: int) -> Any:
        """Train/val/test splits (objects with ``train``, ``val``, ``test`` TensorDatasets)."""
        raise NotImplementedError

    def num_outputs(self, splits: Any) -> int:
        raise NotImplementedError

    def chance_score(self, splits: Any) -> float | None:
        """The primary metric on the validation split of a predictor that ignores the image
        (classification: always the most frequent class): a trained network near it learned
        nothing. None where the task does not say."""
        return None

    def build_backend(self, feature_shape: tuple[int, int, int], num_outputs: int) -> nn.Module:
        """The digital backend mapping optical features (B, K, H', W') to outputs."""
        raise NotImplementedError

    def estimate_settings(self) -> dict[str, Any]:
        """Defaults of ``estimate_design`` for this task (``width_multiplier``, ``max_train``,
        ``max_eval``, ``inits``, ``warmup_steps``, ``directions``) where the generic ones would
        not fit a CPU or are not validated for it: a dense task's per-sample gradients are O x
        the decoder's parameters. Explicit CLI options win.
        An optional ``"curve"`` dict gives smaller sizes for the pipeline's estimate curve (every
        point of the curve, the design's included, then uses them)."""
        return {}

    def backend_for_estimate(self, feature_shape: tuple[int, int, int], num_outputs: int,
                             width_multiplier: int) -> nn.Module:
        """The backend of ``onnx-run estimate``'s reference network, hidden widths multiplied
        towards the wide limit. Default: the ordinary backend."""
        return self.build_backend(feature_shape, num_outputs)

    def pixel_readout(self, backend: nn.Module, features: torch.Tensor) -> torch.Tensor | None:
        """For outputs per pixel: what the backend's last layer, a linear map at every pixel (a
        1x1 convolution), reads there, (B, D, H, W) at the outputs' size. The estimate then
        regresses pixel by pixel with that layer's NTK (one row a pixel, D + 1 features: exact)
        instead of one row a sample with a kernel between whole outputs, which can only predict
        a mask as a weighted sum of training masks. None (the default): one row a sample."""
        return None

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Metrics over a whole evaluation set (outputs concatenated over batches)."""
        raise NotImplementedError

    def ntk_reduce(self, outputs: torch.Tensor) -> torch.Tensor:
        """Reduce outputs (B, ...) to (B, O) for the empirical NTK; classification: logits."""
        return outputs.flatten(1)

    def soft_targets(self, outputs: torch.Tensor) -> torch.Tensor:
        """Logits to which KD temperature-softmax applies, shaped (N, classes)."""
        return outputs


class HybridModel(nn.Module):
    """Optical frontend followed by a digital backend; parameters ``frontend.*``, ``backend.*``.

    Under ``torch.autocast`` (``run.precision`` bf16/fp16) only the backend runs in low
    precision: the frontend always sees float32 input with autocast off, so its fields, FFTs
    and PSF convolutions stay float32/complex64 (see :mod:`onnx_run.precision`).
    """

    def __init__(self, frontend: OpticalFrontend, backend: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with float32_region():
            features = self.frontend(to_float32(x))
        return self.backend(features)

    def backend_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if n.startswith("backend.") and p.requires_grad]


@attrs.define
class GlobalBatch:
    """Under torchrun, the whole batch that this process holds a share of.

    ``rows(t)``: every process's rows of a per-sample tensor ``t`` (rows = this process's
    samples), in the global batch's order, differentiable (each process's rows get the
    gradients the same loss sends them on every process; DDP's average makes that the gradient
    of the loss on the whole batch). ``teacher_kernel()``: the teacher NTK of the whole batch,
    in the same order.
    """

    rows: Callable[[torch.Tensor], torch.Tensor]
    teacher_kernel: Callable[[], torch.Tensor] | None = None


@attrs.define
class DistillContext:
    """Everything a distillation loss may need for one batch.

    ``teacher_outputs`` are computed without graph; ``teacher_kernel`` (if the loss asked for
    it through ``needs_teacher_kernel``) is the frozen teacher's NTK on this batch.
    ``ntk_params`` names the student parameters the NTK is taken over (all trainable ones in
    training; the backend's only when fine-tuning after fabrication). ``global_batch`` is set
    under torchrun with several processes (None otherwise): ``x`` is then this process's share.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    student: nn.Module
    student_outputs: torch.Tensor | None  # None if the loss computes them (computes_outputs)
    task: Task
    teacher: nn.Module | None = None
    teacher_outputs: torch.Tensor | None = None
    teacher_kernel: Callable[[], torch.Tensor] | None = None
    ntk_params: list[str] | None = None
    student_input: torch.Tensor | None = None  # what the student is fed if not x (captures)
    global_batch: GlobalBatch | None = None
    #: how far training has gone, in [0, 1): step / total steps (for weights that follow a schedule)
    progress: float = 0.0


#: what a loss logs per step: floats or 0-dim tensors (tensors stay on the device until the
#: epoch ends: on a GPU, a float per step would wait for the step to finish)
Logs = dict[str, "float | torch.Tensor"]


class DistillationLoss:
    """A training objective; returns (scalar loss, logs: floats or detached 0-dim tensors)."""

    #: True when the loss needs the teacher (training then builds or loads one)
    needs_teacher: bool = False
    #: True when the loss reads ``ctx.teacher_outputs`` (only asked when ``needs_teacher``): a loss
    #: that needs the teacher for its kernel alone sets False and no step runs the teacher forward
    needs_teacher_outputs: bool = True
    #: True when the loss needs the teacher's NTK on each batch
    needs_teacher_kernel: bool = False
    #: True when the loss runs the student itself and sets ``ctx.student_outputs``
    computes_outputs: bool = False
    #: the grid ``onnx-run compare`` searches for this loss unless the user gives one
    #: (``{"section.key": [values]}``, e.g. ``{"distill.kd.temperature": [2.0, 4.0]}``); every
    #: method of a comparison needs a grid of the same size
    search_space: dict[str, list[Any]] = {}

    def __init__(self, config: Any):
        self.config = config

    @property
    def teacher_folds(self) -> int:
        """K >= 2: ``ctx.teacher_outputs`` on a training image come from the one of K fold teachers
        that was trained without that image (out-of-fold targets; the training builds and caches
        them); 0: from the teacher itself."""
        return 0

    def __call__(self, ctx: DistillContext) -> tuple[torch.Tensor, Logs]:
        raise NotImplementedError


class ErrorModel:
    """A deviation of a real device from its design.

    ``apply_to_frontend`` perturbs a frontend once per fabricated device (static errors,
    sampled from ``generator``); ``apply_to_measurement`` perturbs each capture (noise).
    Either may be the identity. Its config class may define ``scaled(severity)``: the settings
    of a device ``severity`` times as bad (``fabricate.severity``; :func:`scaled_settings`).
    """

    #: the optics capabilities (:attr:`OpticalFrontend.capabilities`) this model calls; a run
    #: whose optics lack one is refused when it is resolved
    requires: frozenset[str] = frozenset()

    def __init__(self, config: Any):
        self.config = config

    def apply_to_frontend(self, frontend: OpticalFrontend, generator: torch.Generator) -> OpticalFrontend:
        return frontend

    def apply_to_measurement(self, features: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return features


def optics_of(device: nn.Module) -> OpticalFrontend:
    """The optics under the wrappers error models put around it (each wrapper keeps the
    module it wraps as ``.inner``): what an error model that needs a capability works on."""
    inner = device
    while not isinstance(inner, OpticalFrontend) and isinstance(getattr(inner, "inner", None), nn.Module):
        inner = inner.inner
    if not isinstance(inner, OpticalFrontend):
        raise TypeError(f"{type(device).__name__} wraps no OpticalFrontend (wrappers keep theirs as .inner)")
    return inner


def replace_optics(device: nn.Module, make: Callable[[OpticalFrontend], OpticalFrontend]) -> nn.Module:
    """``device`` with its optics (:func:`optics_of`) replaced by ``make(optics)``, the wrappers
    kept: how an error model changes the optics after others have wrapped them."""
    optics = optics_of(device)
    if optics is device:
        return make(optics)
    parent = device
    while parent.inner is not optics:
        parent = parent.inner
    parent.inner = make(optics)
    return device


def scaled_settings(config: Any, severity: float, **exponents: float) -> Any:
    """``config`` with each named magnitude multiplied by ``severity ** exponent``: 1 for the
    size of a deviation (a sigma, a shift), -2 for a count whose inverse square root is the
    deviation (photo-electrons: shot noise grows as severity). The config's validators run."""
    # 12 significant digits: 0.1 x 3 is written 0.3 in device.json and results.md, not 0.30000000000000004
    return attrs.evolve(config, **{k: float(f"{getattr(config, k) * severity ** e:.12g}") for k, e in exponents.items()})


@attrs.define
class RunInfo:
    """What lifecycle hooks (``on_run_start``, ``on_epoch_end``, ``on_run_end``) see about a run:
    part of the contract, so a logger plugin needs nothing from the training loop."""

    run_dir: Path
    name: str
    seed: int
    config: dict[str, Any] = attrs.field(factory=dict)
