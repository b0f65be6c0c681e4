"""Training loop: checkpoints, resume after a kill with identical results, NaN stop, teachers."""

from __future__ import annotations

import json
import types

import pytest
import torch
from click.testing import CliRunner

from onnx_run.cli import cli
from onnx_run.config import load_config
from onnx_run.distill.losses import NoDistillation
from onnx_run.errors import UserError
from onnx_run.train.checkpoint import load_checkpoint
from onnx_run.train.loop import Output, Recipe, TrainData, Trainee, Training, TrainingDiverged, train_model


class NaNAfter(NoDistillation):
    def __init__(self, steps):
        super().__init__(None)
        self.left = steps

    def __call__(self, ctx):
        loss, logs = super().__call__(ctx)
        self.left -= 1
        return (loss * float("nan") if self.left < 0 else loss), logs


@pytest.fixture
def setup(tiny_training):
    return tiny_training(["train.epochs=3", "train.max_train=200", "train.batch_size=32"])


def _train(setup, run_dir, loss):
    cfg, task, splits, model = setup
    m = model()
    return m, Training(trainee=Trainee(model=m, loss_fn=loss), data=TrainData(task=task, splits=splits),
                       recipe=Recipe(settings=cfg.train, seed=3, device=torch.device("cpu")),
                       output=Output(run_dir=run_dir, progress=False)).run()


def test_resume_after_kill_is_identical(setup, tmp_path, kill_after):
    ref_model, ref = _train(setup, tmp_path / "ref", NoDistillation(None))
    steps_per_epoch = 200 // 32 + 1
    with pytest.raises(kill_after.Killed):
        _train(setup, tmp_path / "killed", kill_after(steps_per_epoch * 2 - 3))  # dies inside epoch 2
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 0
    with pytest.raises(kill_after.Killed):
        _train(setup, tmp_path / "killed", kill_after(steps_per_epoch + 2))  # resumes, dies inside epoch 3
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    resumed_model, resumed = _train(setup, tmp_path / "killed", NoDistillation(None))
    assert resumed["test_accuracy"] == ref["test_accuracy"] and resumed["test_loss"] == ref["test_loss"]
    for (n, a), (_, b) in zip(ref_model.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(a, b), n
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert [r["val_accuracy"] for r in rows] == [r["val_accuracy"] for r in ref_rows]


def test_finished_run_is_not_retrained(setup, tmp_path, kill_after):
    _, first = _train(setup, tmp_path / "run", NoDistillation(None))
    _, again = _train(setup, tmp_path / "run", kill_after(0))  # would raise if it trained
    assert again == first


def test_nan_loss_stops_and_keeps_last_good_checkpoint(setup, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step \d+ \(lr .*\); stopped, epoch 1 is kept in .*last.pt; allowed: a lower"):
        _train(setup, tmp_path / "run", NaNAfter(200 // 32 + 1 + 2))
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "run" / "summary.json").exists()
    assert isinstance(TrainingDiverged("x"), UserError)


def test_teacher_cached_and_checkpoint_mismatch(setup, tmp_path, monkeypatch):
    from onnx_run.train.teacher import cache_root, get_teacher

    cfg, task, splits, _ = setup
    cfg = load_config(None, ["teacher_train.epochs=1", "teacher_train.max_train=128"],
                      {"optics": "tiny", "distill": "none"})
    teacher, info = get_teacher(cfg, task, splits, dataset="digits", seed=0, device=torch.device("cpu"),
                                progress=False)
    assert (cache_root() / "teachers").exists() and info["test_accuracy"] > 0.1
    calls = []
    monkeypatch.setattr("onnx_run.train.teacher.Training",
                        lambda **k: calls.append(1) or types.SimpleNamespace(
                            run=lambda: json.loads((k["output"].run_dir / "summary.json").read_text())))
    again, info2 = get_teacher(cfg, task, splits, dataset="digits", seed=0, device=torch.device("cpu"),
                               progress=False)
    assert info2["test_accuracy"] == info["test_accuracy"]
    for a, b in zip(teacher.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    bad = tmp_path / "bad.pt"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(UserError, match=r"--teacher-checkpoint .*bad.pt: parameter names do not match"):
        get_teacher(cfg, task, splits, dataset="digits", seed=0, device=torch.device("cpu"), checkpoint=str(bad))
    good_names = {k: torch.zeros(1) for k in teacher.state_dict()}
    torch.save(good_names, bad)
    with pytest.raises(UserError, match=r"shape mismatch for features.0.weight: checkpoint \(1,\), model \(6, 1, 5, 5\)"):
        get_teacher(cfg, task, splits, dataset="digits", seed=0, device=torch.device("cpu"), checkpoint=str(bad))


def test_pipeline_through_cli_with_seeds(tmp_path, tiny_optics):
    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none,kd", "--seeds", "2", "--out", str(out),
            "--set", "train.epochs=1", "--set", "train.max_train=128", "--set", "teacher_train.epochs=1",
            "--set", "teacher_train.max_train=256", "--set", "run.progress=false"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    run_dir = out / "tiny-classification-digits"
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["method"] for r in results["simulation"]] == ["none", "kd"]
    assert all(r["n"] == 2 for r in results["simulation"])
    assert "| none |" in (run_dir / "results.md").read_text() and "±" in (run_dir / "results.md").read_text()
    # a second invocation finds everything done; a different config in the same dir is refused
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    other = CliRunner().invoke(cli, args[:-2] + ["--set", "train.epochs=2"] + args[-2:])
    assert other.exit_code == 2 and "holds a different config" in other.output



def test_train_model_is_deprecated_but_trains_the_same(setup, tmp_path):
    """The old 19-argument entry point warns and runs the same Training (same weights)."""
    cfg, task, splits, model = setup
    ref_model, ref = _train(setup, tmp_path / "new", NoDistillation(None))
    old_model = model()
    with pytest.warns(DeprecationWarning, match="use onnx_run.train.Training"):
        old = train_model(old_model, task, splits, cfg.train, tmp_path / "old", loss_fn=NoDistillation(None),
                          seed=3, device=torch.device("cpu"), progress=False)
    assert old["test_accuracy"] == ref["test_accuracy"]
    for a, b in zip(ref_model.state_dict().values(), old_model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="unexpected keyword argument 'sed'"):
        train_model(model(), task, splits, cfg.train, tmp_path / "bad", loss_fn=NoDistillation(None), sed=3)


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_fits_where_it_goes(setup, tmp_path, monkeypatch, capsys, terminal):
    """Redirected: one line per epoch, no carriage-return bar; on a terminal: the bar, no log
    lines (the bar says it); ``progress=False``: nothing either way."""
    import sys

    cfg, task, splits, model = setup
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal, raising=False)

    def run(name, progress):
        Training(trainee=Trainee(model=model(), loss_fn=NoDistillation(None)), data=TrainData(task=task, splits=splits),
                 recipe=Recipe(settings=cfg.train, seed=3, device=torch.device("cpu")),
                 output=Output(run_dir=tmp_path / name, desc="student none", progress=progress)).run()
        return capsys.readouterr().err

    err = run("shown", True)
    lines = [ln for ln in err.splitlines() if ln.startswith("student none epoch ") and ": train loss " in ln]
    if terminal:
        assert not lines and "\r" in err  # tqdm redraws in place
    else:
        assert "\r" not in err and len(lines) == 3
        assert lines[0].startswith("student none epoch 1/3: train loss ") and " val accuracy " in lines[0]
    assert run("quiet", False) == ""


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_out_that_is_a_file_is_one_line(tmp_path, tiny_optics, where):
    """``--out`` naming a file (or a folder under one): exit 2, one Error line, the file as it was."""
    blocker = tmp_path / "afile"
    blocker.write_text("keep me\n")
    out = blocker if where == "file" else blocker / "runs"
    res = CliRunner().invoke(cli, ["--optics", "tiny", "--task", "classification", "--distill", "none",
                                   "--stages", "students", "--out", str(out), "--set", "train.epochs=1",
                                   "--set", "run.progress=false"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert errors == [f"Error: --out / run.out: {blocker} is a file, not a folder; allowed: a folder (it is "
                      f"created if missing) or a path that does not exist yet"]
    assert "Traceback" not in res.output and blocker.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


class _NotATensor:
    pass


@pytest.mark.parametrize("content, message", [
    ("text", "not a torch checkpoint (torch.load failed with"),
    ("object", "_NotATensor), not only tensors, and onnx-run never unpickles"),
    ("wrong keys", "--teacher-checkpoint {path}: parameter names do not match the model"),
])
def test_a_bad_teacher_checkpoint_writes_nothing(tmp_path, tiny_optics, content, message):
    """Refused in one line before the run directory exists (it used to leave config.toml)."""
    path = tmp_path / "teacher.pt"
    if content == "text":
        path.write_text("not a checkpoint\n")
    else:
        torch.save({"model": _NotATensor()} if content == "object" else {"w": torch.zeros(2)}, path)
    out = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["--optics", "tiny", "--task", "classification", "--distill", "none",
                                   "--teacher-checkpoint", str(path), "--out", str(out), "--stages", "teacher"])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and message.format(path=path) in errors[0], res.output
    assert "weights_only=False" not in res.output and not out.exists()


def test_a_teacher_at_chance_is_reported(setup):
    """A teacher within 5 points of always answering the most frequent class learned nothing:
    one warning, and the reason in its info (teacher.json)."""
    from onnx_run.train.teacher import _warn_at_chance

    _, task, splits, _ = setup
    chance = task.chance_score(splits)
    labels = splits.val.tensors[1]
    assert chance == pytest.approx(float(torch.bincount(labels).max()) / len(labels))
    info = {"name": "alexnet", "val_accuracy": chance + 0.01}
    with pytest.warns(UserWarning, match=r"teacher alexnet: accuracy .* is at chance \(the most frequent class gives"):
        _warn_at_chance(task, splits, info)
    assert "its training failed" in info["warning"]
    good = {"name": "alexnet", "val_accuracy": chance + 0.3}
    _warn_at_chance(task, splits, good)
    assert "warning" not in good


def test_resume_continues_the_stages_that_were_asked(tmp_path, tiny_optics):
    """``--resume`` of a ``--stages teacher,students`` run runs those two again (finding them
    done), not all seven; ``--stages`` on the resume chooses others."""
    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out),
            "--stages", "teacher,students", "--set", "train.epochs=1", "--set", "train.max_train=96",
            "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=96", "--set", "run.progress=false"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    run_dir = out / "tiny-classification-digits"
    again = CliRunner().invoke(cli, ["--resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert f"run directory: {run_dir}; stages: teacher, students" in again.output
    assert not (run_dir / "realised").exists() and not (run_dir / "fabricated").exists()
    (run_dir / "stages.json").write_text("{}")
    broken = CliRunner().invoke(cli, ["--resume", str(run_dir)])
    assert broken.exit_code == 2 and "stages.json: not a list of stages" in broken.output
    other = CliRunner().invoke(cli, ["--resume", str(run_dir), "--stages", "students"])
    assert other.exit_code == 0 and "stages: students" in other.output


def test_quiet_silences_progress_and_warnings_without_changing_the_run(tmp_path, tiny_optics):
    """``-q``: no per-epoch lines, no warnings; the run's config (run.progress) stays as it was,
    so the same command without -q finds the same run directory."""
    import tomllib

    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out), "--stages",
            "teacher,students", "--set", "train.epochs=1", "--set", "train.max_train=96",
            "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=96"]
    loud = CliRunner().invoke(cli, args + ["--set", "run.name=loud"])
    assert loud.exit_code == 0 and "student none seed 0 epoch 1/1: train loss" in loud.output
    quiet = CliRunner().invoke(cli, ["-q", *args])
    assert quiet.exit_code == 0, quiet.output
    assert "epoch 1/1" not in quiet.output and "Warning" not in quiet.output and "[2/2] students done" in quiet.output
    run_dir = out / "tiny-classification-digits"
    assert tomllib.loads((run_dir / "config.toml").read_text())["run"]["progress"] is True
    assert CliRunner().invoke(cli, args).exit_code == 0  # the same run, not "a different config"


def test_resume_says_what_changed_since_the_run_started(tmp_path, tiny_optics):
    """run.json records the config and the distributions a run started with; an edited
    config.toml or another version of a distribution is one line naming the change."""
    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out), "--stages",
            "teacher,students", "--set", "train.epochs=1", "--set", "train.max_train=96",
            "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=96", "--set", "run.progress=false"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    run_dir = out / "tiny-classification-digits"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["distributions"]["onnx-run"] and record["config"]["optics"]["num_kernels"] == 4
    config = run_dir / "config.toml"
    original = config.read_text()
    config.write_text(original.replace("num_kernels = 4", "num_kernels = 6"))
    res = CliRunner().invoke(cli, ["--resume", str(run_dir)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert ("config.toml was edited since the run started (optics.num_kernels 4 -> 6); a run continues with the "
            "config it started with") in res.output
    config.write_text(original)
    record["distributions"]["onnx-run"] = "0.0.1"
    (run_dir / "run.json").write_text(json.dumps(record))
    res = CliRunner().invoke(cli, ["--resume", str(run_dir)])
    assert res.exit_code == 2 and "made with other versions (onnx-run 0.0.1 -> " in res.output


def test_threads_follow_the_free_cores_and_a_run_keeps_its_count(tmp_path, tiny_optics, monkeypatch):
    """run.threads = 0: the cores other processes leave free (at least 1); the count a run
    started with is recorded in run.json and a resume computes with it, whatever the load."""
    import os

    import onnx_run.train.loop as loop

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(loop, "_busy_cores", lambda: 0.0)
    assert loop.auto_threads() == cores
    monkeypatch.setattr(loop, "_busy_cores", lambda: cores + 3.0)
    assert loop.auto_threads() == 1
    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out), "--stages",
            "students", "--set", "train.epochs=1", "--set", "train.max_train=64", "--set", "run.progress=false"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    run_dir = out / "tiny-classification-digits"
    assert json.loads((run_dir / "run.json").read_text())["threads"] == 1
    monkeypatch.setattr(loop, "_busy_cores", lambda: 0.0)  # the machine is free now
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    assert CliRunner().invoke(cli, ["--resume", str(run_dir)]).exit_code == 0
    assert seen == [1]


def _spin(seconds):
    import time

    end = time.time() + seconds
    while time.time() < end:
        pass


def test_a_busy_neighbour_is_seen_at_once():
    """The busy cores are counted now (runnable tasks), not a minute later (the load average)."""
    import multiprocessing as mp
    import time

    from onnx_run.train.loop import _busy_cores

    neighbour = mp.get_context("spawn").Process(target=_spin, args=(5.0,))
    neighbour.start()
    try:
        time.sleep(1.0)  # spawn start-up over: it spins
        assert _busy_cores() >= 1
    finally:
        neighbour.terminate()
        neighbour.join()

