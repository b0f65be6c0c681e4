"""`onnx-run estimate`: layout + NTK kernel-regression accuracy, one design or a sweep."""

from __future__ import annotations

import json

from click.testing import CliRunner

from onnx_run.cli import cli

SMALL = ["--inits", "1", "--max-train", "200", "--set", "estimate.max_eval=100", "--set", "run.progress=false"]


def test_sweep_writes_a_table_a_curve_and_beats_chance(tiny_optics, tmp_path):
    res = CliRunner().invoke(cli, ["estimate", "--optics", "tiny", "--out", str(tmp_path), *SMALL,
                                   "--sweep", "optics.num_kernels=1,4"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "estimate-tiny-classification-digits"
    rows = json.loads((out / "estimate.json").read_text())
    assert [r["num_kernels"] for r in rows] == [1, 4] and [r["sweep_value"] for r in rows] == [1, 4]
    for r in rows:  # ten digit classes: chance is 10 %; random non-negative kernels keep most of it
        assert 0.6 < r["estimate"] <= 1.0 and r["n_train"] == 200 and r["ridge"] in map(float, r["ridge_scores"])
    table = (out / "estimate.md").read_text().splitlines()
    assert table[4].startswith("| optics.num_kernels | kernels |") and len(table) == 8
    assert (out / "estimate.png").stat().st_size > 10_000
    assert "optics.num_kernels=4: 4 kernels" in res.output


def test_a_bad_sweep_is_one_line_and_writes_nothing(tiny_optics, tmp_path):
    for sweep, expected in [("num_kernels=1,2", "expected SECTION.KEY=V1,V2"),
                            ("optics.num_kernels=1,0", "optics.num_kernels"),
                            ("optics.lenses=1,2", "unknown key 'lenses'")]:
        res = CliRunner().invoke(cli, ["estimate", "--optics", "tiny", "--out", str(tmp_path), *SMALL,
                                       "--sweep", sweep])
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1 and expected in res.output, res.output
    assert not any(tmp_path.iterdir())


def test_sizes_resolve_defaults_task_curve_config_then_options(tiny_optics):
    from onnx_run.config import load_config
    from onnx_run.estimate.ntk_estimate import estimate_sizes

    cfg = load_config(None, [], {"optics": "tiny", "task": "segmentation"})
    task = cfg.task.build()
    assert estimate_sizes(cfg, task) == {"inits": 3, "width_multiplier": 1, "max_train": 300, "max_eval": 150}
    assert estimate_sizes(cfg, task, curve=True) == {"inits": 1, "width_multiplier": 1, "max_train": 100,
                                                     "max_eval": 50}
    cfg = load_config(None, ["estimate.max_train=60"], {"optics": "tiny", "task": "segmentation"})
    assert estimate_sizes(cfg, task, curve=True)["max_train"] == 60  # the user's config beats the task
    assert estimate_sizes(cfg, task, curve=True, max_train=30)["max_train"] == 30  # and an option beats both
