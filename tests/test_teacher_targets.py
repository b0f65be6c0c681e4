"""The teacher's targets on the training images: computed once per run, or out of fold."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner

from onnx_run.cli import cli
from onnx_run.config import load_config
from onnx_run.distill.losses import KDConfig, KDLoss, NTKDConfig, NTKDLoss
from onnx_run.train.loop import Output, Recipe, TrainData, Trainee, Training, predict

CPU = torch.device("cpu")


@pytest.fixture
def setup(tiny_training):
    return tiny_training(["train.epochs=2", "train.max_train=96", "train.batch_size=32"])


class Teacher(torch.nn.Module):
    """A small frozen classifier that counts the images it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return 3 * self.net(x)


def _train(setup, run_dir, loss, teacher, **trainee):
    cfg, task, splits, build = setup
    model = build()
    summary = Training(trainee=Trainee(model=model, loss_fn=loss, teacher=teacher, **trainee),
                       data=TrainData(task=task, splits=splits),
                       recipe=Recipe(settings=cfg.train, seed=3, device=CPU),
                       output=Output(run_dir=run_dir, progress=False)).run()
    return model, summary


def test_kd_reads_the_teachers_outputs_once_and_trains_as_with_a_forward_per_step(setup, tmp_path, monkeypatch):
    teacher = Teacher()
    table_model, _ = _train(setup, tmp_path / "table", KDLoss(KDConfig()), teacher)
    # one pass over the 96 training images (+ a 1-image probe), not one per step and epoch
    assert teacher.images == 96 + 1
    monkeypatch.setattr("onnx_run.train.loop.TEACHER_OUTPUTS_MAX_BYTES", 0)  # too large to keep: per step
    teacher.images = 0
    step_model, _ = _train(setup, tmp_path / "step", KDLoss(KDConfig()), teacher)
    assert teacher.images == 1 + 2 * 96
    for (name, a), b in zip(table_model.state_dict().items(), step_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name


def test_given_targets_are_what_kd_sees(setup, tmp_path):
    """Trainee.teacher_outputs replaces the teacher's own outputs, row for row."""
    cfg, task, splits, _ = setup
    teacher = Teacher()
    own = predict(teacher, splits.train.tensors[0])
    seen = []

    class Spy(KDLoss):
        def __call__(self, ctx):
            seen.append((ctx.index.clone(), ctx.teacher_outputs.clone()))
            return super().__call__(ctx)

    given = -own
    teacher.images = 0
    _train(setup, tmp_path / "given", Spy(KDConfig()), teacher, teacher_outputs=given)
    assert teacher.images == 0  # never run
    for idx, out in seen:
        assert torch.equal(out, given[idx])
    with pytest.raises(Exception, match="3 teacher outputs for"):
        _train(setup, tmp_path / "short", KDLoss(KDConfig()), teacher, teacher_outputs=given[:3])


def test_ntkd_runs_no_teacher_forward(setup, tmp_path):
    """NTKD reads the teacher's kernel, never its outputs: no teacher forward at all."""
    cfg, task, splits, _ = setup
    teacher = Teacher()
    kernel = torch.eye(len(splits.train)) + 0.5
    _train(setup, tmp_path / "ntkd", NTKDLoss(NTKDConfig()), teacher, teacher_kernel=lambda xb, idx: kernel[idx][:, idx])
    assert teacher.images == 0


def test_out_of_fold_targets_come_from_teachers_that_never_saw_the_image(setup, monkeypatch):
    from onnx_run.train import teacher as teachers

    cfg, task, splits, _ = setup
    cfg = load_config(None, ["teacher_train.epochs=1", "teacher_train.batch_size=64"],
                      {"optics": "tiny", "distill": "kd"})
    trained_on = []
    real = teachers._trained_teacher

    def spy(cfg_, task_, fold_splits, *args, **kwargs):
        trained_on.append(fold_splits.train.tensors[0])
        return real(cfg_, task_, fold_splits, *args, **kwargs)

    monkeypatch.setattr(teachers, "_trained_teacher", spy)
    x = splits.train.tensors[0]
    outputs, infos = teachers.out_of_fold_outputs(cfg, task, splits, dataset="digits", seed=0, device=CPU,
                                                  folds=3, progress=False)
    parts = teachers.folds_of(len(x), 3, 0)
    assert sorted(torch.cat(parts).tolist()) == list(range(len(x)))  # a partition
    assert [i["fold"] for i in infos] == [1, 2, 3] and all(i["test_accuracy"] > 0.1 for i in infos)
    for k, held in enumerate(parts):
        seen = trained_on[k]
        assert seen.shape[0] == len(x) - len(held)
        # no held-out image is among the fold teacher's training images
        flat_seen = {tuple(r.tolist()) for r in seen.flatten(1)}
        assert not any(tuple(r.tolist()) in flat_seen for r in x[held].flatten(1)[:20])
        model = teachers.build_teacher(cfg, teachers.teacher_spec(task, splits), 0)
        model.load_state_dict(torch.load(infos[k]["source"] + "/best.pt", weights_only=True)["model"])
        assert torch.allclose(outputs[held], predict(model, x[held]), atol=1e-5)
    # cached: a second call trains nothing
    trained_on.clear()
    monkeypatch.setattr("onnx_run.train.loop._Loop.epoch", lambda self, epoch: pytest.fail("retrained"))
    again, _ = teachers.out_of_fold_outputs(cfg, task, splits, dataset="digits", seed=0, device=CPU, folds=3,
                                            progress=False)
    assert torch.equal(again, outputs)


def _cli(tmp_path, *extra):
    out = tmp_path / "runs"
    return out, CliRunner().invoke(cli, [
        "--optics", "tiny", "--task", "classification", "--distill", "kd", "--out", str(out),
        "--stages", "teacher,students", "--set", "train.epochs=1", "--set", "train.max_train=128",
        "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=256", "--set", "run.progress=false",
        *extra])


def test_out_of_fold_kd_through_the_cli(tmp_path, tiny_optics):
    out, res = _cli(tmp_path, "--set", "distill.kd.folds=2")
    assert res.exit_code == 0, res.output
    info = json.loads((out / "tiny-classification-digits" / "teacher.json").read_text())
    assert [f["fold"] for f in info["out_of_fold_2"]] == [1, 2]
    assert (out / "tiny-classification-digits" / "students" / "kd" / "seed0" / "summary.json").exists()


@pytest.mark.parametrize("value", ["1", "-2", "21"])
def test_bad_folds_is_one_line(tmp_path, tiny_optics, value):
    out, res = _cli(tmp_path, "--set", f"distill.kd.folds={value}")
    assert res.exit_code == 2
    assert "distill.kd.folds" in res.output and "number of folds from 2 to 20" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_folds_with_a_teacher_checkpoint_is_refused(tmp_path, tiny_optics):
    ckpt = tmp_path / "t.pt"
    torch.save({}, ckpt)
    out, res = _cli(tmp_path, "--set", "distill.kd.folds=2", "--teacher-checkpoint", str(ckpt))
    assert res.exit_code == 2 and "distill.kd.folds: out-of-fold targets (2 folds) need fold teachers" in res.output
    assert not out.exists()


@pytest.mark.parametrize("distill, stages, refused", [("ntkd", [], True), ("none", ["--stages", "students"], False),
                                                     ("none", [], True), ("none", ["--stages", "teacher"], True)])
def test_a_teacher_that_cannot_take_the_images_is_one_line_before_anything_is_written(tmp_path, distill, stages,
                                                                                      refused):
    """LeNet's convolutions need 10 px; at a 7 px optics input a run whose stages use the teacher
    (its own stage, or students that distil) is refused in one line, with nothing written;
    students without distillation alone have no teacher to ask."""
    out = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["--optics", "4f", "--task", "classification", "--distill", distill, "--set",
                                   "optics.input_size_px=7", "--out", str(out), *stages, "--check"])
    if refused:
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert "teacher.name: 'lenet' cannot take the run's 7 x 7 px images (optics.input_size_px)" in res.output
        assert "Traceback" not in res.output
    else:
        assert res.exit_code == 0, res.output
    assert not out.exists()


def test_teacher_train_refuses_a_teacher_that_cannot_take_the_images_in_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["teacher", "train", "--optics", "4f", "--task", "classification", "--distill",
                                   "none", "--set", "optics.input_size_px=7", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert "teacher.name: 'lenet' cannot take the run's 7 x 7 px images" in res.output


def test_the_teacher_check_leaves_the_random_state_alone(tiny_optics):
    from onnx_run.train.teacher import check_teacher_input

    cfg = load_config(None, ["optics.input_size_px=12"], {"optics": "tiny", "task": "classification"})
    task = cfg.task.build()
    splits = task.datasets(image_size=(12, 12), channels=1, seed=0)
    before = torch.get_rng_state()
    check_teacher_input(cfg, task, splits)  # builds and runs a LeNet: its init draws nothing the run sees
    assert torch.equal(torch.get_rng_state(), before)


def test_a_run_directory_from_before_a_new_setting_still_resumes(tmp_path, tiny_optics):
    out, res = _cli(tmp_path)
    assert res.exit_code == 0, res.output
    run_dir = out / "tiny-classification-digits"
    path = run_dir / "config.toml"
    text = path.read_text()
    assert "folds = 2\n" in text
    path.write_text(text.replace("folds = 2\n", ""))  # as written before distill.kd.folds existed
    again = CliRunner().invoke(cli, ["--resume", str(run_dir), "--stages", "teacher,students"])
    assert again.exit_code == 0, again.output


def test_a_failed_fold_teacher_gives_way_to_the_teacher_with_a_warning(setup):
    """A fold teacher far below the whole-split teacher on validation (it failed to train)
    would teach its fold wrong targets: that fold gets the teacher's own outputs, and says so."""
    from onnx_run.train import teacher as teachers

    cfg, task, splits, _ = setup
    cfg = load_config(None, ["teacher_train.epochs=1", "teacher_train.batch_size=64"],
                      {"optics": "tiny", "distill": "kd"})
    whole = Teacher()
    x = splits.train.tensors[0]
    with pytest.warns(UserWarning) as caught:
        outputs, infos = teachers.out_of_fold_outputs(cfg, task, splits, dataset="digits", seed=0, device=CPU,
                                                      folds=2, progress=False, fallback=(whole, 0.95))
    said = [str(w.message) for w in caught]
    for fold in (1, 2):  # one line for each fold that gave way
        pattern = rf"fold teacher {fold}/2 reached accuracy .* against the teacher's 0\.950"
        assert sum(bool(re.search(pattern, m)) for m in said) == 1, said
    fold_vals = [i["val_accuracy"] for i in infos]
    assert all(v < 0.85 for v in fold_vals)  # one epoch on half the images: well below 0.95 - 0.10
    assert [i["targets"] for i in infos] == ["teacher", "teacher"]
    assert torch.allclose(outputs, predict(whole, x), atol=1e-5)
    # a teacher within the margin keeps its fold teacher's targets
    keep, infos = teachers.out_of_fold_outputs(cfg, task, splits, dataset="digits", seed=0, device=CPU, folds=2,
                                               progress=False, fallback=(whole, min(fold_vals)))
    assert [i["targets"] for i in infos] == ["fold teacher", "fold teacher"]
    assert not torch.allclose(keep, outputs)
