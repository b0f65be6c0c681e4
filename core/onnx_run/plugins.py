"""The plugin manager: entry points, built-ins, component registries and listing.

External plugins come from the ``onnx_run`` entry-point group (pluggy's
``load_setuptools_entrypoints``); built-in components are ordinary plugin modules registered
after them, so a third party cannot silently shadow a built-in name: a duplicate is an error
naming both plugins.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from typing import Any, Callable, Iterable

import attrs
import pluggy

from onnx_run import hookspecs
from onnx_run.errors import UserError

#: component kind -> the hook that registers it
KINDS: dict[str, str] = {
    "optics": "register_optics",
    "tasks": "register_tasks",
    "teachers": "register_teachers",
    "error_models": "register_error_models",
    "distillation_losses": "register_distillation_losses",
}

#: how a kind is named in messages
KIND_LABELS: dict[str, str] = {
    "optics": "optics", "tasks": "task", "teachers": "teacher", "error_models": "error model",
    "distillation_losses": "distillation loss",
}

#: built-in plugin modules, registered after the external ones
BUILTIN_MODULES: tuple[str, ...] = (
    "onnx_run.distill.plugin",
    "onnx_run.tasks.plugin",
    "onnx_run.fabrication.plugin",
)

BUILTIN_DISTRIBUTION = "onnx-run"


class PluginError(UserError):
    """A plugin broke the contract (misspelt hook, duplicate component name)."""


def _resolve(ref: Any, what: str) -> Any:
    """A factory or config given as ``"module:attribute"`` text, imported now; anything else as is."""
    if not isinstance(ref, str):
        return ref
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"{what}: {ref!r} is not 'module:attribute'")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"{what}: cannot import {ref!r} ({type(exc).__name__}: {exc})") from None
    return obj


@attrs.define(eq=False)
class Component:
    """One registered component and where it came from.

    ``factory`` and ``config`` may be registered as ``"module:attribute"`` text: they are
    imported the first time they are used, so listing the components (``onnx-run plugins``,
    ``--help``) imports no plugin's heavy modules (torch among them)."""

    kind: str
    name: str
    factory_ref: Any
    config_ref: Any
    description: str
    plugin: str
    distribution: str
    version: str
    _resolved: dict[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def factory(self) -> Callable[..., Any]:
        if "factory" not in self._resolved:
            self._resolved["factory"] = _resolve(self.factory_ref, f"plugin {self.plugin!r}, {self.kind} {self.name!r}")
        return self._resolved["factory"]

    @property
    def config(self) -> type | None:
        if "config" not in self._resolved:
            config = _resolve(self.config_ref, f"plugin {self.plugin!r}, {self.kind} {self.name!r} config")
            if config is not None and not attrs.has(config):
                raise PluginError(f"plugin {self.plugin!r}: config for {self.kind} {self.name!r} must be an "
                                  f"attrs class, got {config!r}")
            self._resolved["config"] = config
        return self._resolved["config"]


@attrs.frozen
class FailedPlugin:
    name: str
    error: str


_pm: pluggy.PluginManager | None = None
_failed: list[FailedPlugin] = []
#: plugins left out of the registry because they registered a name already taken: plugin -> why
_skipped: dict[str, str] = {}
_builtin_names: set[str] = set()


def _split_env(var: str) -> list[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return [s.strip() for s in raw.split(",") if s.strip()]


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group="onnx_run"))


def _check_plugin(pm: pluggy.PluginManager, name: str) -> None:
    """Reject (unregister) a plugin whose hooks do not match the spec, e.g. a misspelt hook."""
    plugin = pm.get_plugin(name)
    if plugin is None:
        return
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=name)
        # the hooks with a spec: a misspelt hook gets a caller of its own, which is no hook
        known = ", ".join(sorted(n for n, caller in vars(pm.hook).items()
                                 if not n.startswith("_") and getattr(caller, "spec", None) is not None))
        bad = [
            attr for attr in dir(plugin)
            if attr.startswith(("register_", "on_")) and not hasattr(pm.hook, attr)
        ] or [str(exc)]
        raise PluginError(
            f"plugin {name!r} rejected: {', '.join(bad)} is not an onnx_run hook; known hooks: {known}"
        ) from None


def _load_external(pm: pluggy.PluginManager) -> None:
    wanted = _split_env("ONNX_RUN_LOAD_PLUGINS")
    blocked = set(_split_env("ONNX_RUN_DISABLE_PLUGINS") or [])
    for ep in _entry_points():
        dist_name = ep.dist.name if ep.dist is not None else ""
        if wanted is not None and ep.name not in wanted and dist_name not in wanted:
            continue
        if ep.name in blocked or dist_name in blocked:
            pm.set_blocked(ep.name)
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            # one entry point at a time, so a plugin that fails to import spares the others
            pm.load_setuptools_entrypoints("onnx_run", name=ep.name)
            _check_plugin(pm, ep.name)
        except PluginError as exc:
            _failed.append(FailedPlugin(ep.name, str(exc)))
        except Exception as exc:  # a third-party import error must not break the CLI
            _failed.append(FailedPlugin(ep.name, f"{type(exc).__name__}: {exc}"))


def get_plugin_manager() -> pluggy.PluginManager:
    """The one plugin manager, loaded on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("onnx_run")
        pm.add_hookspecs(hookspecs)
        _failed.clear()
        _load_external(pm)
        for module_name in BUILTIN_MODULES:
            module = importlib.import_module(module_name)
            pm.register(module, name=module_name)
            _builtin_names.add(module_name)
        pm.check_pending()
        _pm = pm
    return _pm


def reset_plugin_manager() -> None:
    """Forget the loaded plugins (tests and environment changes)."""
    global _pm, _registry_cache
    _pm = None
    _registry_cache = None
    _builtin_names.clear()
    _skipped.clear()


def register_plugin(plugin: Any, name: str) -> None:
    """Register an in-process plugin object or module (tests, notebooks), validating its hooks."""
    global _registry_cache
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    _registry_cache = None  # an object's id may be one a freed plugin had: never trust the old key
    _check_plugin(pm, name)
    try:
        registry()
    except PluginError:
        pm.unregister(name=name)
        raise
    if name in _skipped:  # asked for in-process: a duplicate name is this call's error, rolled back
        pm.unblock(name)
        raise PluginError(_skipped.pop(name))


def unregister_plugin(name: str) -> None:
    global _registry_cache
    get_plugin_manager().unregister(name=name)
    _registry_cache = None


def failed_plugins() -> list[FailedPlugin]:
    """Plugins that failed to import or broke the contract, and those left out of the registry."""
    registry()
    return list(_failed) + [FailedPlugin(name, why) for name, why in _skipped.items()]


def is_builtin(plugin_name: str) -> bool:
    return plugin_name in _builtin_names


def _distribution_of(pm: pluggy.PluginManager) -> dict[str, tuple[str, str]]:
    from onnx_run import __version__

    out: dict[str, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        out[pm.get_name(plugin)] = (dist.project_name, dist.version)
    for name in _builtin_names:
        out[name] = (BUILTIN_DISTRIBUTION, __version__)
    return out


def _plugin_order(pm: pluggy.PluginManager) -> list[tuple[str, Any]]:
    """External plugins first, then built-ins, each in registration order."""
    plugins = [(pm.get_name(p), p) for p in pm.get_plugins()]
    external = [x for x in plugins if x[0] not in _builtin_names]
    builtin = [x for x in plugins if x[0] in _builtin_names]
    order = {name: i for i, name in enumerate(BUILTIN_MODULES)}
    builtin.sort(key=lambda x: order.get(x[0], len(order)))
    return external + builtin


def _collect(pm: pluggy.PluginManager) -> dict[str, dict[str, Component]]:
    """Every plugin's components; the built-ins first, so a third party cannot shadow one. A
    plugin that registers a name already taken is left out whole (it would half-work) and
    reported with the failed plugins: one broken plugin never takes the CLI down."""
    dists = _distribution_of(pm)
    reg: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
    order = _plugin_order(pm)  # external first: rotated so that the built-ins register first
    for plugin_name, plugin in sorted(order, key=lambda x: x[0] not in _builtin_names):
        own = _components_of(pm, plugin_name, plugin, dists, reg)
        if isinstance(own, str):  # out whole: its hooks (lifecycle too) are not called either
            _skipped[plugin_name] = own
            pm.unregister(name=plugin_name)
            pm.set_blocked(plugin_name)
            continue
        for kind, comps in own.items():
            reg[kind].update(comps)
    return reg


def _components_of(pm: pluggy.PluginManager, plugin_name: str, plugin: Any, dists: dict[str, tuple[str, str]],
                   taken: dict[str, dict[str, Component]]) -> dict[str, dict[str, Component]] | str:
    """One plugin's components by kind, or why it cannot join the registry."""
    dist, version = dists.get(plugin_name, (plugin_name, ""))
    own: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
    try:
        for kind, hook in KINDS.items():
            fn = getattr(plugin, hook, None)
            if fn is None or pm.parse_hookimpl_opts(plugin, hook) is None:
                continue

            def register(name: str, factory: Callable[..., Any] | str, config: type | str | None = None,
                         description: str = "", *, _kind: str = kind, _plugin: str = plugin_name,
                         _dist: str = dist, _version: str = version) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {_plugin!r} registered a {_kind} component without a name")
                if config is not None and not isinstance(config, str) and not attrs.has(config):
                    raise PluginError(
                        f"plugin {_plugin!r}: config for {_kind} {name!r} must be an attrs class, got {config!r}"
                    )
                existing = taken[_kind].get(name) or own[_kind].get(name)
                if existing is not None:
                    raise PluginError(
                        f"duplicate {_kind} name {name!r}: registered by plugin {existing.plugin!r} "
                        f"({existing.distribution}) and by plugin {_plugin!r} ({_dist}); rename one"
                    )
                own[_kind][name] = Component(_kind, name, factory, config, description or "",
                                             _plugin, _dist, _version)

            fn(register=register)
    except PluginError as exc:
        if plugin_name in _builtin_names:
            raise
        return str(exc)
    return own


_registry_cache: tuple[tuple[int, ...], dict[str, dict[str, Component]]] | None = None


def registry() -> dict[str, dict[str, Component]]:
    """All registered components: kind -> name -> Component."""
    global _registry_cache
    pm = get_plugin_manager()
    key = tuple(id(p) for p in pm.get_plugins())
    if _registry_cache is None or _registry_cache[0] != key:
        _registry_cache = (key, _collect(pm))
    return _registry_cache[1]


def components(kind: str) -> dict[str, Component]:
    return registry()[kind]


def get_component(kind: str, name: str, *, key: str | None = None) -> Component:
    """Look up a component; an unknown name is a one-line error listing the registered ones."""
    comps = components(kind)
    if name not in comps:
        where = f"{key}: " if key else ""
        allowed = ", ".join(sorted(comps)) or "none installed"
        raise UserError(f"{where}unknown {KIND_LABELS.get(kind, kind)} {name!r}; registered: {allowed}")
    return comps[name]


def plugin_listing(include_builtins: bool = False) -> list[dict[str, Any]]:
    """Rows for ``onnx-run plugins``: distribution, version, hooks, components by kind."""
    pm = get_plugin_manager()
    dists = _distribution_of(pm)
    reg = registry()
    rows = []
    for plugin_name, plugin in _plugin_order(pm):
        builtin = plugin_name in _builtin_names
        if builtin and not include_builtins:
            continue
        dist, version = dists.get(plugin_name, (plugin_name, ""))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        comps = {
            kind: sorted(c.name for c in reg[kind].values() if c.plugin == plugin_name)
            for kind in KINDS
        }
        rows.append({
            "name": plugin_name,
            "distribution": dist,
            "version": version,
            "builtin": builtin,
            "hooks": hooks,
            "components": {k: v for k, v in comps.items() if v},
        })
    for failed in failed_plugins():
        rows.append({"name": failed.name, "distribution": "", "version": "", "builtin": False,
                     "hooks": [], "components": {}, "error": failed.error})
    return rows


def call_lifecycle(hook: str, **kwargs: Any) -> None:
    """Call a lifecycle hook (on_run_start / on_epoch_end / on_run_end) on every plugin."""
    getattr(get_plugin_manager().hook, hook)(**kwargs)


def warn_failed(stream: Any = None) -> None:
    """Print one line per plugin that failed to load (the rest still work)."""
    stream = stream or sys.stderr
    for failed in failed_plugins():
        print(f"Warning: plugin {failed.name!r} not loaded: {failed.error}", file=stream)


def iter_kinds() -> Iterable[str]:
    return iter(KINDS)
