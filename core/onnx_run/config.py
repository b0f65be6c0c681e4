"""Run configuration: attrs classes, TOML files, ``--set`` overrides, cattrs structuring.

A run config is a TOML document with one table per section. Core sections (``run``,
``train``, ``teacher_train``, ...) map to attrs classes here; component sections
(``optics``, ``task``, ``teacher``, ``distill``) hold ``name`` plus that component's own
settings. Structuring happens in two steps: the component name is looked up in the plugin
registry first, then the remaining keys are structured into the component's config class.
Every mistake becomes a one-line :class:`UserError` naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import inspect
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Mapping

import attrs
import cattrs
import tomli_w
from attrs import validators as v

from onnx_run.errors import UserError

# -- core sections -----------------------------------------------------------------------------


def _folder_name(value: str) -> None:
    if not re.fullmatch(r"[\w.+-]*", value) or value in (".", ".."):
        raise ValueError(f"'name' must be one folder name (letters, digits, . _ + -), got {value!r}")


@attrs.define(kw_only=True)
class RunSettings:
    """Where and how a run happens."""

    seed: int = attrs.field(default=0, validator=v.ge(0))
    seeds: int = attrs.field(default=1, validator=[v.ge(1), v.le(100)])
    out: str = "runs"
    #: the run directory's name under ``out`` ("" = optics-task-dataset): one folder name
    name: str = attrs.field(default="", validator=lambda _i, _a, value: _folder_name(value))
    device: str = attrs.field(default="cpu", validator=v.in_(["cpu", "cuda", "auto"]))
    progress: bool = True
    #: torch's CPU threads; 0: the cores other processes leave free at the start (train.loop.auto_threads),
    #: fixed for the run at its start (run.json), so that a resume computes with the same count
    threads: int = attrs.field(default=0, validator=[v.ge(0), v.le(256)])
    #: autocast dtype of the digital parts (backend, teacher): fp32, bf16 (CPU/CUDA), fp16 (CUDA);
    #: the optics and the NTK always run in float32/complex64 (onnx_run.precision)
    precision: str = attrs.field(default="fp32", validator=v.in_(["fp32", "bf16", "fp16"]))
    #: a named set of settings under the user's own (``--preset paper``); "" = none. See :data:`PRESETS`
    preset: str = ""


@attrs.define(kw_only=True)
class TrainSettings:
    """Optimiser, schedule and length of one training."""

    epochs: int = attrs.field(default=15, validator=[v.ge(1), v.le(10000)])
    batch_size: int = attrs.field(default=64, validator=v.ge(1))
    lr: float = attrs.field(default=2e-3, validator=v.gt(0))
    optics_lr: float = attrs.field(default=2e-2, validator=v.gt(0))
    optimizer: str = attrs.field(default="adam", validator=v.in_(["adam", "adamw", "sgd"]))
    weight_decay: float = attrs.field(default=0.0, validator=v.ge(0))
    schedule: str = attrs.field(default="cosine", validator=v.in_(["none", "cosine", "step"]))
    max_train: int = attrs.field(default=0, validator=v.ge(0))  # 0: the whole training split
    grad_clip: float = attrs.field(default=0.0, validator=v.ge(0))  # 0: off


@attrs.define(kw_only=True)
class TeacherTrainSettings(TrainSettings):
    """Training of the electronic teacher (cached; trained once per dataset/arch/seed)."""

    epochs: int = attrs.field(default=20, validator=[v.ge(1), v.le(10000)])
    lr: float = attrs.field(default=3e-3, validator=v.gt(0))
    batch_size: int = attrs.field(default=64, validator=v.ge(1))


def _method_list(instance: Any, attribute: Any, value: list[str]) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must name at least one method, e.g. none,kd,ntkd")
    if len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must not repeat a method: {value}")


@attrs.define(kw_only=True)
class StudentSettings:
    """Which distillation losses to train students with (each gets a row in the results)."""

    methods: list[str] = attrs.field(factory=lambda: ["none", "kd", "ntkd"], validator=_method_list)


def _default_errors() -> list[dict[str, Any]]:
    return [
        {"name": "brightness", "sigma": 0.1},
        {"name": "misalignment", "shift_px": 0.5, "rotation_deg": 1.0},
        {"name": "kernel-error", "sigma": 0.1},
        {"name": "sensor-noise"},
    ]


@attrs.define(kw_only=True)
class FabricateSettings:
    """Which trained student becomes a device, and the error models of its fabrication.

    ``errors``: a list of tables ``{name = "...", <settings>}`` of registered error models,
    applied in order; ``severity``: every error's magnitude times this (each model's
    ``scaled(severity)``: 2 = a device twice as bad); ``devices``: fabricated devices per
    student seed, each sampled from ``seed + index``.
    """

    student: str = "ntkd"
    errors: list[dict[str, Any]] = attrs.field(factory=_default_errors)
    severity: float = attrs.field(default=1.0, validator=[v.gt(0), v.le(100)])
    devices: int = attrs.field(default=1, validator=[v.ge(1), v.le(100)])
    seed: int = attrs.field(default=1000, validator=v.ge(0))


@attrs.define(kw_only=True)
class FinetuneSettings(TrainSettings):
    """Backend-only compensation after fabrication, on ``fraction`` of the training images
    captured through the device. ``methods``: none (no compensation), e2e (task loss), kd,
    ntkd (NTK w.r.t. the backend parameters, teacher on raw images; settings from
    [distill.ntkd] with ``distill`` over them); ``teacher`` says which teacher. ``lr_grid``:
    when given, every method but none is fine-tuned at each of these learning rates and the one
    best on the captured validation images is kept (the same budget for every method; test is
    read once, for the chosen lr)."""

    methods: list[str] = attrs.field(factory=lambda: ["none", "e2e", "ntkd"], validator=_method_list)
    fraction: float = attrs.field(default=0.1, validator=[v.gt(0), v.le(1)])
    epochs: int = attrs.field(default=15, validator=[v.ge(1), v.le(10000)])
    lr: float = attrs.field(default=1e-3, validator=v.gt(0))
    batch_size: int = attrs.field(default=64, validator=v.ge(1))
    lr_grid: list[float] = attrs.field(factory=list, validator=v.deep_iterable(
        v.and_(v.instance_of((int, float)), v.gt(0), v.le(10)), v.instance_of(list)))
    #: whose knowledge kd and ntkd distil into the backend: "design" (the student as designed: its
    #: realised, error-free frontend and its trained backend, on the raw images: what the device
    #: should have computed, in the backend's own parametrisation) or "teacher" (the run's
    #: electronic teacher on the raw images, the paper's choice); docs/fabrication.md measures both:
    #: from the design KD and NTKD beat the task loss, from the teacher they do not
    teacher: str = attrs.field(default="design", validator=v.in_(["teacher", "design"]))
    #: the compensation's own settings of its distillation losses, over ``[distill.<name>]``
    #: (which the students keep): e.g. ``{ntkd = {kd_weight = 0.5}}``. The default is what
    #: validation chose for the design teacher (docs/fabrication.md); ``{}`` keeps the students'
    distill: Any = attrs.field(factory=lambda: {key: dict(table) for key, table in DESIGN_DISTILL.items()},
                               validator=lambda _, a, value: _loss_tables(a.name, value))


#: finetune.distill's default: the settings chosen on the captured validation images of Fashion-MNIST
#: devices for compensation from the design (benchmarks/compensation/teachers.py --points 8: the
#: first student seed's 3 metasurface devices, 8 settings per loss, each at 4 learning rates). For
#: NTKD validation chose a setting with the output term (``kd_weight``) on both optics, among 8 with
#: it and 8 without (docs/fabrication.md); this is the metasurface's
DESIGN_DISTILL: dict[str, dict[str, Any]] = {
    "kd": {"temperature": 4.0, "alpha": 0.9},
    "ntkd": {"alpha": 0.5, "kd_weight": 0.5, "kd_temperature": 4.0, "beta": 10.0, "beta_schedule": "constant"},
}


def _loss_tables(name: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(t, dict) for t in value.values()):
        raise ValueError(f"'{name}' must be a table of settings per loss, e.g. {{ntkd = {{kd_weight = 0.5}}}}")


@attrs.define(kw_only=True)
class EstimateSettings:
    """Sizes of the accuracy estimate (stage ``estimate``, ``onnx-run estimate``, ``onnx-run design``).

    0 means automatic: the task's ``estimate_settings()`` (segmentation: up to 1 000 val/test
    images, a warm-up of half the run), else 2 students, the run's own backend widths, every
    training image, up to 10 000 val/test images, R = 256 sketch directions. ``warmup_steps``: -1
    is automatic (``warmup_percent`` of the run's own training steps, default 5, at most 500
    steps), 0 the random-optics estimate (no training at all).
    """

    inits: int = attrs.field(default=0, validator=[v.ge(0), v.le(64)])
    width_multiplier: int = attrs.field(default=0, validator=[v.ge(0), v.le(64)])
    max_train: int = attrs.field(default=0, validator=[v.ge(0), v.le(1_000_000)])
    max_eval: int = attrs.field(default=0, validator=[v.ge(0), v.le(1_000_000)])
    warmup_steps: int = attrs.field(default=-1, validator=[v.ge(-1), v.le(100_000)])
    warmup_percent: int = attrs.field(default=0, validator=[v.ge(0), v.le(100)])
    directions: int = attrs.field(default=0, validator=[v.ge(0), v.le(4096)])
    #: the pipeline also estimates 1, 2, 4, ... kernels below the design's count: the estimate
    #: curve (figures/estimate_curve.png) shows where more kernels stop paying
    curve: bool = True


def _search_space(instance: Any, attribute: Any, value: Any) -> None:
    """``{method: {"section.key": [values]}}``, checked here (not by cattrs) so that every shape
    mistake names the method and the key."""
    if not isinstance(value, dict):
        raise ValueError(f"'{attribute.name}' must be a table of methods, e.g. [compare.space.kd], got {value!r}")
    for method, grid in value.items():
        if not isinstance(grid, dict):
            raise ValueError(f"'{attribute.name}' entry {method!r} must be a table {{\"section.key\" = [values]}}, "
                             f"got {grid!r}")
        for key, values in grid.items():
            if "." not in key:
                raise ValueError(f"'{attribute.name}' entry {method!r}: {key!r} is not a dotted setting such as "
                                 f"distill.kd.temperature")
            if not isinstance(values, list) or not values:
                raise ValueError(f"'{attribute.name}' entry {method!r}: {key!r} must list at least one value")


@attrs.define(kw_only=True)
class CompareSettings:
    """The comparison protocol of ``onnx-run compare`` (docs/ntk.md, "Comparing methods").

    Each method in ``students.methods`` gets a grid over its own settings (``space``:
    ``{method: {"section.key": [values]}}``; a method left out takes its loss's default grid);
    every grid must have the same number of points (the same search budget). A trial trains
    ``search_seeds`` seeds (run.seed + 100 + i: never the final seeds) on ``search_max_train``
    training images for ``search_epochs`` epochs (0: as train.*) and is scored on the validation
    split; the best trial of each method is then trained with the ``run.seeds`` final seeds and
    tested once. ``recipe``: see below.
    """

    search_seeds: int = attrs.field(default=1, validator=[v.ge(1), v.le(20)])
    search_epochs: int = attrs.field(default=0, validator=[v.ge(0), v.le(10000)])
    search_max_train: int = attrs.field(default=0, validator=v.ge(0))
    space: Any = attrs.field(factory=dict, validator=_search_space)  # checked by _search_space
    #: the method searched first whose chosen ``train.*`` settings (the training recipe:
    #: learning rates) every other method then trains with, as it shares the data and epochs;
    #: "" (or a method not compared): each method keeps the run's own train.* settings
    recipe: str = "none"


#: core section name -> attrs class; later stages add theirs with :func:`add_section`
SECTIONS: dict[str, type] = {
    "run": RunSettings,
    "train": TrainSettings,
    "teacher_train": TeacherTrainSettings,
    "students": StudentSettings,
    "fabricate": FabricateSettings,
    "finetune": FinetuneSettings,
    "estimate": EstimateSettings,
    "compare": CompareSettings,
}

#: sections left out of a written config while they hold their defaults (added after run
#: directories existed whose config.toml must still match on --resume)
QUIET_SECTIONS: frozenset[str] = frozenset({"compare"})

#: component section -> (registry kind, default name or None = required)
COMPONENT_SECTIONS: dict[str, tuple[str, str | None]] = {
    "task": ("tasks", "classification"),
    "optics": ("optics", "4f"),
    "teacher": ("teachers", None),  # default: the task's default_teacher
}

#: sections holding one table per method name, e.g. ``[distill.ntkd]``: section ->
#: (registry kind, the core setting listing the methods in use)
METHOD_SECTIONS: dict[str, tuple[str, str]] = {
    "distill": ("distillation_losses", "students.methods"),
}

#: convenience flags -> dotted keys
FLAG_KEYS: dict[str, str] = {
    "optics": "optics.name",
    "task": "task.name",
    "dataset": "task.dataset",
    "teacher": "teacher.name",
    "distill": "students.methods",
    "seed": "run.seed",
    "seeds": "run.seeds",
    "out": "run.out",
    "device": "run.device",
    "epochs": "train.epochs",
    "preset": "run.preset",
}

#: Run presets (``--preset NAME``, ``run.preset``): name -> core section -> settings. They sit
#: under the user's settings (config file, ``--set``, flags) and above the built-in defaults;
#: each component adds its own section's values through an optional classmethod
#: ``run_presets(settings)`` on its config class (docs/plugins.md). ``paper``: the sizes of the
#: NTKD paper (batch 128 for classification, 5 seeds; epochs are ours: the paper gives none),
#: meant for a GPU (``run.device = "auto"``).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "run": {"seeds": 5, "device": "auto"},
        "train": {"batch_size": 128, "epochs": 100},
        "teacher_train": {"batch_size": 128, "epochs": 50},
        "students": {"methods": ["none", "kd", "ntkd"]},
        "finetune": {"batch_size": 128, "epochs": 50, "fraction": 0.1, "methods": ["none", "e2e", "ntkd"]},
    },
}

#: what a preset changes for a task kind (``Task.kind``), on top of :data:`PRESETS`
PRESETS_BY_TASK_KIND: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "paper": {
        # the paper trains segmentation with batch 8
        "segmentation": {
            "train": {"batch_size": 8, "epochs": 40},
            "teacher_train": {"batch_size": 8, "epochs": 40},
            "finetune": {"batch_size": 8, "epochs": 20},
        },
    },
}


def add_section(name: str, cls: type) -> None:
    """Register a core section (used by the pipeline stages)."""
    SECTIONS[name] = cls


# -- structuring -------------------------------------------------------------------------------


def _strict_converter() -> cattrs.Converter:
    """cattrs converter that refuses lossy coercions (2.5 -> int, "12" -> float, 1 -> bool)."""
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def _int(value: Any, _: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        return value

    def _float(value: Any, _: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return float(value)

    def _bool(value: Any, _: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value

    def _str(value: Any, _: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value

    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook(str, _str)
    return conv


converter = _strict_converter()

_VALIDATOR_MSG = re.compile(r"^'(?P<key>\w+)' (?P<rest>.*)$", re.S)


def _first_error(exc: BaseException, path: str, cls: type) -> str:
    """Turn a cattrs/attrs exception tree into one line naming the key."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        allowed = ", ".join(f.name for f in attrs.fields(cls))
        extra = ", ".join(sorted(exc.extra_fields))
        return f"{path}: unknown key {extra!r}; allowed keys: {allowed}"
    if isinstance(exc, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
        for sub in exc.exceptions:
            notes = getattr(sub, "__notes__", [])
            sub_path = path
            sub_cls = cls
            for note in notes:
                m = re.search(r"@ attribute (\w+)", str(note))
                if m:
                    sub_path = f"{path}.{m.group(1)}"
                    fld = getattr(attrs.fields(cls), m.group(1), None) if attrs.has(cls) else None
                    if fld is not None and attrs.has(fld.type if isinstance(fld.type, type) else object):
                        sub_cls = fld.type
                m = re.search(r"@ index (\d+)", str(note))
                if m:
                    sub_path = f"{path}[{m.group(1)}]"
            return _first_error(sub, sub_path, sub_cls)
    msg = " ".join(str(exc.args[0] if exc.args else exc).split())
    m = _VALIDATOR_MSG.match(msg)
    if m:
        rest = m.group("rest")
        # attrs: "'lr' must be > 0: -1.0" -> "must be > 0, got -1.0"
        rest = re.sub(r"^(must be [^:]*): (.*)$", r"\1, got \2", rest)
        return f"{path}.{m.group('key')}: {rest}"
    return f"{path}: {msg}"


def _non_finite(value: Any, key: str) -> tuple[str, float] | None:
    """The first NaN or infinity in a setting (nested tables and lists too), with its key."""
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    items = value.items() if isinstance(value, Mapping) else \
        enumerate(value) if isinstance(value, (list, tuple)) else ()
    for k, item in items:
        found = _non_finite(item, f"{key}[{k}]" if isinstance(k, int) else f"{key}.{k}")
        if found:
            return found
    return None


def _lists_from_text(data: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """A list setting given as text (``--set students.methods=kd`` or ``"none,kd"``) read as
    the comma-separated list it means, not as a list of its letters."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - a plugin's annotation that names an unimported type: leave as is
        return dict(data)
    out = dict(data)
    for k, value in data.items():
        hint = hints.get(k)
        if typing.get_origin(hint) is not list or isinstance(value, (list, tuple, Mapping)):
            continue
        if typing.get_origin(typing.get_args(hint)[0]) is dict:  # tables: no text form
            raise ValueError(f"'{k}' must be a list of tables, e.g. [{{name = \"brightness\", sigma = 0.1}}], "
                             f"got {value!r}")
        if isinstance(value, str):  # "0.01,0.03" for a list of numbers: each item a TOML literal
            text = typing.get_args(hint)[:1] == (str,)
            out[k] = [p.strip() if text else parse_value(p.strip()) for p in value.split(",") if p.strip()]
        else:  # one value for a list: --set task.hidden=64
            out[k] = [value]
    return out


def structure_section(data: Mapping[str, Any], cls: type, path: str) -> Any:
    """Structure one TOML table into its attrs class, or raise a one-line UserError."""
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: expected a table of settings, got {data!r}")
    found = _non_finite(dict(data), path)
    if found:
        raise UserError(f"{found[0]}: expected a finite number, got {found[1]}")
    try:
        return converter.structure(_lists_from_text(data, cls), cls)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line for the user
        raise UserError(_first_error(exc, path, cls)) from None


def unstructure(obj: Any) -> dict[str, Any]:
    return converter.unstructure(obj)


# -- sources: TOML, flags, --set -----------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``3``, ``2.5``, ``true``, ``[1, 2]``, ``"x"``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) < 2 or not all(parts):
        raise UserError(f"--set {key}: expected section.key=value, e.g. train.epochs=5")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"config file {p}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {p}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {p}: not UTF-8 text; allowed: a TOML file") from None
    except IsADirectoryError:
        raise UserError(f"config file {p}: is a directory; allowed: a TOML file") from None
    except OSError as exc:
        raise UserError(f"config file {p}: cannot be read ({exc.strerror})") from None


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# -- the resolved config -------------------------------------------------------------------------


@attrs.define
class ComponentChoice:
    """A chosen component: its registered name and its structured config. ``component`` is the
    registered :class:`~onnx_run.plugins.Component`; its factory is imported when first built
    (``config show`` imports no component's heavy module)."""

    name: str
    config: Any
    component: Any = attrs.field(repr=False, default=None)

    @property
    def factory(self) -> Any:
        return self.component.factory

    def build(self, *args: Any) -> Any:
        return self.factory(self.config, *args)


@attrs.define
class RunConfig:
    """The fully resolved configuration of a run."""

    sections: dict[str, Any]
    components: dict[str, ComponentChoice]
    methods: dict[str, dict[str, ComponentChoice]] = attrs.field(factory=dict)
    #: one line per thing the user should know about how the config was resolved (a chosen
    #: component without values for the run preset); the CLI prints them to stderr
    notes: list[str] = attrs.field(factory=list)

    def __getattr__(self, name: str) -> Any:
        sections = object.__getattribute__(self, "sections")
        if name in sections:
            return sections[name]
        comps = object.__getattribute__(self, "components")
        if name in comps:
            return comps[name]
        methods = object.__getattribute__(self, "methods")
        if name in methods:
            return methods[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SECTIONS:
            if name in self.sections:
                if name in QUIET_SECTIONS and self.sections[name] == SECTIONS[name]():
                    continue  # only written when set: run directories made before it still resume
                out[name] = unstructure(self.sections[name])
        for name, choice in self.components.items():
            table = {"name": choice.name}
            if choice.config is not None:
                table.update(unstructure(choice.config))
            out[name] = table
        for section, choices in self.methods.items():
            out[section] = {
                m: (unstructure(c.config) if c.config is not None else {}) for m, c in choices.items()
            }
        return _drop_none(out)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(x) for k, x in obj.items() if x is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(x) for x in obj]
    return obj


class _Preset:
    """The run preset while a config is resolved: the values it adds under the user's settings,
    the names the core and the chosen components know, and notes for components without it."""

    def __init__(self, raw: Mapping[str, Any]):
        run = raw.get("run", {})
        name = run.get("preset", "") if isinstance(run, Mapping) else ""
        if not isinstance(name, str):
            raise UserError(f"run.preset: expected a string (a preset name), got {name!r}")
        self.name = name
        self.known: set[str] = set(PRESETS)
        self.notes: list[str] = []

    def core(self, task_kind: str) -> dict[str, dict[str, Any]]:
        """The core sections' values for a task of kind ``task_kind``."""
        if not self.name:
            return {}
        out = merge({}, PRESETS.get(self.name, {}))
        out = merge(out, PRESETS_BY_TASK_KIND.get(self.name, {}).get(task_kind, {}))
        _check_core_tree(out, f"run preset {self.name!r}", UserError)
        return out

    def component(self, comp: Any, section: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The values of the chosen component ``comp`` for its own section, given the settings
        already decided there (the user's and, for the optics, the task's suggestions)."""
        from onnx_run.plugins import KIND_LABELS, PluginError

        if not self.name or comp.config is None:
            return {}
        label = f"{KIND_LABELS.get(comp.kind, comp.kind)} {comp.name!r}"
        hook = getattr(comp.config, "run_presets", None)
        if hook is None:
            self.notes.append(f"preset {self.name!r}: {label} defines no run presets; its own defaults are used "
                              f"([{section}])")
            return {}
        try:
            offered = hook(dict(settings))
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin bug becomes one line naming the plugin
            raise PluginError(f"{label} (plugin {comp.plugin!r}): run_presets() failed: "
                              f"{type(exc).__name__}: {exc}") from None
        if not isinstance(offered, Mapping) or not all(isinstance(v, Mapping) for v in offered.values()):
            raise PluginError(f"{label} (plugin {comp.plugin!r}): run_presets() must return "
                              f"{{preset name: {{key: value}}}}, got {offered!r}")
        self.known.update(offered)
        values = offered.get(self.name)
        if values is None:
            self.notes.append(f"preset {self.name!r}: {label} has no values for it; its own defaults are used "
                              f"([{section}])")
            return {}
        fields = [f.name for f in attrs.fields(comp.config)]
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise PluginError(f"preset {self.name!r} of {label} (plugin {comp.plugin!r}) sets "
                              f"{', '.join(unknown)}, which [{section}] does not have; its keys: {', '.join(fields)}")
        return dict(values)

    def check(self) -> None:
        if self.name and self.name not in self.known:
            raise UserError(f"--preset (run.preset): unknown preset {self.name!r}; allowed: "
                            f"{', '.join(sorted(self.known))}")


def _under(preset_values: Mapping[str, Any], table: Any) -> Any:
    """A section's table with a preset's values under the user's (a non-table is left as is)."""
    if not preset_values or not isinstance(table, Mapping):
        return table
    return merge(dict(preset_values), table)


def _check_core_tree(tree: Mapping[str, Mapping[str, Any]], who: str, error: type[Exception]) -> None:
    """Every section and key of ``tree`` exists in the core's config, or one line naming ``who``."""
    for section, values in tree.items():
        cls = SECTIONS.get(section)
        unknown = sorted(set(values) - {f.name for f in attrs.fields(cls)}) if cls is not None else []
        if cls is None or unknown:
            what = f"section {section!r}" if cls is None else f"{section}.{', '.join(unknown)}"
            raise error(f"{who} sets {what}, which the config does not have")


def _suggestions(suggested: Mapping[str, Any], cls: type, table: Mapping[str, Any]) -> dict[str, Any]:
    """A task's suggestions for a component: the keys its config class has and the user left unset."""
    names = {f.name for f in attrs.fields(cls)}
    return {k: v for k, v in suggested.items() if k in names and k not in table}


def _task_core_defaults(task: Any, name: str) -> dict[str, dict[str, Any]]:
    """``Task.core_defaults()``, checked like a preset's core values."""
    from onnx_run.plugins import PluginError

    suggested = task.core_defaults() if hasattr(task, "core_defaults") else {}
    _check_core_tree(suggested, f"task {name!r}: core_defaults()", PluginError)
    return {k: dict(v) for k, v in suggested.items()}


def _optics_core_defaults(optics: ComponentChoice, task_kind: str) -> dict[str, dict[str, Any]]:
    """The chosen optics' training recipe for this kind of task: an optional classmethod
    ``core_defaults(task_kind[, settings])`` on its config class (``{section: {key: value}}``),
    checked like a preset's core values. ``settings`` are the optics' resolved settings (every
    field: the user's over the preset's over the task's suggestions over the plugin's defaults),
    the same values the frontend is built with: a recipe may depend on them (RGB optics feed a
    wider backend, more kernels a wider first layer). A one-argument classmethod is asked with
    the task kind only. It sits above the task's suggestions: learning rates belong to the
    optics' parametrisation."""
    from onnx_run.plugins import PluginError

    hook = getattr(type(optics.config), "core_defaults", None) if optics.config is not None else None
    if hook is None:
        return {}
    if len(inspect.signature(hook).parameters) >= 2:
        suggested = hook(task_kind, attrs.asdict(optics.config, recurse=False))
    else:
        suggested = hook(task_kind)
    _check_core_tree(suggested, f"optics {optics.name!r}: core_defaults()", PluginError)
    return {k: dict(v) for k, v in suggested.items()}


@attrs.frozen
class _ConfigSuggestions:
    """A task's suggestions read from its config (which declares ``task_kind``): what resolving
    a run asks of the task, without building it or importing its module."""

    config: Any

    @property
    def kind(self) -> str:
        return type(self.config).task_kind

    @property
    def default_teacher(self) -> str | None:
        hook = getattr(self.config, "default_teacher", None)
        return hook() if callable(hook) else None

    def _ask(self, name: str) -> dict[str, Any]:
        hook = getattr(self.config, name, None)
        return dict(hook()) if callable(hook) else {}

    def optics_defaults(self) -> dict[str, Any]:
        return self._ask("optics_defaults")

    def core_defaults(self) -> dict[str, dict[str, Any]]:
        return self._ask("core_defaults")

    def distill_defaults(self) -> dict[str, dict[str, Any]]:
        return self._ask("distill_defaults")


def _task_suggestions(choice: ComponentChoice) -> Any:
    """The task's suggestions: from its config where the config declares ``task_kind``, else
    from the task itself, built for the purpose."""
    if choice.config is not None and isinstance(getattr(type(choice.config), "task_kind", None), str):
        return _ConfigSuggestions(choice.config)
    return choice.build()


def resolve(raw: Mapping[str, Any]) -> RunConfig:
    """Structure a raw config tree (TOML + overrides) into a :class:`RunConfig`.

    Layers, lowest first: the built-in defaults, the task's suggestions for the core sections
    (``Task.core_defaults``), the optics' training recipe for the task's kind (an optional
    ``core_defaults(task_kind[, settings])`` classmethod on the optics config class), the run preset (``run.preset``: the core's
    :data:`PRESETS` and the chosen components' ``run_presets``), the task's suggestions for the
    optics (``Task.optics_defaults``, which beat the optics' own preset values: the task knows
    how many maps its backend needs) and for the distillation losses (``Task.distill_defaults``),
    and ``raw`` (the user's file, ``--set`` and flags).
    """
    from onnx_run.plugins import components, get_component

    raw = dict(raw)
    known = set(SECTIONS) | set(COMPONENT_SECTIONS) | set(METHOD_SECTIONS)
    for key in raw:
        if key not in known:
            raise UserError(f"unknown config section {key!r}; allowed sections: {', '.join(sorted(known))}")
    preset = _Preset(raw)

    comps: dict[str, ComponentChoice] = {}
    task: Any = None  # the task instance, built first: the other sections take its suggestions

    def component(section: str, kind: str, default: str | None) -> None:
        if not isinstance(raw.get(section, {}), Mapping):
            raise UserError(f"{section}: expected a table with a 'name', got {raw[section]!r}")
        table = dict(raw.get(section, {}))
        name = table.pop("name", None)
        if name is None and section == "teacher":
            name = getattr(task, "default_teacher", None)
        if name is None:
            name = default
        if not isinstance(name, str):
            raise UserError(f"{section}.name: expected a string, got {name!r}")
        comp = get_component(kind, name, key=f"{section}.name")
        suggested: dict[str, Any] = {}
        if section == "optics" and comp.config is not None:
            # the task may suggest optics settings (input size, kernel count); the user's win
            suggested = _suggestions(task.optics_defaults(), comp.config, table)
        table = {**preset.component(comp, section, {**suggested, **table}), **suggested, **table}
        if comp.config is None:
            if table:
                raise UserError(f"{section}: {kind} {name!r} takes no settings, got {', '.join(table)}")
            cfg = None
        else:
            cfg = structure_section(table, comp.config, section)
        comps[section] = ComponentChoice(name, cfg, comp)

    # the task first: its suggestions for the core sections and the preset's values depend on it
    component("task", *COMPONENT_SECTIONS["task"])
    task = _task_suggestions(comps["task"])
    # then the optics, settled once: their recipe for the core sections reads those settings
    component("optics", *COMPONENT_SECTIONS["optics"])
    core = merge(_task_core_defaults(task, comps["task"].name),
                 _optics_core_defaults(comps["optics"], getattr(task, "kind", "")))
    if preset.name:
        core = merge(core, preset.core(getattr(task, "kind", "")))
    sections = {name: structure_section(_under(core.get(name, {}), raw.get(name, {})), cls, name)
                for name, cls in SECTIONS.items()}
    for section, (kind, default) in COMPONENT_SECTIONS.items():
        if section not in comps:
            component(section, kind, default)

    methods: dict[str, dict[str, ComponentChoice]] = {}
    for section, (kind, list_key) in METHOD_SECTIONS.items():
        owner, _, attr = list_key.partition(".")
        names = list(getattr(sections[owner], attr))
        if section == "distill":  # fine-tuning losses after fabrication take their settings here too
            names += [m for m in sections["finetune"].methods if m not in ("none", "e2e") and m not in names]
        tables = raw.get(section, {})
        if not isinstance(tables, Mapping):
            raise UserError(f"{section}: expected tables per method, e.g. [{section}.{names[0]}]")
        for extra in tables:
            if extra not in names:
                get_component(kind, extra, key=f"{section}.{extra}")  # unknown name: one-line error
        chosen: dict[str, ComponentChoice] = {}
        task_suggests = task.distill_defaults() if section == "distill" else {}
        for name in names:
            if name not in getattr(sections[owner], attr) and name not in components(kind):
                allowed = ["none", "e2e", *sorted(n for n in components(kind) if n != "none")]
                raise UserError(f"finetune.methods: unknown method {name!r}; allowed: {', '.join(allowed)}")
            comp = get_component(kind, name, key=list_key)
            table = tables.get(name, {})
            if comp.config is not None and isinstance(table, Mapping):
                table = {**_suggestions(task_suggests.get(name, {}), comp.config, table), **table}
            table = _under(preset.component(comp, f"{section}.{name}", table if isinstance(table, Mapping) else {}),
                           table)
            cfg = structure_section(table, comp.config, f"{section}.{name}") if comp.config else None
            chosen[name] = ComponentChoice(name, cfg, comp)
        methods[section] = chosen
    preset.check()
    cfg = RunConfig(sections, comps, methods, notes=preset.notes)
    finetune_losses(cfg)  # a mistake in finetune.distill fails here, before anything runs
    return cfg


def finetune_losses(cfg: RunConfig) -> dict[str, ComponentChoice]:
    """The distillation losses of the compensation after fabrication: ``[distill.<name>]`` with
    ``finetune.distill``'s settings over them; a loss the run has not, or a bad setting, is one line."""
    choices = dict(cfg.methods["distill"])
    for name, table in cfg.finetune.distill.items():
        if name not in choices and table == DESIGN_DISTILL.get(name):
            # the default's settings for a loss this run does not use: a resolved config carries
            # them (config.toml, compare's runs of one method) and is resolved again with fewer losses
            continue
        if name not in choices or choices[name].config is None:
            allowed = ", ".join(n for n, c in choices.items() if c.config is not None) or "none"
            raise UserError(f"finetune.distill.{name}: not a distillation loss with settings in this run; "
                            f"allowed: {allowed}")
        merged = {**unstructure(choices[name].config), **table}
        config = structure_section(merged, type(choices[name].config), f"finetune.distill.{name}")
        choices[name] = attrs.evolve(choices[name], config=config)
    return choices


def build_raw(config_file: str | Path | None = None, sets: tuple[str, ...] | list[str] = (),
              flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge the user's sources in order: TOML file, convenience flags, then ``--set`` overrides
    (a run preset named in them is applied under all of these by :func:`resolve`)."""
    raw: dict[str, Any] = load_toml(config_file) if config_file else {}
    for flag, value in (flags or {}).items():
        if value is None or flag not in FLAG_KEYS:
            continue
        if FLAG_KEYS[flag] == "students.methods" and isinstance(value, str):
            value = [m.strip() for m in value.split(",") if m.strip()]
        set_dotted(raw, FLAG_KEYS[flag], value)
    for item in sets:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=5")
        key, _, text = item.partition("=")
        set_dotted(raw, key.strip(), parse_value(text.strip()))
    return raw


def load_config(config_file: str | Path | None = None, sets: tuple[str, ...] | list[str] = (),
                flags: Mapping[str, Any] | None = None) -> RunConfig:
    return resolve(build_raw(config_file, sets, flags))
