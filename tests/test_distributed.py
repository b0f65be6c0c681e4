"""torchrun with 2 CPU processes (gloo) gives the same training as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ARGS = ["--optics", "4f", "--task", "classification", "--distill", "none", "--stages", "students",
        "--set", "train.epochs=2", "--set", "train.max_train=256", "--set", "train.batch_size=64",
        "--set", "run.progress=false", "--set", "train.optimizer=sgd"]
# SGD, not the default Adam: Adam divides by the gradient's running RMS, so a weight whose gradient
# is ~0 moves by up to lr per step on reduction-order noise alone (seen: 2e-4 on one CPU, not on
# another); SGD's step is linear in the gradient, so the two runs agree to float32 rounding


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", ONNX_RUN_LOAD_PLUGINS="4f")
    return env


def test_two_process_ddp_matches_single_process(tmp_path):
    from onnx_run.plugins import registry

    if "4f" not in registry()["optics"]:
        pytest.fail("the onnx-run-optics-4f plugin is not installed: pip install -r requirements.txt")
    single = subprocess.run([sys.executable, "-m", "onnx_run", *ARGS, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=_env(), timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "onnx_run", *ARGS, "--out", str(tmp_path / "two")],
                           capture_output=True, text=True, env=_env(), timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = tmp_path / "one" / "4f-classification-digits" / "students" / "none" / "seed0"
    b = tmp_path / "two" / "4f-classification-digits" / "students" / "none" / "seed0"
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert abs(sa["test_accuracy"] - sb["test_accuracy"]) <= 0.02
    # checkpoints written once, by rank 0, and the same weights up to reduction order
    wa = torch.load(a / "last.pt", weights_only=True)["model"]
    wb = torch.load(b / "last.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6), k
    assert len((b / "metrics.jsonl").read_text().splitlines()) == 2
    assert multi.stdout.count("[1/1] students done") == 1  # rank 0 speaks for all
