"""torchrun with 2 CPU processes (gloo) gives the same training as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

ARGS = ["--optics", "4f", "--task", "classification", "--stages", "students",
        "--set", "train.epochs=2", "--set", "train.max_train=256", "--set", "train.batch_size=64",
        "--set", "run.progress=false", "--set", "train.optimizer=sgd"]
# SGD, not the default Adam: Adam divides by the gradient's running RMS, so a weight whose gradient
# is ~0 moves by up to lr per step on reduction-order noise alone (seen: 2e-4 on one CPU, not on
# another); SGD's step is linear in the gradient, so the two runs agree to float32 rounding


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", ONNX_RUN_LOAD_PLUGINS="4f")
    return env


#: the NTKD cases: the whole batch's kernel from gathered factors must equal one process's,
#: also when the kernel is taken on the first samples only (max_samples: 40 of each 64)
NTKD = ["--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=256"]
CASES = {"none": ["--distill", "none"], "ntkd": ["--distill", "ntkd", *NTKD],
         "ntkd-subset": ["--distill", "ntkd", *NTKD, "--set", "distill.ntkd.max_samples=40"]}


@pytest.mark.parametrize("case", [pytest.param("none", marks=pytest.mark.slow), "ntkd",
                                  pytest.param("ntkd-subset", marks=pytest.mark.slow)])
def test_two_process_ddp_matches_single_process(case, tmp_path):
    """CI runs the NTKD case (gradients averaged by DDP and the kernel from gathered factors);
    plain training and the kernel on the first samples only run with -m slow (15 s each)."""
    from onnx_run.plugins import registry

    if "4f" not in registry()["optics"]:
        pytest.fail("the onnx-run-optics-4f plugin is not installed: pip install -r requirements.txt")
    args = [*ARGS, *CASES[case], "--set", f"run.name={case}"]
    env = dict(_env(), ONNX_RUN_CACHE=str(tmp_path / "cache"))  # the same teacher for both runs
    single = subprocess.run([sys.executable, "-m", "onnx_run", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "onnx_run", *args, "--out", str(tmp_path / "two")],
                           capture_output=True, text=True, env=env, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    method = CASES[case][1]
    a = tmp_path / "one" / case / "students" / method / "seed0"
    b = tmp_path / "two" / case / "students" / method / "seed0"
    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert abs(sa["test_accuracy"] - sb["test_accuracy"]) <= 0.02
    # checkpoints written once, by rank 0, and the same weights up to reduction order
    wa = torch.load(a / "last.pt", weights_only=True)["model"]
    wb = torch.load(b / "last.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6), k
    assert len((b / "metrics.jsonl").read_text().splitlines()) == 2
    assert multi.stdout.count("students done") == 1  # rank 0 speaks for all
    if method == "ntkd":  # the NTK term itself, per epoch, as logged (mean over ranks of the same value)
        la = [json.loads(r)["train_ntk_loss"] for r in (a / "metrics.jsonl").read_text().splitlines()]
        lb = [json.loads(r)["train_ntk_loss"] for r in (b / "metrics.jsonl").read_text().splitlines()]
        assert la == pytest.approx(lb, rel=1e-5, abs=1e-7)


def test_the_whole_pipeline_under_torchrun_and_its_resume(tmp_path):
    """The issue's launch: every stage under torchrun (estimate, realise, fabricate, compensate
    and report on rank 0 alone, the others waiting), then --resume under torchrun."""
    tiny = ["--optics", "4f", "--task", "classification", "--seeds", "1", "--distill", "none,ntkd",
            *[a for kv in ("train.epochs=1", "train.max_train=96", "teacher_train.epochs=1", "teacher_train.max_train=96",
                           "finetune.epochs=1", "run.progress=false", "estimate.inits=1", "estimate.max_train=60",
                           "estimate.max_eval=30") for a in ("--set", kv)]]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "onnx_run"]
    res = subprocess.run([*launch, *tiny, "--out", str(tmp_path / "runs")], capture_output=True, text=True,
                         env=_env(), timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert res.stdout.count("[7/7] report done") == 1
    run_dir = next((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["method"] for r in results["after_fabrication"]] == ["none", "e2e", "ntkd"]
    again = subprocess.run([*launch, "--resume", str(run_dir)], capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["simulation"] == results["simulation"]


def test_a_torchrun_training_killed_mid_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL to every process of a torchrun run during the students' training, then --resume
    under torchrun: the same weights and metrics as an uninterrupted torchrun run."""
    import signal
    import time

    args = [*ARGS, *CASES["ntkd"], "--set", "train.epochs=8", "--set", "train.max_train=256"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "onnx_run"]
    env = dict(_env(), ONNX_RUN_CACHE=str(tmp_path / "cache"))
    full = subprocess.run([*launch, *args, "--out", str(tmp_path / "full")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    proc = subprocess.Popen([*launch, *args, "--out", str(tmp_path / "cut")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    run = tmp_path / "cut" / "4f-classification-digits"
    metrics = run / "students" / "ntkd" / "seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    seed_dir = run / "students" / "ntkd" / "seed0"
    assert not (seed_dir / "summary.json").exists() and (seed_dir / "last.pt").exists()
    again = subprocess.run([*launch, "--resume", str(run)], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    ref = tmp_path / "full" / "4f-classification-digits" / "students" / "ntkd" / "seed0"
    wa = torch.load(ref / "last.pt", weights_only=True)["model"]
    wb = torch.load(seed_dir / "last.pt", weights_only=True)["model"]
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6), k
    rows = [json.loads(r) for r in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(8))  # no epoch lost or repeated


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    """nccl needs a GPU per process: a second process on a one-GPU machine is told so."""
    from onnx_run.errors import UserError
    from onnx_run.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"^torchrun: the process with LOCAL_RANK 1 has no GPU of its own \(this "
                                        r"machine has 1\); use --nproc-per-node 1 or fewer$"):
        distributed.init_from_env(torch.device("cuda"))
