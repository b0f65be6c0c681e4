"""The whole pipeline through the CLI on tiny configurations: one run per optics plugin and
one for segmentation (every stage: estimate, teacher, students, realise, fabricate,
compensate, report), then a resume that finds everything done.

The tests marked ``needs_cuda`` run the same on a GPU (agreement with the CPU, fp16/bf16,
torchrun with nccl); where ``torch.cuda.is_available()`` is false they are reported as skipped
with that reason. Device placement is checked on every machine by test_device_placement.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

TINY = ["--seeds", "1", "--distill", "none,ntkd", "--set", "train.epochs=1", "--set", "train.max_train=96",
        "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=96", "--set", "finetune.epochs=1",
        "--set", "run.progress=false", "--set", "estimate.inits=1", "--set", "estimate.max_train=60",
        "--set", "estimate.max_eval=30"]

CASES = {
    "4f": ["--optics", "4f", "--task", "classification"],
    "diffractive": ["--optics", "diffractive", "--task", "classification"],
    "metasurface": ["--optics", "metasurface", "--task", "classification", "--set", "optics.realise_iterations=3",
                    "--set", "optics.gs_iterations=2"],
    "segmentation": ["--optics", "4f", "--task", "segmentation", "--set", "task.num_images=120"],
}


def _run(args, tmp_path, *, launcher=()):
    env = dict(os.environ, ONNX_RUN_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, *launcher, "-m", "onnx_run", *args], capture_output=True, text=True,
                          env=env, timeout=900)


SLOW: set[str] = set()  # tiny enough for CI: every optics plugin and the segmentation task


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_whole_pipeline(case, tmp_path):
    args = [*CASES[case], *TINY, "--out", str(tmp_path / "runs")]
    res = _run(args, tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    for name in ("config.toml", "estimate.json", "teacher.json", "results.md", "results.json", "timings.json"):
        assert (run_dir / name).exists(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["method"] for r in results["simulation"]] == ["none", "ntkd"]
    assert [r["method"] for r in results["after_fabrication"]] == ["none", "e2e", "ntkd"]
    assert results["realised"] is not None
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"learning_curves.png", "kernels.png", "estimate_curve.png"} <= figures
    curve = results["estimate_curve"]  # 1, 2, 4, ... kernels up to the design's
    assert curve[0]["num_kernels"] == 1 and curve[-1]["num_kernels"] == results["estimate"]["num_kernels"]
    # segmentation regresses pixel by pixel with its decoder head's kernel, classification per image
    assert (results["estimate"]["kernel"] == "readout per pixel") == (case == "segmentation")
    assert ("masks.png" if case == "segmentation" else "confusion_ntkd.png") in figures
    text = (run_dir / "results.md").read_text()
    assert "## After fabrication" in text and "| ntkd |" in text
    again = _run(["--resume", str(run_dir)], tmp_path)  # everything is done: nothing retrained
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["simulation"] == results["simulation"]


@pytest.mark.slow
@pytest.mark.parametrize("case,floor", [("4f", 0.90), ("segmentation", 0.65)])
def test_defaults_reach_sensible_accuracy(case, floor, tmp_path):
    """The README's command at its real defaults (4f classification ~0.5 min, metasurface
    segmentation ~8 min on 2 cores): teacher and every student well above chance."""
    args = ["--optics", "4f", "--task", "classification"] if case == "4f" else \
        ["--optics", "metasurface", "--task", "segmentation"]
    res = _run([*args, "--out", str(tmp_path / "runs"), "--set", "run.progress=false"], tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    results = json.loads((next((tmp_path / "runs").iterdir()) / "results.json").read_text())
    metric = "test_" + results["primary_metric"]
    assert results["teacher"][metric] > floor
    assert all(r[metric + "_mean"] > floor for r in results["simulation"]), results["simulation"]
    assert all(r[metric + "_mean"] > floor - 0.05 for r in results["after_fabrication"])


# -- on a GPU --------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _results(out_dir):
    return json.loads((next(out_dir.iterdir()) / "results.json").read_text())


@needs_cuda
@pytest.mark.parametrize("case", list(CASES))
def test_whole_pipeline_on_cuda_agrees_with_the_cpu(case, tmp_path):
    runs = {}
    for device in ("cpu", "cuda"):
        res = _run([*CASES[case], *TINY, "--device", device, "--out", str(tmp_path / device)], tmp_path / device)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        runs[device] = _results(tmp_path / device)
    cpu, gpu = runs["cpu"], runs["cuda"]
    metric = "test_" + cpu["primary_metric"]
    # the same seeds and float32 on both, other reduction orders: after one epoch the metrics
    # agree to a few test images
    assert abs(cpu["teacher"][metric] - gpu["teacher"][metric]) <= 0.05
    for a, b in zip(cpu["simulation"], gpu["simulation"]):
        assert a["method"] == b["method"] and abs(a[metric + "_mean"] - b[metric + "_mean"]) <= 0.05
    assert cpu["estimate"]["estimate"] == pytest.approx(gpu["estimate"]["estimate"], abs=0.02)
    state = torch.load(next((tmp_path / "cuda").rglob("best.pt")), map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in state["model"].values())  # a GPU checkpoint loads on a CPU


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(precision, tmp_path):
    res = _run([*CASES["4f"], *TINY, "--device", "cuda", "--set", f"run.precision={precision}",
                "--out", str(tmp_path / "runs")], tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    results = _results(tmp_path / "runs")
    metric = "test_" + results["primary_metric"]
    assert all(r[metric + "_mean"] > 0.2 for r in results["simulation"])  # learning, not NaN


@needs_cuda
def test_torchrun_with_nccl(tmp_path):
    """One process per GPU (as many as there are, at most 2) in nccl's process group."""
    n = min(2, torch.cuda.device_count())
    args = [*CASES["4f"], *TINY, "--device", "cuda", "--stages", "teacher,students", "--out", str(tmp_path / "runs")]
    res = _run(args, tmp_path, launcher=("-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}"))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert res.stdout.count("[2/2] students done") == 1  # rank 0 speaks for all
    run_dir = next((tmp_path / "runs").iterdir())
    assert len(list((run_dir / "students").rglob("summary.json"))) == 2  # none and ntkd, written once
