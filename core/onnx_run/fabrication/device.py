"""A fabricated device: a trained frontend, realised, perturbed by error models, frozen.

A device is fully described by (student method, student seed, error models with their
settings, device seed): rebuilding it from that description gives the same device, so the
run directory stores the description (device.json) and the resulting frontend state
(device.pt) for inspection. Measurement errors (sensor noise) are applied per capture by
:class:`FabricatedFrontend`.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Sequence

import attrs
import torch
from torch import nn

from onnx_run.components import ErrorModel, OpticalFrontend
from onnx_run.errors import UserError


class FabricatedFrontend(nn.Module):
    """A frozen frontend plus per-capture measurement errors.

    ``capture_seed`` fixes the noise of each capture: calling ``capture(x, seed)`` twice gives
    the same image, as re-reading a stored camera frame would.
    """

    def __init__(self, frontend: nn.Module, measurement_errors: Sequence[ErrorModel] = ()):
        super().__init__()
        self.frontend = frontend
        self.measurement_errors = list(measurement_errors)
        for p in self.frontend.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = self.frontend(x)
        for err in self.measurement_errors:
            out = err.apply_to_measurement(out, generator)
        return out

    @torch.no_grad()
    def capture(self, x: torch.Tensor, *, seed: int, batch_size: int = 256) -> torch.Tensor:
        """Feature maps as a camera would record them (noise drawn once, from ``seed``)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        self.eval()
        dev = next(itertools.chain(self.frontend.parameters(), self.frontend.buffers()), torch.empty(0)).device
        outs = []
        for start in range(0, x.shape[0], batch_size):
            feats = self.frontend(x[start:start + batch_size].to(dev)).cpu()
            for err in self.measurement_errors:
                feats = err.apply_to_measurement(feats, gen)
            outs.append(feats)
        return torch.cat(outs)


def fabricate(frontend: OpticalFrontend, error_models: Sequence[ErrorModel], seed: int) -> FabricatedFrontend:
    """Apply static errors once (from ``seed``), freeze, and attach the measurement errors."""
    gen = torch.Generator().manual_seed(seed)
    device: nn.Module = copy.deepcopy(frontend)
    for err in error_models:
        try:
            device = err.apply_to_frontend(device, gen)
        except NotImplementedError as exc:
            raise UserError(f"error model {type(err).__name__}: {exc}") from None
    return FabricatedFrontend(device, error_models)


def _error_model_settings(specs: Sequence[dict[str, Any]], key: str) -> list[tuple[str, Any, Any]]:
    """(name, registered component, structured settings or None) of each error-model table."""
    from onnx_run.config import structure_section
    from onnx_run.plugins import get_component

    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "name" not in spec:
            raise UserError(f"{key}[{i}]: expected a table with a 'name', got {spec!r}")
        table = dict(spec)
        name = table.pop("name")
        comp = get_component("error_models", name, key=f"{key}[{i}].name")
        if comp.config is None:
            if table:
                raise UserError(f"{key}[{i}]: error model {name!r} takes no settings, got {', '.join(table)}")
            cfg = None
        else:
            cfg = structure_section(table, comp.config, f"{key}[{i}]")
        out.append((name, comp, cfg))
    return out


def build_error_models(specs: Sequence[dict[str, Any]], *, key: str = "fabricate.errors") -> list[ErrorModel]:
    """Error models from ``[{name = "brightness", sigma = 0.1}, ...]`` tables."""
    return [comp.factory(cfg) for _, comp, cfg in _error_model_settings(specs, key)]


def check_capabilities(specs: Sequence[dict[str, Any]], capabilities: frozenset[str], optics: str, *,
                       key: str = "fabricate.errors") -> None:
    """Refuse, in one line and before anything trains, an error model that calls an optics
    capability (``requires``) the chosen optics does not declare."""
    from onnx_run.plugins import components

    def needs(comp: Any, cfg: Any) -> frozenset[str]:
        try:
            return frozenset(comp.factory(cfg).requires)
        except Exception:  # noqa: BLE001 - a model that cannot be built with defaults needs nothing we know of
            return frozenset()

    for i, (name, comp, cfg) in enumerate(_error_model_settings(specs, key)):
        missing = needs(comp, cfg) - capabilities
        if missing:
            usable = [n for n, c in sorted(components("error_models").items())
                      if needs(c, c.config() if c.config else None) <= capabilities]
            raise UserError(f"{key}[{i}]: error model {name!r} needs optics with {', '.join(sorted(missing))}(), "
                            f"which optics {optics!r} does not offer (it declares: "
                            f"{', '.join(sorted(capabilities)) or 'nothing'}); allowed for it: {', '.join(usable)}")


def scale_error_specs(specs: Sequence[dict[str, Any]], severity: float, *,
                      key: str = "fabricate.errors") -> list[dict[str, Any]]:
    """The tables of a device ``severity`` times as bad (``fabricate.severity``): each model's
    settings through its config's ``scaled(severity)``, written out in full so that
    device.json holds the magnitudes the device was made with. Severity 1 returns the tables
    as given; a model that does not say how it scales is refused in one line."""
    checked = _error_model_settings(specs, key)
    if severity == 1:
        return [dict(spec) for spec in specs]
    out = []
    for i, (name, comp, cfg) in enumerate(checked):
        if cfg is None:  # nothing to scale
            out.append({"name": name})
            continue
        scale = getattr(cfg, "scaled", None)
        if scale is None:
            raise UserError(f"fabricate.severity = {severity:g}: error model {name!r} ({key}[{i}], plugin "
                            f"{comp.plugin!r}) does not say how it scales (no scaled() on its settings); allowed: "
                            f"severity = 1 with its magnitudes set in {key}")
        try:
            harsher = scale(severity)
        except (ValueError, TypeError) as exc:
            raise UserError(f"fabricate.severity = {severity:g}: error model {name!r} ({key}[{i}]) cannot be "
                            f"made that harsh: {exc}") from None
        out.append({"name": name, **attrs.asdict(harsher, recurse=False)})
    return out


def parse_error_spec(text: str) -> dict[str, Any]:
    """``name`` or ``name:key=value,key=value`` (values are TOML literals) -> a table."""
    from onnx_run.config import parse_value

    name, _, rest = text.partition(":")
    table: dict[str, Any] = {"name": name.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, sep, v = item.partition("=")
        if not sep:
            raise UserError(f"--error-model {text!r}: expected NAME or NAME:key=value,key=value")
        table[k.strip()] = parse_value(v.strip())
    return table
