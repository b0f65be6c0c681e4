"""Run directories: their names, their stages, and the checks that refuse one a run cannot use.

Torch-free on purpose: ``onnx-run --dry-run`` resolves a run and checks its directory without
importing torch or any model (docs/guide.md, "Checking a run before it starts").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from onnx_run.config import RunConfig, load_toml, resolve
from onnx_run.errors import UserError
from onnx_run.files import file_in_the_way

STAGES: tuple[str, ...] = ("estimate", "teacher", "students", "realise", "fabricate", "compensate", "report")
#: stages whose training is data-parallel under torchrun; the others run on rank 0 only
PARALLEL_STAGES: tuple[str, ...] = ("teacher", "students")


def default_run_dir(cfg: RunConfig) -> Path:
    name = cfg.run.name or f"{cfg.optics.name}-{cfg.task.name}-{getattr(cfg.task.config, 'dataset', 'data')}"
    if not cfg.run.name and cfg.run.preset:  # a preset run never collides with the default-sized one
        name += f"-{cfg.run.preset}"
    return Path(cfg.run.out) / name


def run_dir_config(run_dir: Path) -> RunConfig:
    """The resolved config.toml of a run directory (one line if there is none)."""
    path = Path(run_dir) / "config.toml"
    if not path.exists():
        raise UserError(f"run directory {run_dir}: no config.toml; is this an onnx-run run directory?")
    raw = load_toml(path)
    finetune = raw.get("finetune")
    if isinstance(finetune, dict) and "teacher" not in finetune:
        # written before finetune.teacher existed, when kd and ntkd fine-tuned from the run's
        # teacher with the students' settings: read on, it goes on doing what it did
        raw["finetune"] = {**finetune, "teacher": "teacher", "distill": {}}
    return resolve(raw)


def parse_stages(text: str | None) -> tuple[str, ...]:
    if not text:
        return STAGES
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in chosen:
        if s not in STAGES:
            raise UserError(f"--stages: unknown stage {s!r}; stages are {', '.join(STAGES)}")
    return chosen


def recorded_stages(run_dir: Path) -> tuple[str, ...] | None:
    """The stages the last run of this directory asked for (stages.json), if any."""
    path = Path(run_dir) / "stages.json"
    if not path.exists():
        return None
    try:
        stages = json.loads(path.read_text())["stages"]
        return parse_stages(",".join(stages))
    except (ValueError, KeyError, TypeError, UserError):
        raise UserError(f"{path}: not a list of stages; delete it to run every stage, or give --stages") from None


def check_data_dir(dataset: str, data_dir: str | Path) -> Path:
    """``task.data_dir`` as a folder that exists, or one line naming it (the readers' check, and
    the dry run's)."""
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UserError(f"dataset {dataset!r}: task.data_dir {path} does not exist or is not a folder; "
                        f"allowed: the folder that holds its files")
    return path


def check_teacher_checkpoint_file(path: str | None) -> None:
    """``--teacher-checkpoint`` names a file (what it holds is checked where the teacher is built)."""
    if path and not Path(path).is_file():
        raise UserError(f"--teacher-checkpoint {path}: file not found")


def check_run_dir(cfg: RunConfig, run_dir: Path, record: Mapping[str, Any]) -> None:
    """Refuse, writing nothing, a run directory this run cannot use: a file in the way, a
    different config, an edited config.toml or other versions since the run started
    (``record``: the run's config and distributions, as run.json holds them)."""
    if file_in_the_way(run_dir) is not None:
        make_folder(run_dir)  # says why, in the words every folder option uses
    path = run_dir / "config.toml"
    text = cfg.to_toml()
    # compared as resolved today: a directory written before a setting existed still matches
    if path.exists() and path.read_text() != text and run_dir_config(run_dir).to_toml() != text:
        raise UserError(
            f"run directory {run_dir} holds a different config; choose another --out/--set run.name, "
            f"or continue it with --resume {run_dir}"
        )
    started = run_dir / "run.json"
    if started.exists():
        check_unchanged(started, record)


def distributions(cfg: RunConfig) -> dict[str, str]:
    """The distributions (and versions) of the components this run uses."""
    from onnx_run.config import COMPONENT_SECTIONS, METHOD_SECTIONS
    from onnx_run.plugins import registry
    from onnx_run import __version__

    reg = registry()
    used = [(COMPONENT_SECTIONS[s][0], c.name) for s, c in cfg.components.items() if s in COMPONENT_SECTIONS]
    used += [(METHOD_SECTIONS[s][0], name) for s, chosen in cfg.methods.items() for name in chosen]
    used += [("error_models", e.get("name")) for e in cfg.fabricate.errors if isinstance(e, dict)]
    out = {"onnx-run": __version__}
    for kind, name in used:
        comp = reg.get(kind, {}).get(name)
        if comp is not None:
            out[comp.distribution] = comp.version or __version__
    return dict(sorted(out.items()))


def started_threads(run_dir: Path) -> int:
    """The CPU threads a run directory's run started with (run.json), 0 if none is recorded."""
    try:
        return int(json.loads((run_dir / "run.json").read_text()).get("threads") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0  # no run yet, or a broken record: check() says so in one line


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested table as {"a.b.c": value}."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flat_keys(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_unchanged(started: Path, now: dict[str, Any]) -> None:
    """A run resumes with what started it: an edited config.toml or another version of a
    distribution it uses is one line naming what changed (keys absent at the start, settings
    added to onnx-run since, are not changes)."""
    try:
        then = json.loads(started.read_text())
        old_cfg, old_dists = flat_keys(then["config"]), then["distributions"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{started}: not the run's record (config, distributions); restore it or start a new "
                        f"run (--out / run.name)") from None
    new_cfg = flat_keys(now["config"])
    keys = [k for k in old_cfg if k in new_cfg and old_cfg[k] != new_cfg[k]]
    if keys:
        shown = ", ".join(f"{k} {old_cfg[k]!r} -> {new_cfg[k]!r}" for k in keys[:3])
        raise UserError(f"run directory {started.parent}: config.toml was edited since the run started ({shown}"
                        f"{', ...' if len(keys) > 3 else ''}); a run continues with the config it started with: "
                        f"undo the edit, or start a new run (--out / run.name)")
    dists = [d for d in old_dists if now["distributions"].get(d) != old_dists[d]]
    if dists:
        shown = ", ".join(f"{d} {old_dists[d]} -> {now['distributions'].get(d, 'not installed')}" for d in dists)
        raise UserError(f"run directory {started.parent}: made with other versions ({shown}); its checkpoints may "
                        f"not fit: install those versions, or start a new run (--out / run.name)")


def make_folder(folder: Path, key: str = "--out / run.out") -> None:
    """Create ``folder``, or one line naming ``key`` and why it cannot be (a file in the way, no
    permission, a full disk): exit 2, nothing written."""
    blocked = file_in_the_way(folder)
    if blocked is not None:
        raise UserError(f"{key}: {blocked} is a file, not a folder; allowed: a folder (it is created "
                        f"if missing) or a path that does not exist yet")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{key}: cannot create the folder {folder}: {exc.strerror}; "
                        f"allowed: a folder you can write to") from None
