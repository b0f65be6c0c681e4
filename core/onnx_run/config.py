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

import re
import tomllib
from pathlib import Path
from typing import Any, Mapping

import attrs
import cattrs
import tomli_w
from attrs import validators as v

from onnx_run.errors import UserError

# -- core sections -----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class RunSettings:
    """Where and how a run happens."""

    seed: int = attrs.field(default=0, validator=v.ge(0))
    seeds: int = attrs.field(default=1, validator=[v.ge(1), v.le(100)])
    out: str = "runs"
    name: str = ""
    device: str = attrs.field(default="cpu", validator=v.in_(["cpu", "cuda", "auto"]))
    progress: bool = True
    threads: int = attrs.field(default=0, validator=[v.ge(0), v.le(256)])  # torch CPU threads; 0: torch's default


@attrs.define(kw_only=True)
class TrainSettings:
    """Optimiser, schedule and length of one training."""

    epochs: int = attrs.field(default=15, validator=[v.ge(0), v.le(10000)])
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

    epochs: int = attrs.field(default=20, validator=[v.ge(0), v.le(10000)])
    lr: float = attrs.field(default=3e-3, validator=v.gt(0))
    batch_size: int = attrs.field(default=64, validator=v.ge(1))


def _method_list(instance: Any, attribute: Any, value: list[str]) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must name at least one method")
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
    applied in order; ``devices``: fabricated devices per student seed, each sampled from
    ``seed + index``.
    """

    student: str = "ntkd"
    errors: list[dict[str, Any]] = attrs.field(factory=_default_errors)
    devices: int = attrs.field(default=1, validator=[v.ge(1), v.le(100)])
    seed: int = attrs.field(default=1000, validator=v.ge(0))


@attrs.define(kw_only=True)
class FinetuneSettings(TrainSettings):
    """Backend-only compensation after fabrication, on ``fraction`` of the training images
    captured through the device. ``methods``: none (no compensation), e2e (task loss), kd,
    ntkd (NTK w.r.t. the backend parameters, teacher on raw images; settings from
    [distill.ntkd])."""

    methods: list[str] = attrs.field(factory=lambda: ["none", "e2e", "ntkd"], validator=_method_list)
    fraction: float = attrs.field(default=0.1, validator=[v.gt(0), v.le(1)])
    epochs: int = attrs.field(default=15, validator=[v.ge(0), v.le(10000)])
    lr: float = attrs.field(default=1e-3, validator=v.gt(0))
    batch_size: int = attrs.field(default=64, validator=v.ge(1))


#: core section name -> attrs class; later stages add theirs with :func:`add_section`
SECTIONS: dict[str, type] = {
    "run": RunSettings,
    "train": TrainSettings,
    "teacher_train": TeacherTrainSettings,
    "students": StudentSettings,
    "fabricate": FabricateSettings,
    "finetune": FinetuneSettings,
}

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


def structure_section(data: Mapping[str, Any], cls: type, path: str) -> Any:
    """Structure one TOML table into its attrs class, or raise a one-line UserError."""
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: expected a table of settings, got {data!r}")
    try:
        return converter.structure(dict(data), cls)
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
    """A chosen component: its registered name and its structured config."""

    name: str
    config: Any
    factory: Any = attrs.field(repr=False, default=None)

    def build(self, *args: Any) -> Any:
        return self.factory(self.config, *args)


@attrs.define
class RunConfig:
    """The fully resolved configuration of a run."""

    sections: dict[str, Any]
    components: dict[str, ComponentChoice]
    methods: dict[str, dict[str, ComponentChoice]] = attrs.field(factory=dict)

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


def resolve(raw: Mapping[str, Any]) -> RunConfig:
    """Structure a raw config tree (TOML + overrides) into a :class:`RunConfig`."""
    from onnx_run.plugins import get_component

    raw = dict(raw)
    known = set(SECTIONS) | set(COMPONENT_SECTIONS) | set(METHOD_SECTIONS)
    for key in raw:
        if key not in known:
            raise UserError(f"unknown config section {key!r}; allowed sections: {', '.join(sorted(known))}")
    sections = {name: structure_section(raw.get(name, {}), cls, name) for name, cls in SECTIONS.items()}

    comps: dict[str, ComponentChoice] = {}
    for section, (kind, default) in COMPONENT_SECTIONS.items():
        table = dict(raw.get(section, {}))
        if not isinstance(raw.get(section, {}), Mapping):
            raise UserError(f"{section}: expected a table with a 'name', got {raw[section]!r}")
        name = table.pop("name", None)
        if name is None and section == "teacher":
            name = getattr(comps["task"].factory(comps["task"].config), "default_teacher", None)
        if name is None:
            name = default
        if not isinstance(name, str):
            raise UserError(f"{section}.name: expected a string, got {name!r}")
        comp = get_component(kind, name, key=f"{section}.name")
        if section == "optics" and comp.config is not None:
            # the task may suggest optics settings (input size, kernel count); the user's win
            task = comps["task"].factory(comps["task"].config)
            names = {f.name for f in attrs.fields(comp.config)}
            for key, value in task.optics_defaults().items():
                if key in names and key not in table:
                    table[key] = value
        if comp.config is None:
            if table:
                raise UserError(f"{section}: {kind} {name!r} takes no settings, got {', '.join(table)}")
            cfg = None
        else:
            cfg = structure_section(table, comp.config, section)
        comps[section] = ComponentChoice(name, cfg, comp.factory)

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
        for name in names:
            comp = get_component(kind, name, key=list_key)
            table = tables.get(name, {})
            cfg = structure_section(table, comp.config, f"{section}.{name}") if comp.config else None
            chosen[name] = ComponentChoice(name, cfg, comp.factory)
        methods[section] = chosen
    return RunConfig(sections, comps, methods)


def build_raw(config_file: str | Path | None = None, sets: tuple[str, ...] | list[str] = (),
              flags: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge the sources in order: TOML file, convenience flags, then ``--set`` overrides."""
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
