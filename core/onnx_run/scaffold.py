"""``onnx-run plugin new``: a working, installable plugin package to start from.

The templates live in ``data/templates/`` (``common/`` for every kind, one folder per kind);
``{{placeholders}}`` are filled in, and a template named ``test.py`` becomes the package's test.
The package is written into a temporary folder beside the destination and renamed into place
when complete: nothing half-written, and an existing folder is never touched.
"""

from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path

from onnx_run.errors import UserError
from onnx_run.files import file_in_the_way

__all__ = ["KINDS", "new_plugin"]

TEMPLATES = Path(__file__).parent / "data" / "templates"

#: kind -> (what it is called in text, the component's module, a command to try it with)
KINDS: dict[str, tuple[str, str, str]] = {
    "optics": ("optics", "optics", "onnx-run --optics {name} --task classification"),
    "task": ("task", "task", "onnx-run --optics 4f --task {name}"),
    "teacher": ("teacher", "teacher", "onnx-run --optics 4f --task classification --teacher {name}"),
    "error-model": ("error model", "model", "onnx-run fabricate RUN_DIR --error-model {name}"),
    "loss": ("distillation loss", "loss", "onnx-run --optics 4f --task classification --distill none,{name}"),
}


def _names(name: str, kind: str) -> dict[str, str]:
    from onnx_run import __version__

    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name):
        raise UserError(f"plugin new {name!r}: expected a lower-case name of letters, digits and single dashes, "
                        f"starting with a letter (e.g. pinhole, coded-aperture)")
    ident = name.replace("-", "_")
    if keyword.iskeyword(ident):
        raise UserError(f"plugin new {name!r}: a Python keyword; choose another name")
    what, module, try_it = KINDS[kind]
    version = ".".join(__version__.split(".")[:2])
    return {"name": name, "kind": kind, "what": what, "module": module, "package": f"onnx_run_{ident}",
            "dist": f"onnx-run-{name}", "Class": "".join(p.capitalize() for p in name.split("-")),
            "onnx_run_version": version, "try": try_it.format(name=name), "ident": ident}


def _fill(text: str, names: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: names[m.group(1)], text)


def new_plugin(name: str, kind: str, out_dir: Path) -> Path:
    """Write the package ``onnx-run-NAME/`` under ``out_dir`` and return its folder."""
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: allowed: {', '.join(KINDS)}")
    names = _names(name, kind)
    out_dir = Path(out_dir)
    target = out_dir / names["dist"]
    if target.exists():
        raise UserError(f"{target}: exists; allowed: a folder that does not exist yet (nothing was written)")
    blocked = file_in_the_way(out_dir)
    if blocked is not None:
        raise UserError(f"--out {out_dir}: {blocked} is a file, not a folder; allowed: a folder (created if missing)")
    files: dict[str, str] = {}
    for template in sorted((TEMPLATES / "common").glob("*.tmpl")) + sorted((TEMPLATES / kind).glob("*.tmpl")):
        stem = template.name[:-len(".tmpl")]
        if stem in ("pyproject.toml", "README.md"):
            rel = stem
        elif stem == "test.py":
            rel = f"tests/test_{names['ident']}.py"
        else:
            rel = f"{names['package']}/{stem}"
        files[rel] = _fill(template.read_text(), names)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{names['dist']}."))
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
