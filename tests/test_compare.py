"""`onnx-run compare`: the protocol (equal budgets, search seeds apart from the final seeds,
choice on validation only), the paired statistics against closed forms, resume, and the
one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnx_run.cli import cli
from onnx_run.compare import SEARCH_SEED_OFFSET, paired

SMALL = ["--optics", "tiny", "--seeds", "2", "--set", "train.epochs=1", "--set", "train.max_train=64",
         "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=64", "--set", "run.progress=false",
         "--set", "compare.space.none={\"train.lr\" = [0.003, 0.01]}",
         "--set", "compare.space.kd={\"distill.kd.temperature\" = [2.0, 4.0]}",
         "--set", "compare.space.ntkd={\"distill.ntkd.beta\" = [0.1, 1.0]}"]


def test_paired_differences_match_closed_form():
    a, b = [0.9, 0.8, 0.85], [0.8, 0.8, 0.8]
    d = paired(a, b)
    diffs = [0.1, 0.0, 0.05]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    half = 4.302652729911275 * std / math.sqrt(3)  # t(0.975, 2)
    assert d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(std)
    assert d["ci95"] == pytest.approx([mean - half, mean + half])
    assert d["wins"] == 2 and d["n"] == 3


def test_compare_runs_the_protocol_and_resumes(tiny_optics, tmp_path):
    res = CliRunner().invoke(cli, ["compare", *SMALL, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "tiny-classification-digits-compare"
    result = json.loads((run_dir / "compare.json").read_text())
    assert [r["method"] for r in result["final"]] == ["none", "kd", "ntkd"]
    search = result["search"]
    assert {r["method"]: sum(1 for s in search if s["method"] == r["method"]) for r in search} == \
        {"none": 2, "kd": 2, "ntkd": 2}
    for method in ("none", "kd", "ntkd"):  # chosen on validation: the best search point
        rows = [s for s in search if s["method"] == method]
        best = max(rows, key=lambda s: s["val_accuracy_mean"])
        chosen = next(r for r in result["final"] if r["method"] == method)
        assert chosen["settings"] == best["settings"]
        assert chosen["seeds"] == [0, 1]
    # search seeds are never final seeds
    point0 = next((run_dir / "search" / "kd").glob("point0-*"))
    assert {p.name for p in point0.iterdir()} == {f"seed{SEARCH_SEED_OFFSET}"}
    # the training recipe none's search chose is what kd and ntkd searched and trained with
    recipe = result["protocol"]["recipe"]
    none_best = next(r for r in result["final"] if r["method"] == "none")["settings"]
    assert recipe == {"train.lr": none_best["train.lr"]}
    assert all(s["recipe"] == recipe for s in search if s["method"] != "none")
    config = (run_dir / "config.toml").read_text()
    assert "[compare.space.kd]" in config  # the grids are recorded: a resume searches the same
    from onnx_run.compare import Comparison

    again = Comparison.from_run_dir(run_dir, echo=lambda *_: None)
    again.set_recipe(search)
    for method in ("kd", "ntkd"):  # the configs final() trains with
        assert {c.train.lr for c in again.point_cfgs[method]} == {recipe["train.lr"]}
    assert "Training recipe chosen by `none`" in (run_dir / "compare.md").read_text()
    pairs = {(p["a"], p["b"]) for p in result["paired"]}
    assert pairs == {("ntkd", "kd"), ("ntkd", "none"), ("kd", "none")}
    for p in result["paired"]:
        a = next(r for r in result["final"] if r["method"] == p["a"])["test_accuracy_all"]
        b = next(r for r in result["final"] if r["method"] == p["b"])["test_accuracy_all"]
        assert p["differences"] == pytest.approx([x - y for x, y in zip(a, b)])
    text = (run_dir / "compare.md").read_text()
    assert "## Paired differences" in text and "| ntkd - none |" in text and "95 % CI" in text
    assert (run_dir / "figures" / "compare.png").stat().st_size > 10_000
    # a resume finds every training done and rebuilds the same tables
    before = (run_dir / "final" / "ntkd" / "seed1" / "metrics.jsonl").read_text()
    again = CliRunner().invoke(cli, ["compare", "--resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert (run_dir / "final" / "ntkd" / "seed1" / "metrics.jsonl").read_text() == before
    assert json.loads((run_dir / "compare.json").read_text())["final"] == result["final"]


@pytest.mark.parametrize("sets, message", [
    (["compare.space.kd={\"distill.kd.temperature\" = [2.0, 4.0, 8.0]}"], "the same size"),
    (["compare.space.kd={\"distill.kd.temprature\" = [2.0, 4.0]}"], "compare.space.kd: distill.kd: unknown key"),
    (["compare.space.kd={\"distill.kd.temperature\" = [-1.0, 4.0]}"], "temperature"),
    (["compare.space.kd={\"task.dataset\" = [\"digits\", \"shapes-rgb\"]}"], "task.dataset: a variant"),
    (["compare.space.kd={\"temperature\" = [2.0]}"], "not a dotted setting"),
    (["compare.search_seeds=0"], "compare.search_seeds"),
    (["compare.space.kdd={\"distill.kd.temperature\" = [2.0, 4.0]}"], "compare.space.kdd"),
    (["compare.space.none={\"train.lr\" = 0.01}"], "must list at least one value"),
    (["compare.space=3"], "compare.space: must be a table of methods"),
    (["compare.space.kd=[1, 2]"], "compare.space: entry 'kd' must be a table"),
    (["compare.recipe=\"nnoe\""], "compare.recipe"),
    (["compare.space.none={\"train.lrr\" = [0.01, 0.03]}"], "compare.space.none: train: unknown key 'lrr'"),
])
def test_bad_protocol_settings_are_one_line_and_write_nothing(tiny_optics, tmp_path, sets, message):
    args = ["compare", *SMALL, "--out", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_teacher_kernel_is_kept_beside_the_cached_teacher(tiny_optics, tmp_path):
    """A second run on the same teacher and training images loads the kernel instead of
    rebuilding it (minutes for a large teacher on a full dataset), and gets the same kernel."""
    import torch

    from onnx_run.config import load_config
    from onnx_run.pipeline import Pipeline

    cfg = load_config(None, ["teacher_train.epochs=1", "teacher_train.max_train=64", "run.progress=false"],
                      {"optics": "tiny", "distill": "ntkd"})
    first = Pipeline(cfg, tmp_path / "a")
    idx = torch.tensor([3, 0, 7, 100])
    k1 = first.teacher_kernel()(None, idx)
    files = list(Path(first.teacher()[1]["source"]).glob("ntk-*.pt"))
    assert len(files) == 1
    second = Pipeline(cfg, tmp_path / "b")
    from onnx_run.ntk import teacher_cache

    def fail(*a, **k):
        raise AssertionError("rebuilt")

    orig = teacher_cache.bounded_cache
    teacher_cache.bounded_cache = fail
    try:
        k2 = second.teacher_kernel()(None, idx)
    finally:
        teacher_cache.bounded_cache = orig
    assert torch.equal(k1, k2)
    # other training images (another split seed): another file
    other = Pipeline(load_config(None, ["teacher_train.epochs=1", "teacher_train.max_train=64", "run.progress=false",
                                        "task.val_fraction=0.2"], {"optics": "tiny", "distill": "ntkd"}),
                     tmp_path / "c")
    assert other._teacher_kernel_file(first.teacher()[1]) != files[0]


def test_search_only_scores_settings_on_validation_and_tests_nothing(tiny_optics, tmp_path):
    res = CliRunner().invoke(cli, ["compare", *SMALL, "--distill", "ntkd", "--search-only", "--out", str(tmp_path),
                                   "--set", "compare.space.ntkd={\"distill.ntkd.beta_schedule\" = "
                                            "[\"constant\", \"cosine\"]}"])
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "tiny-classification-digits-compare"
    text = (run_dir / "search.md").read_text()
    assert "| ntkd | beta_schedule=constant |" in text and "| ntkd | beta_schedule=cosine |" in text
    assert not (run_dir / "final").exists() and not (run_dir / "compare.json").exists()
    assert len(json.loads((run_dir / "search.json").read_text())) == 2


def test_results_say_when_the_teacher_leaves_no_headroom():
    from onnx_run.report.tables import headroom_note

    students = [{"test_accuracy_mean": 0.965, "test_accuracy_std": 0.004},
                {"test_accuracy_mean": 0.960, "test_accuracy_std": 0.006}]
    note = headroom_note({"test_accuracy": 0.975}, students, "accuracy")
    assert "+1.00 points" in note and "headroom" in note
    assert headroom_note({"test_accuracy": 0.99}, students, "accuracy") == ""  # 2.5 points ahead
    assert headroom_note(None, students, "accuracy") == ""
    one_seed = [{"test_accuracy_mean": 0.965, "test_accuracy_std": 0.0, "n": 1}]
    assert "(one seed each)" in headroom_note({"test_accuracy": 0.975}, one_seed, "accuracy")


def test_a_cut_teacher_kernel_file_is_rebuilt(tiny_optics, tmp_path):
    """A kernel file cut by a kill (or not a state dict at all) is rebuilt and replaced, never fatal."""
    import torch

    from onnx_run.config import load_config
    from onnx_run.pipeline import Pipeline

    cfg = load_config(None, ["teacher_train.epochs=1", "teacher_train.max_train=64", "run.progress=false"],
                      {"optics": "tiny", "distill": "ntkd"})
    first = Pipeline(cfg, tmp_path / "a")
    idx = torch.tensor([1, 5, 2])
    k1 = first.teacher_kernel()(None, idx)
    path = next(Path(first.teacher()[1]["source"]).glob("ntk-*.pt"))
    path.write_bytes(path.read_bytes()[:100])
    k2 = Pipeline(cfg, tmp_path / "b").teacher_kernel()(None, idx)
    assert torch.allclose(k1, k2)
    assert path.stat().st_size > 100  # replaced by a whole file
