"""``onnx-run plugin new``: each kind of generated package passes its own tests (the onnx-run
contract checks and every stage of a tiny run); the optics one installs with pip, is listed by
``onnx-run plugins`` and runs every stage from the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from onnx_run.cli import cli
from onnx_run.scaffold import KINDS


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _generated_tests(kind: str, tmp_path, *select: str) -> str:
    res = CliRunner().invoke(cli, ["plugin", "new", f"my-{kind}", "--kind", kind, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    package = tmp_path / f"onnx-run-my-{kind}"
    assert (package / "pyproject.toml").exists() and not list(tmp_path.glob(".onnx-run-*"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", *select],
                         cwd=package, capture_output=True, text=True,
                         env=_env(PYTHONPATH=str(package), ONNX_RUN_CACHE=str(tmp_path / "cache")), timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout
    return run.stdout


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_generated_plugin_passes_its_own_contract_tests(kind, tmp_path):
    """In CI: the contract and closed-form tests of each kind (every stage: the optics below)."""
    _generated_tests(kind, tmp_path, "-k", "not every_stage")


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_generated_plugin_passes_all_its_tests(kind, tmp_path):
    """With -m slow: each kind's own every-stage test too (a tiny run on the reference optics)."""
    _generated_tests(kind, tmp_path)


def test_a_generated_optics_installs_is_listed_and_runs_every_stage(tmp_path):
    assert CliRunner().invoke(cli, ["plugin", "new", "pinhole", "--kind", "optics", "--out", str(tmp_path)]).exit_code == 0
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(site), str(tmp_path / "onnx-run-pinhole")],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    env = _env(PYTHONPATH=str(site), ONNX_RUN_CACHE=str(tmp_path / "cache"))
    listed = subprocess.run([sys.executable, "-m", "onnx_run", "plugins", "--json"], capture_output=True, text=True,
                            env=env, check=True).stdout
    assert '"optics": [\n        "pinhole"' in listed and "onnx-run-pinhole" in listed
    from onnx_run.testing import TINY_RUN

    run = subprocess.run([sys.executable, "-m", "onnx_run", *TINY_RUN, "--optics", "pinhole", "--task",
                          "classification", "--out", str(tmp_path / "runs")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    run_dir = tmp_path / "runs" / "pinhole-classification-digits"
    assert (run_dir / "results.md").exists()
    assert (next(run_dir.glob("realised/*/export")) / "transmission.npy").exists()
