"""Real entry points: install the example plugin package and list it from a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ONNX_RUN_LOAD_PLUGINS", None)
    env.pop("ONNX_RUN_DISABLE_PLUGINS", None)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH", "")]))
    return env


def _onnx_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnx_run", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_installed_example_plugin_is_listed(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "examples" / "onnx-run-hello")],
                   check=True, capture_output=True, timeout=300)
    env = _env(target)
    res = _onnx_run("plugins", "--json", env=env)
    assert res.returncode == 0, res.stderr
    rows = {r["distribution"]: r for r in json.loads(res.stdout)}
    hello = rows["onnx-run-hello"]
    assert hello["version"] == "0.2.0"
    assert hello["hooks"] == ["register_commands", "register_error_models"]
    assert hello["components"] == {"error_models": ["dim"]}
    assert _onnx_run("hello", env=env).stdout == "Hello from onnx-run-hello\n"
    # disabling it by distribution name removes it
    env["ONNX_RUN_DISABLE_PLUGINS"] = "onnx-run-hello"
    rows = json.loads(_onnx_run("plugins", "--json", env=env).stdout)
    assert "onnx-run-hello" not in {r["distribution"] for r in rows}


def test_bundled_plugins_are_listed_with_versions():
    """The four bundled plugins are installed by requirements.txt and show with their versions."""
    res = _onnx_run("plugins", "--json", env=_env())
    assert res.returncode == 0, res.stderr
    rows = {r["distribution"]: r for r in json.loads(res.stdout)}
    for dist in ("onnx-run-optics-4f", "onnx-run-optics-diffractive", "onnx-run-optics-metasurface",
                 "onnx-run-tasks-segmentation"):
        assert dist in rows, f"{dist} not installed: pip install -r requirements.txt"
        assert rows[dist]["version"] == "0.1.0" and "error" not in rows[dist]


def test_a_warning_is_one_line_without_a_source_path(tmp_path):
    """The RGB 4f default layout warns about grating replicas: the command prints it as one
    ``Warning:`` line, not Python's two lines with the warning's source file."""
    res = subprocess.run([sys.executable, "-m", "onnx_run", "--optics", "4f", "--task", "classification",
                          "--dataset", "shapes-rgb", "--check"], capture_output=True, text=True, env=_env(),
                         timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    warned = [ln for ln in lines if ln.startswith("Warning: 4f: at 450 nm the field of view")]
    assert len(warned) == 1 and "grating orders" in warned[0], res.stderr
    assert ".py:" not in res.stderr and "return self.factory" not in res.stderr
    assert not list(tmp_path.iterdir())  # a check writes nothing


def test_a_repeated_warning_is_shown_once(capsys):
    from onnx_run.cli import _SHOWN, _show_warning

    _SHOWN.clear()
    for _ in range(3):
        _show_warning(UserWarning("the same\n  text"), UserWarning, "x.py", 1)
    _show_warning(UserWarning("another"), UserWarning, "x.py", 2)
    assert capsys.readouterr().err == "Warning: the same text\nWarning: another\n"
