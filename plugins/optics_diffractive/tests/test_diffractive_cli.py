"""The plugin through the CLI: listing, a tiny pipeline run, the all-optical task."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from onnx_run.cli import cli

SETTINGS = {"optics.num_neurons": "24", "optics.num_layers": "2", "optics.spacing_mm": "6.0",
            "optics.num_kernels": "4", "optics.kernel_size": "3", "train.epochs": "1", "train.max_train": "96",
            "run.progress": "false"}


def tiny(**extra: str) -> list[str]:
    """--set arguments of a tiny stack; ``extra`` (dots as __) overrides or removes (value None)."""
    settings = dict(SETTINGS)
    for key, value in extra.items():
        key = key.replace("__", ".")
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    return [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNX_RUN_CACHE", str(tmp_path / "cache"))


def test_installed_entry_point_is_listed():
    out = subprocess.run([sys.executable, "-m", "onnx_run", "plugins", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    text = json.dumps(rows)
    assert "onnx-run-optics-diffractive" in text and "diffractive-misalignment" in text and "all-optical" in text


def test_tiny_pipeline_trains_realises_fabricates(tmp_path):
    errors = ('[{name = "diffractive-misalignment"}, {name = "diffractive-axial"}, {name = "diffractive-height"}, '
              '{name = "sensor-noise"}]')
    args = ["--optics", "diffractive", "--task", "classification", "--distill", "none", "--out", str(tmp_path),
            "--stages", "students,realise,fabricate", *tiny(optics__realise_phase_bits="4"),
            "--set", f"fabricate.errors={errors}"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    run = tmp_path / "diffractive-classification-digits"
    summary = json.loads((run / "students/none/seed0/summary.json").read_text())
    assert 0 <= summary["test_accuracy"] <= 1
    real = json.loads(next((run / "realised").glob("*/summary.json")).read_text())
    assert real["phase_bits"] == 4 and real["max_phase_change_rad"] > 0
    assert (next((run / "realised").glob("*/export")) / "stack.json").exists()
    assert any((run / "fabricated").glob("*/device.json"))


def test_bad_geometry_fails_before_a_run_directory(tmp_path):
    res = CliRunner().invoke(cli, ["--optics", "diffractive", "--out", str(tmp_path), "--set",
                                   "optics.num_neurons=16"])
    assert res.exit_code == 2
    assert "smallest layer that fits them is 40 neurons" in res.output
    assert not any(tmp_path.iterdir())


def test_all_optical_task_reads_one_detector_per_class(tmp_path):
    args = ["--optics", "diffractive", "--task", "all-optical", "--distill", "none", "--out", str(tmp_path),
            "--stages", "students", *tiny(optics__num_kernels=None, optics__num_neurons="32",
                                          optics__kernel_size="2")]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    run = tmp_path / "diffractive-all-optical-digits"
    cfg = (run / "config.toml").read_text()
    assert "num_kernels = 10" in cfg
    state = torch.load(run / "students/none/seed0/best.pt", weights_only=False)["model"]
    assert state["backend.log_gain"].shape == (10,)


def test_detector_backend_is_the_brightest_region():
    from onnx_run_optics_diffractive.alloptical import DetectorBackend

    feats = torch.zeros(2, 10, 2, 2)
    feats[0, 3] = 1.0
    feats[1, 7] = 0.5
    feats[1, 2] = 0.1
    logits = DetectorBackend(10, temperature=10.0)(feats).detach()
    assert logits.argmax(1).tolist() == [3, 7]
    assert float(logits[0, 3]) == pytest.approx(10.0)


def test_all_optical_refuses_a_wrong_region_count():
    from onnx_run.errors import UserError
    from onnx_run_optics_diffractive.alloptical import AllOpticalConfig, AllOpticalTask

    with pytest.raises(UserError, match="set optics.num_kernels = 10"):
        AllOpticalTask(AllOpticalConfig()).build_backend((9, 4, 4), 10)
