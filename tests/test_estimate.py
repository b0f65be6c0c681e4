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
    # beside the estimate, the warmed-up student's own test score (one student: one value)
    assert "warmed-up students' own (%)" in table[4] and f"| {rows[1]['warmed_students'][0] * 100:.2f} |" in table[7]
    # what was computed, said above the table: the kernel, the warm-up, the students
    assert f"after {rows[0]['warmup_steps']} warm-up steps, 1 student(s) averaged" in table[2]
    assert f"NTK of the backend ({rows[0]['kernel']})" in table[2]
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
    from types import SimpleNamespace

    from onnx_run.config import load_config
    from onnx_run.estimate.ntk_estimate import estimate_sizes

    cfg = load_config(None, [], {"optics": "tiny", "task": "segmentation"})
    # segmentation regresses pixel by pixel: the generic sizes, its evaluation images capped
    assert estimate_sizes(cfg, cfg.task.build()) == {"inits": 2, "width_multiplier": 1, "max_train": 1_000_000,
                                                     "max_eval": 1000, "warmup_steps": -1, "warmup_percent": 50,
                                                     "directions": 256}
    task = SimpleNamespace(estimate_settings=lambda: {"inits": 3, "max_train": 300, "warmup_steps": 0,
                                                      "curve": {"max_train": 100, "max_eval": 50}})
    assert estimate_sizes(cfg, task) == {"inits": 3, "width_multiplier": 1, "max_train": 300, "max_eval": 10_000,
                                         "warmup_steps": 0, "warmup_percent": 5, "directions": 256}
    assert estimate_sizes(cfg, task, curve=True) == {"inits": 1, "width_multiplier": 1, "max_train": 100,
                                                     "max_eval": 50, "warmup_steps": 0, "warmup_percent": 5,
                                                     "directions": 256}
    cfg = load_config(None, [], {"optics": "tiny", "task": "classification"})  # -1: 5 % of the run's steps
    assert estimate_sizes(cfg, cfg.task.build())["warmup_steps"] == -1
    cfg = load_config(None, ["estimate.warmup_steps=0"], {"optics": "tiny", "task": "classification"})
    assert estimate_sizes(cfg, cfg.task.build())["warmup_steps"] == 0  # 0 is a choice (random optics), not "auto"
    cfg = load_config(None, ["estimate.max_train=60"], {"optics": "tiny", "task": "segmentation"})
    assert estimate_sizes(cfg, task, curve=True)["max_train"] == 60  # the user's config beats the task
    assert estimate_sizes(cfg, task, curve=True, max_train=30)["max_train"] == 30  # and an option beats both


def test_primal_and_dual_regressions_agree_on_every_prefix():
    """Tangent features give the same predictions solved in the primal (D x D, Gram accumulated
    over the prefixes) or the dual (n x n), and the same as the exact kernel Phi Phi^T."""
    import torch

    from onnx_run.estimate.ntk_estimate import _curve_predictions

    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(130, 12, generator=gen, dtype=torch.float64)  # 100 train rows, 30 eval rows
    y = torch.randn(100, 3, generator=gen, dtype=torch.float64)
    ridges = (1e-3, 1e-1)
    sizes = [10, 50, 100]  # 10 < D = 12 (dual), 50 and 100 > D (primal)
    from_features = _curve_predictions(None, phi, sizes, 100, y, ridges)
    from_kernel = _curve_predictions(phi @ phi.T, None, sizes, 100, y, ridges)
    for n in sizes:
        for r in ridges:
            a = phi[:n]
            lam = r * float((a * a).sum()) / n
            direct = phi[100:] @ torch.linalg.solve(a.T @ a + lam * torch.eye(12, dtype=a.dtype), a.T @ y[:n])
            assert torch.allclose(from_features[n][r], direct, atol=1e-8), (n, r)
            assert torch.allclose(from_kernel[n][r], direct, atol=1e-8), (n, r)


def test_the_automatic_warm_up_is_a_share_of_the_run_with_a_ceiling():
    from types import SimpleNamespace

    from onnx_run.config import load_config
    from onnx_run.estimate.ntk_estimate import automatic_warmup, estimate_sizes

    def run(epochs, max_train=0):
        return SimpleNamespace(epochs=epochs, batch_size=128, max_train=max_train)

    assert automatic_warmup(run(8), 54_000, 5) == 169  # 5 % of 8 x 422 steps
    assert automatic_warmup(run(100), 54_000, 5) == 500  # 5 % would be 2 110: 500 is the ceiling
    assert automatic_warmup(run(100, max_train=1280), 54_000, 5) == 50  # of the images trained on
    assert automatic_warmup(run(15), 700, 50) == 45  # a task's own share: 50 % of 90 steps
    cfg = load_config(None, ["estimate.warmup_percent=10"], {"optics": "4f", "task": "classification"})
    assert estimate_sizes(cfg, cfg.task.build())["warmup_percent"] == 10  # a config sets it


def test_the_feature_gram_is_the_whole_symmetric_product():
    """The estimate's Gram Phi^T Phi: float32 rows go through BLAS syrk (one triangle formed,
    the other mirrored), and must equal the float64 product in both triangles."""
    import torch

    from onnx_run.estimate.ntk_estimate import _feature_gram

    phi = torch.randn(300, 17, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = phi.T @ phi
    for rows in (phi.float(), phi.float()[::2], phi):  # syrk, syrk on a strided view, float64 matmul
        want = exact if rows.shape[0] == 300 else phi[::2].T @ phi[::2]
        got = _feature_gram(rows)
        assert got.dtype == torch.float64
        if rows.dtype == torch.float32:
            assert torch.equal(got, got.T)  # the mirrored triangle, exactly
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)


def test_the_pixel_readout_regression_is_least_squares_over_every_pixel():
    """Dense outputs: one row a pixel, the readout's inputs and a 1 (its bias) as features, the
    Gram accumulated over chunks of training images; equal to the closed form on every prefix,
    and laid out per image as _targets lays out its rows (class-major)."""
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F

    from onnx_run.estimate.ntk_estimate import _targets, readout_predictions

    gen = torch.Generator().manual_seed(0)
    x_train, x_eval = torch.randn(10, 3, 4, 5, generator=gen), torch.randn(4, 3, 4, 5, generator=gen)
    y_train = torch.randint(0, 3, (10, 4, 5), generator=gen)
    model = SimpleNamespace(frontend=lambda x: x, backend=None)
    task = SimpleNamespace(pixel_readout=lambda backend, maps: 2.0 * maps)  # the readout reads 2 x the maps
    got = readout_predictions(model, task, x_train, y_train, x_eval, sizes=[4, 10], ridges=(1e-3, 0.1),
                              num_outputs=3, chunk=3)

    def rows(x):
        return torch.cat([2.0 * x, torch.ones_like(x[:, :1])], 1).movedim(1, -1).reshape(-1, 4).double()

    for n in (4, 10):
        a = rows(x_train[:n])
        y = F.one_hot(y_train[:n], 3).reshape(-1, 3).double() - 1 / 3
        for r in (1e-3, 0.1):
            lam = r * float((a * a).sum()) / a.shape[0]
            w = torch.linalg.solve(a.T @ a + lam * torch.eye(4, dtype=a.dtype), a.T @ y)
            want = (rows(x_eval) @ w).reshape(4, 20, 3).transpose(1, 2).reshape(4, -1)
            assert got[n][r].shape == _targets(y_train[:4], 3).shape  # (images, classes x pixels)
            assert torch.allclose(got[n][r].double(), want, atol=1e-5), (n, r)
    none = SimpleNamespace(pixel_readout=lambda backend, maps: None)
    assert readout_predictions(model, none, x_train, y_train, x_eval, sizes=[10], ridges=(1e-3,),
                               num_outputs=3) is None


def test_a_students_own_score_reads_its_outputs_in_chunks():
    """The baseline beside the estimate: the warmed-up student's outputs scored as they are."""
    import torch

    from onnx_run.config import load_config
    from onnx_run.estimate.ntk_estimate import _own_score

    task = load_config(None, [], {"optics": "4f", "task": "classification"}).task.build()
    y = torch.arange(10).repeat(7)  # 70 labels: chunks of 16 leave a short last one
    x = y.float().unsqueeze(1)

    class Reader(torch.nn.Module):  # reads the label off its input, shifted by `shift` classes
        def __init__(self, shift):
            super().__init__()
            self.shift = shift

        def forward(self, batch):
            return torch.nn.functional.one_hot(batch[:, 0].long(), 10).float().roll(self.shift, dims=1)

    right, shifted = Reader(0), Reader(1)  # always right; always one class off

    assert _own_score(right, task, x, y, "cpu", chunk=16) == 1.0
    assert _own_score(shifted, task, x, y, "cpu", chunk=16) == 0.0


def test_the_learning_curve_extrapolates_a_power_law():
    from onnx_run.estimate.ntk_estimate import learning_curve_fit

    sizes = [1000, 2000, 4000, 8000]
    truth = [1 - (0.1 + 2.0 * n**-0.4) for n in sizes]
    at = 54000
    assert abs(learning_curve_fit(sizes, truth, at) - (1 - (0.1 + 2.0 * at**-0.4))) < 1e-4
    assert learning_curve_fit(sizes, truth, 8000) == truth[-1]  # nothing to extrapolate
    assert learning_curve_fit(sizes[:2], truth[:2], at) == truth[1]  # too few points to fit
    falling = [0.9, 0.89, 0.88, 0.87]  # a curve that falls gains nothing: the last measured score
    assert abs(learning_curve_fit(sizes, falling, at) - 0.87) < 1e-6


def test_the_warm_up_trains_optics_and_backend_with_the_runs_recipe(tiny_optics):
    import torch

    from onnx_run.components import HybridModel
    from onnx_run.config import load_config
    from onnx_run.estimate.ntk_estimate import warm_up

    cfg = load_config(None, ["train.lr=0.01"], {"optics": "tiny", "task": "classification"})
    task = cfg.task.build()
    torch.manual_seed(0)
    fe = cfg.optics.build()
    splits = task.datasets(image_size=tuple(fe.input_size), channels=fe.in_channels, seed=0)
    model = HybridModel(fe, task.backend_for_estimate(fe.feature_shape(), 10, 1))
    x, y = splits.train.tensors[0][:256], splits.train.tensors[1][:256]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss0 = float(task.loss(model(x), y).detach())
    warm_up(model, task, x, y, cfg.train, steps=30, seed=0)
    assert float(task.loss(model(x), y).detach()) < loss0 and not model.training
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"frontend", "backend"}
    warm_up(model.train(), task, x, y, cfg.train, steps=0, seed=0)  # no steps: still ready for its kernel
    assert not model.training


def test_a_regression_on_fewer_images_than_the_run_is_extrapolated(tiny_optics, tmp_path):
    res = CliRunner().invoke(cli, ["estimate", "--optics", "tiny", "--out", str(tmp_path), "--inits", "2",
                                   "--max-train", "400", "--set", "estimate.max_eval=100",
                                   "--set", "run.progress=false"])
    assert res.exit_code == 0, res.output
    row = json.loads(next(tmp_path.glob("*/estimate.json")).read_text())[0]
    assert row["learning_curve"]["n_train"] == [50, 100, 200, 400] and row["extrapolated_to"] > 400
    assert row["estimate"] >= row["learning_curve"]["accuracy"][-1] == row["measured"]
    assert 0 < row["estimate_band"] < 0.3 and len(row["estimate_by_init"]) == 2
    assert len(row["warmed_students"]) == 2 and all(0 <= v <= 1 for v in row["warmed_students"])
    assert row["warmup_steps"] > 0 and row["kernel"] == "exact"


def test_design_recommends_the_smallest_candidate_that_meets_the_target(tiny_optics, tmp_path):
    args = ["design", "--optics", "tiny", "--out", str(tmp_path), *SMALL, "--sizes", "optics.num_kernels=1,2"]
    res = CliRunner().invoke(cli, [*args, "--target", "30"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "design-tiny-classification-digits"
    data = json.loads((out / "design.json").read_text())
    assert data["recommended"] == 1 and data["meets"] and [c["num_kernels"] for c in data["candidates"]] == [1, 2]
    assert "recommended: optics.num_kernels=1 (1 kernel)" in res.output
    table = (out / "design.md").read_text()
    assert "| 1 **recommended** | 1 |" in table and "backend parameters" in table
    assert (out / "design.png").stat().st_size > 10_000
    res = CliRunner().invoke(cli, [*args, "--target", "99.99"])  # out of reach: says so, names the best
    assert res.exit_code == 0, res.output
    assert "no candidate meets 99.99 % accuracy: the best is optics.num_kernels=" in res.output
    assert not json.loads((out / "design.json").read_text())["meets"]


def test_design_refuses_a_bad_target_or_sizes_in_one_line(tiny_optics, tmp_path):
    for extra, expected in [(["--target", "120"], "--target"), (["--target", "90", "--sizes", "kernels=1,2"],
                                                                "expected SECTION.KEY=V1,V2")]:
        res = CliRunner().invoke(cli, ["design", "--optics", "tiny", "--out", str(tmp_path), *SMALL, *extra])
        assert res.exit_code == 2, res.output
        assert expected in res.output, res.output
    assert not any(tmp_path.iterdir())


def test_choose_design_names_the_smallest_whose_band_clears_the_target():
    from onnx_run.estimate.report import choose_design

    def row(k, est, band):
        return {"metric": "accuracy", "num_kernels": k, "estimate": est, "estimate_band": band,
                "sweep_key": "optics.num_kernels", "sweep_value": k}

    rows = [row(1, 0.90, 0.02), row(2, 0.93, 0.04), row(4, 0.95, 0.01), row(8, 0.96, 0.005)]
    c = choose_design(rows, 0.92)  # 2 meets it inside its band; 4 is the first whose band clears it
    assert c["index"] == 1 and c["meets"] and not c["sure"]
    assert "the smallest whose band clears it is optics.num_kernels=4 (4 kernels)" in c["sentence"]
    c = choose_design(rows, 0.875)  # 1 meets it outright, band and all
    assert c["index"] == 0 and c["sure"] and "band" not in c["sentence"]
    c = choose_design(rows, 0.97)  # none: the best, and how far short
    assert c["index"] == 3 and not c["meets"] and "1.00 points short" in c["sentence"]


def test_by_default_the_regression_sees_every_training_image_after_a_warm_up(tiny_optics, tmp_path):
    """The defaults: every image the run trains on, no extrapolation, 5 % of the run's steps."""
    import math

    res = CliRunner().invoke(cli, ["estimate", "--optics", "tiny", "--out", str(tmp_path), "--inits", "1",
                                   "--set", "run.progress=false", "--set", "train.epochs=20"])
    assert res.exit_code == 0, res.output
    row = json.loads(next(tmp_path.glob("*/estimate.json")).read_text())[0]
    assert row["n_train"] == 1257 and row["extrapolated_to"] is None and row["estimate"] == row["measured"]
    assert row["warmup_steps"] == round(0.05 * 20 * math.ceil(1257 / 64)) and row["width_multiplier"] == 1
