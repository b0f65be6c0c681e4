"""Error models, fabricated devices, measured PSFs, captures and backend-only fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from onnx_run.errors import UserError
from onnx_run.fabrication.device import build_error_models, fabricate, parse_error_spec
from onnx_run.fabrication.errors import shift_rotate
from onnx_run.fabrication.measured import load_measured_psfs, measured_frontend, read_captures


@pytest.fixture
def frontend(tiny_optics):
    from onnx_run.plugins import registry

    comp = registry()["optics"]["tiny"]
    torch.manual_seed(0)
    return comp.factory(comp.config())


def test_parse_error_spec():
    assert parse_error_spec("brightness:sigma=0.2") == {"name": "brightness", "sigma": 0.2}
    assert parse_error_spec("sensor-noise") == {"name": "sensor-noise"}
    with pytest.raises(UserError, match="expected NAME or NAME:key=value"):
        parse_error_spec("brightness:sigma")


def test_bad_error_model_settings_are_one_line():
    with pytest.raises(UserError, match=r"fabricate.errors\[0\].sigma: must be >= 0, got -1.0"):
        build_error_models([{"name": "brightness", "sigma": -1}])
    with pytest.raises(UserError, match=r"fabricate.errors\[0\].name: unknown error model 'nope'; registered:"):
        build_error_models([{"name": "nope"}])


@pytest.mark.parametrize("spec", [
    {"name": "brightness", "sigma": 0.2},
    {"name": "misalignment", "shift_px": 0.7, "rotation_deg": 2.0},
    {"name": "kernel-error", "sigma": 0.2},
])
def test_static_error_models_change_frontend_reproducibly(frontend, spec):
    x = torch.rand(4, 1, 16, 16)
    ideal = frontend(x)
    a = fabricate(frontend, build_error_models([spec]), seed=5)(x)
    b = fabricate(frontend, build_error_models([spec]), seed=5)(x)
    c = fabricate(frontend, build_error_models([spec]), seed=6)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, ideal, atol=1e-4) and not torch.allclose(a, c, atol=1e-4)
    assert all(not p.requires_grad for p in fabricate(frontend, build_error_models([spec]), 5).parameters())


def test_brightness_is_a_pure_scale(frontend):
    x = torch.rand(3, 1, 16, 16)
    out = fabricate(frontend, build_error_models([{"name": "brightness", "sigma": 0.3}]), seed=1)(x)
    ratio = out / frontend(x)
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-5)
    assert abs(float(ratio.flatten()[0].detach()) - 1) > 1e-3


def test_shift_rotate_matches_closed_forms():
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 4] = 1.0
    shifted = shift_rotate(img, (1.0, -2.0), 0.0)  # integer shift moves the impulse exactly
    assert shifted[0, 0, 5, 2] == pytest.approx(1.0, abs=1e-6)
    half = shift_rotate(img, (0.0, 0.5), 0.0)  # half a pixel splits it in two
    assert half[0, 0, 4, 4] == pytest.approx(0.5, abs=1e-6) and half[0, 0, 4, 5] == pytest.approx(0.5, abs=1e-6)
    bar = torch.zeros(1, 1, 9, 9)
    bar[0, 0, 4, :] = 1.0
    rot = shift_rotate(bar, (0.0, 0.0), 90.0)  # a horizontal bar turns vertical
    assert torch.allclose(rot[0, 0, :, 4], torch.ones(9), atol=1e-5) and rot[0, 0, 4].sum() == pytest.approx(1, abs=1e-4)


def test_sensor_noise_per_capture_mean_preserved(frontend):
    from onnx_run.fabrication.errors import SensorNoise, SensorNoiseConfig

    noise = SensorNoise(SensorNoiseConfig(photons_at_unit=100.0, read_sigma=0.05))
    clean = torch.full((20000,), 2.0)
    gen = torch.Generator().manual_seed(0)
    noisy = noise.apply_to_measurement(clean, gen)
    assert float(noisy.mean()) == pytest.approx(2.0, abs=0.01)  # unbiased: no doubled signal
    assert float(noisy.var()) == pytest.approx(2.0 / 100 + 0.05**2, rel=0.05)
    device = fabricate(frontend, [noise], seed=0)
    x = torch.rand(5, 1, 16, 16)
    assert torch.equal(device.capture(x, seed=3), device.capture(x, seed=3))
    assert not torch.equal(device.capture(x, seed=3), device.capture(x, seed=4))


def _write_psfs(tmp_path, psfs, fmt):
    entries = []
    for k, (pos, neg) in enumerate(psfs):
        entry = {"index": k}
        for part, arr in (("positive", pos), ("negative", neg)):
            name = f"k{k}_{part}.{fmt}"
            if fmt == "npy":
                np.save(tmp_path / name, arr)
            else:
                big = np.zeros((40, 40))
                big[10:10 + arr.shape[0], 17:17 + arr.shape[1]] = arr  # off-centre, on a dark frame
                Image.fromarray(np.round(big / big.max() * 65535).astype(np.uint16)).save(tmp_path / name)
            entry[part] = name
        entries.append(entry)
    (tmp_path / "manifest.json").write_text(json.dumps({"kernels": entries}))


@pytest.mark.parametrize("fmt", ["npy", "png"])
def test_measured_psf_import_round_trips(tmp_path, fmt):
    rng = np.random.default_rng(0)
    psfs = []
    for _ in range(2):
        pos = np.zeros((5, 5))
        pos[1:4, 1:4] = rng.random((3, 3)) + 0.5
        neg = np.zeros((5, 5))
        neg[2, 1:4] = rng.random(3) + 0.5
        psfs.append((pos, neg))
    _write_psfs(tmp_path, psfs, fmt)
    loaded, signs = load_measured_psfs(tmp_path, num_kernels=2, channels=1, kernel_size=5)
    assert signs == [(0, 1), (2, 3)]
    got = loaded[:, 0].numpy()
    for i, arr in enumerate([p for pair in psfs for p in pair]):
        # same shape up to one global scale, re-centred on the centroid
        a = arr / arr.sum()
        b = got[i] / got[i].sum()
        ys, xs = np.indices(a.shape)
        shift = (int(round((ys * a).sum())) - 2, int(round((xs * a).sum())) - 2)
        assert np.allclose(np.roll(b, shift, axis=(0, 1)), a, atol=2e-4 if fmt == "png" else 1e-12)


def test_measured_psf_errors(tmp_path, frontend):
    with pytest.raises(UserError, match="no manifest.json"):
        load_measured_psfs(tmp_path, num_kernels=1, channels=1, kernel_size=5)
    (tmp_path / "manifest.json").write_text(json.dumps({"kernels": [{"index": 0, "positive": "a.npy"}]}))
    with pytest.raises(UserError, match=r"kernels 0..1; missing \[1\]"):
        load_measured_psfs(tmp_path, num_kernels=2, channels=1, kernel_size=5)
    with pytest.raises(UserError, match=r"measured PSF .*a.npy: file not found"):
        load_measured_psfs(tmp_path, num_kernels=1, channels=1, kernel_size=5)
    (tmp_path / "a.npy").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"a.npy: unreadable"):
        load_measured_psfs(tmp_path, num_kernels=1, channels=1, kernel_size=5)


@pytest.mark.parametrize("array, message", [
    (np.ones((4, 15, 15)), r"expected a 2-D image \(one file per kernel and wavelength, listed in manifest.json\), "
                           r"got shape \(4, 15, 15\)"),  # it used to be read as an RGB picture
    (np.ones((3, 3)), r"3 x 3 px is smaller than the design's 5 x 5 kernel"),
    (np.full((9, 9), np.nan), r"contains NaN or inf"),
    (np.eye(9) - 0.5, r"an intensity image, but its minimum -0.5 is beyond 5 % of its peak below zero"),
    (np.array([["a"] * 9] * 9), r"holds <U1 values; allowed: numbers"),
])
def test_measured_psf_values_and_shapes_are_checked(tmp_path, array, message):
    np.save(tmp_path / "a.npy", array)
    (tmp_path / "manifest.json").write_text(json.dumps({"kernels": [{"index": 0, "positive": "a.npy"}]}))
    with pytest.raises(UserError, match=r"measured PSF .*a.npy: " + message):
        load_measured_psfs(tmp_path, num_kernels=1, channels=1, kernel_size=5)


def test_measured_frontend_reproduces_known_kernels(tmp_path, frontend):
    """PSFs exported from a frontend and imported back give the same features (gain-calibrated)."""
    with torch.no_grad():  # centro-symmetric PSFs: centroid registration leaves them in place
        frontend.weight.copy_((frontend.weight.square() + frontend.weight.square().flip(-1, -2)).sqrt() / 2**0.5)
    w = frontend.weight.detach().square()  # TinyOptics' non-negative PSFs
    entries = []
    for k in range(w.shape[0]):
        np.save(tmp_path / f"k{k}.npy", w[k, 0].flip(-1, -2).double().numpy())  # conv2d correlates
        entries.append({"index": k, "positive": f"k{k}.npy"})
    (tmp_path / "manifest.json").write_text(json.dumps({"kernels": entries}))
    x = torch.rand(8, 1, 16, 16)
    meas = measured_frontend(tmp_path, like=frontend, calibration=x)
    assert torch.allclose(meas(x), frontend(x), rtol=1e-4, atol=1e-5)


def test_read_captures_validates(tmp_path):
    good = tmp_path / "cap.npz"
    np.savez(good, indices=np.array([0, 3, 5]), features=np.zeros((3, 4, 8, 8), np.float32))
    cap = read_captures(good, n_train=10, feature_shape=(4, 8, 8))
    assert cap["indices"].tolist() == [0, 3, 5] and cap["features"].shape == (3, 4, 8, 8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, indices=np.array([0, 3]), features=np.zeros((2, 5, 8, 8)))
    with pytest.raises(UserError, match=r"'features' has shape \(2, 5, 8, 8\); expected \(2, 4, 8, 8\)"):
        read_captures(bad, n_train=10, feature_shape=(4, 8, 8))
    np.savez(bad, indices=np.array([0, 30]), features=np.zeros((2, 4, 8, 8)))
    with pytest.raises(UserError, match=r"positions in the training split 0..9"):
        read_captures(bad, n_train=10, feature_shape=(4, 8, 8))
    np.savez(bad, features=np.zeros((2, 4, 8, 8)))
    with pytest.raises(UserError, match=r"missing array 'indices'"):
        read_captures(bad, n_train=10, feature_shape=(4, 8, 8))
    nan = np.zeros((2, 4, 8, 8))
    nan[1, 0, 0, :3] = np.nan
    np.savez(bad, indices=np.array([0, 3]), features=nan)
    with pytest.raises(UserError, match=r"'features' holds 3 values that are not finite numbers"):
        read_captures(bad, n_train=10, feature_shape=(4, 8, 8))
    np.savez(bad, indices=np.array([0, 3]), features=np.zeros((2, 4, 8, 8)), test_features=np.zeros((5, 4, 8, 8)))
    with pytest.raises(UserError, match=r"'test_features' has shape \(5, 4, 8, 8\); expected \(6, 4, 8, 8\): one "
                                        r"capture per test image"):
        read_captures(bad, n_train=10, feature_shape=(4, 8, 8), n_test=6)  # it was an AssertionError later
    np.savez(bad, indices=np.array([0, 3]), features=np.zeros((2, 4, 8, 8)),
             test_features=np.full((6, 4, 8, 8), np.inf))
    with pytest.raises(UserError, match=r"'test_features' holds 1536 values that are not finite"):
        read_captures(bad, n_train=10, feature_shape=(4, 8, 8), n_test=6)


def test_finetune_changes_only_backend(tmp_path, tiny_optics):
    from onnx_run.components import HybridModel
    from onnx_run.config import load_config
    from onnx_run.fabrication.finetune import finetune_backend, finetune_subset

    cfg = load_config(None, ["finetune.epochs=2"], {"optics": "tiny", "distill": "none"})
    task = cfg.task.build()
    splits = task.datasets(image_size=(16, 16), channels=1, seed=0)
    torch.manual_seed(0)
    fe = cfg.optics.build()
    model = HybridModel(fe, task.build_backend(fe.feature_shape(), 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    device = fabricate(model.frontend, build_error_models([{"name": "brightness", "sigma": 0.2}]), seed=1)
    idx = finetune_subset(len(splits.train), 0.1, 0)
    summary = finetune_backend(task=task, splits=splits, backend=model.backend, train_idx=idx,
                               train_features=device.capture(splits.train.tensors[0][idx], seed=1),
                               val_features=device.capture(splits.val.tensors[0], seed=2),
                               test_features=device.capture(splits.test.tensors[0], seed=3), method="e2e",
                               settings=cfg.finetune, run_dir=tmp_path / "ft", seed=0, device=torch.device("cpu"),
                               progress=False)
    assert summary["epochs"] == 2
    for k, v in model.state_dict().items():  # the original student is untouched
        assert torch.equal(v, before[k]), k
    tuned = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)["model"]
    assert set(tuned) == {k[len("backend."):] for k in before if k.startswith("backend.")}
    assert any(not torch.equal(tuned[k], before["backend." + k]) for k in tuned)
    assert all(torch.equal(p, before["frontend." + n]) for n, p in device.frontend.inner.named_parameters())
    best = torch.load(tmp_path / "ft" / "best.pt", weights_only=True)
    assert best["epoch"] >= -1  # -1: no epoch beat the starting weights on validation, which are kept


def test_severity_scales_every_default_error():
    """``fabricate.severity``: each magnitude times the severity (shot noise through the
    photo-electron count, which goes as 1 / severity**2), written out in full; 1 changes nothing."""
    from onnx_run.config import FabricateSettings
    from onnx_run.fabrication.device import scale_error_specs

    defaults = FabricateSettings().errors
    assert scale_error_specs(defaults, 1.0) == defaults
    harsher = {s["name"]: s for s in scale_error_specs(defaults, 2.0)}
    assert harsher["brightness"]["sigma"] == pytest.approx(0.2)
    assert (harsher["misalignment"]["shift_px"], harsher["misalignment"]["rotation_deg"]) == (1.0, 2.0)
    assert harsher["kernel-error"]["sigma"] == pytest.approx(0.2)
    assert harsher["sensor-noise"]["photons_at_unit"] == pytest.approx(250.0)
    assert harsher["sensor-noise"]["read_sigma"] == pytest.approx(0.02)
    assert scale_error_specs([{"name": "phase-quantisation", "bits": 6}], 4.0) == [
        {"name": "phase-quantisation", "bits": 4}]  # a 4x coarser phase step: 2 bits fewer


def test_a_harsher_device_deviates_proportionally(frontend):
    """Same device seed, severity 2: the brightness error drawn is exactly twice as large."""
    from onnx_run.fabrication.device import scale_error_specs

    x = torch.rand(3, 1, 16, 16)
    spec = [{"name": "brightness", "sigma": 0.1}]
    with torch.no_grad():
        one = fabricate(frontend, build_error_models(spec), seed=4)(x) / frontend(x) - 1
        two = fabricate(frontend, build_error_models(scale_error_specs(spec, 2.0)), seed=4)(x) / frontend(x) - 1
    assert float(one.mean()) != 0
    assert torch.allclose(two, 2 * one, rtol=1e-4, atol=1e-6)


def test_every_registered_error_model_scales(tiny_optics):
    """The contract for error models with settings: ``scaled(1)`` is the identity and
    ``scaled(2)`` gives valid settings of the same class, none of them smaller."""
    import attrs

    from onnx_run.plugins import registry

    models = {name: comp for name, comp in registry()["error_models"].items() if comp.config is not None}
    assert {"brightness", "metasurface-width", "diffractive-axial"} <= set(models)
    for name, comp in models.items():
        if not hasattr(comp.config, "scaled"):
            continue  # test plugins; the bundled ones are listed above
        cfg = comp.config()
        assert cfg.scaled(1.0) == cfg, name
        worse = cfg.scaled(2.0)
        assert type(worse) is type(cfg), name
        for field in attrs.fields(type(cfg)):
            a, b = getattr(cfg, field.name), getattr(worse, field.name)
            if isinstance(a, float) and field.name != "photons_at_unit":
                assert b >= a, (name, field.name)


def test_severity_mistakes_are_one_line(monkeypatch):
    from onnx_run.fabrication.device import scale_error_specs
    from onnx_run.fabrication.errors import BrightnessConfig

    with pytest.raises(UserError, match=r"fabricate.severity = 20: error model 'kernel-error' \(fabricate.errors\[0\]\) "
                                        r"cannot be made that harsh: .*sigma"):
        scale_error_specs([{"name": "kernel-error", "sigma": 0.1}], 20.0)
    monkeypatch.delattr(BrightnessConfig, "scaled")
    with pytest.raises(UserError, match=r"error model 'brightness' .* does not say how it scales.*allowed: severity = 1"):
        scale_error_specs([{"name": "brightness"}], 2.0)
    assert scale_error_specs([{"name": "brightness"}], 1.0) == [{"name": "brightness"}]
    with pytest.raises(UserError, match=r"fabricate.errors\[0\].name: unknown error model 'nope'"):
        scale_error_specs([{"name": "nope"}], 1.0)  # checked at severity 1 too


@pytest.mark.parametrize("sets, message", [
    (['fabricate.errors=[{name = "brightnes"}]'], "Error: fabricate.errors[0].name: unknown error model 'brightnes'"),
    (['fabricate.errors=[{name = "brightness", sigma_typo = 0.1}]'], "Error: fabricate.errors[0]: unknown key"),
    (["fabricate.severity=0"], "Error: fabricate.severity: must be > 0"),
    (["fabricate.severity=20"], "Error: fabricate.severity = 20: error model 'brightness' (fabricate.errors[0]) "
                                "cannot be made that harsh"),
])
def test_fabrication_mistakes_are_caught_by_the_dry_run(tmp_path, tiny_optics, sets, message):
    """A misspelt error model or key, or a severity no model can take, is one line and exit 2
    before anything trains (it used to pass --dry-run and fail at the fabricate stage)."""
    from click.testing import CliRunner

    from onnx_run.cli import cli

    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--out", str(out), "--check"]
    res = CliRunner().invoke(cli, args + [a for s in sets for a in ("--set", s)])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), res.output
    assert not out.exists()


def test_compensation_lr_is_chosen_on_the_captured_validation_images(tmp_path, tiny_optics):
    """``finetune.lr_grid``: each method but none is fine-tuned at every lr; the summary is the
    one best on validation (with the grid's scores beside it); a resume retrains nothing."""
    from click.testing import CliRunner

    from onnx_run.cli import cli

    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out),
            "--stages", "teacher,students,realise,fabricate,compensate", "--set", "train.epochs=1",
            "--set", "train.max_train=128", "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=128",
            "--set", "run.progress=false", "--set", "fabricate.student=none", "--set", "finetune.epochs=2",
            "--set", 'finetune.methods=["none", "e2e"]', "--set", "finetune.lr_grid=[1e-5, 0.03]",
            "--set", "fabricate.severity=2"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    dev = out / "tiny-classification-digits" / "fabricated" / "none-seed0-dev0-x2"
    assert json.loads((dev / "device.json").read_text())["severity"] == 2
    e2e = json.loads((dev / "finetune" / "e2e" / "summary.json").read_text())
    tried = {lr: json.loads((dev / "finetune" / "e2e" / f"lr{lr}" / "summary.json").read_text())
             for lr in ("1e-05", "0.03")}
    assert set(e2e["lr_search"]) == set(tried)
    best = max(tried, key=lambda lr: tried[lr]["val_accuracy"])
    assert f"{e2e['lr']:g}" == best and e2e["test_accuracy"] == tried[best]["test_accuracy"]
    assert not (dev / "finetune" / "none" / "lr1e-05").exists()  # nothing to tune without fine-tuning
    stamp = (dev / "finetune" / "e2e" / "summary.json").stat().st_mtime_ns
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert (dev / "finetune" / "e2e" / "summary.json").stat().st_mtime_ns == stamp


def test_a_measured_device_round_trips_through_the_real_device_commands(tmp_path, tiny_optics):
    """A simulated device measured as a lab would (``onnx-run measure``: point-source PSFs and
    captures) and brought back with the real-device commands: the PSF-built device reproduces
    the device's feature maps up to the exposure, and fine-tuning on the exported captures (the task
    loss, and NTKD from the design) gives the simulated route's numbers exactly."""
    from click.testing import CliRunner

    from onnx_run.cli import cli
    from onnx_run.pipeline import Pipeline

    out = tmp_path / "runs"
    # shift-invariant errors: a point source's read-out is then the whole device (a sub-pixel shift
    # spreads a PSF beyond its kernel-sized window, which a measurement of that window cuts off)
    errors = 'fabricate.errors=[{name = "brightness", sigma = 0.2}, {name = "kernel-error", sigma = 0.2}]'
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out),
            "--stages", "teacher,students,realise,fabricate", "--set", "train.epochs=1", "--set", "train.max_train=128",
            "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=128", "--set", "run.progress=false",
            "--set", "fabricate.student=none", "--set", "finetune.epochs=2", "--set", errors]
    assert CliRunner().invoke(cli, args).exit_code == 0
    run_dir = out / "tiny-classification-digits"
    (tmp_path / "afile").write_text("")
    res = CliRunner().invoke(cli, ["measure", str(run_dir), "--device", "none-seed0-dev0", "--out",
                                   str(tmp_path / "afile" / "lab")])
    assert res.exit_code == 2 and res.output.strip().splitlines()[-1].startswith(
        f"Error: --out: {tmp_path / 'afile'} is a file, not a folder")
    res = CliRunner().invoke(cli, ["measure", str(run_dir), "--device", "none-seed0-dev0", "--out", str(tmp_path / "lab")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "lab" / "psfs" / "manifest.json").read_text())
    assert [e["index"] for e in manifest["kernels"]] == [0, 1, 2, 3]
    res = CliRunner().invoke(cli, ["fabricate", str(run_dir), "--measured-psfs", str(tmp_path / "lab" / "psfs"),
                                   "--student", "none", "--name", "lab"])
    assert res.exit_code == 0, res.output
    pipe = Pipeline.from_run_dir(run_dir)
    x = pipe.splits.test.tensors[0][:32]
    _, simulated = pipe.build_device(json.loads((pipe.device_dir("none-seed0-dev0") / "device.json").read_text()))
    _, measured = pipe.build_device(json.loads((pipe.device_dir("lab") / "device.json").read_text()))
    with torch.no_grad():
        a, b = simulated(x), measured(x)
    ratio = float((a * b).sum() / (b * b).sum())  # the exposure: calibrated to the design, not the device
    assert float((a - ratio * b).norm() / a.norm()) < 1e-5
    # the task loss, and NTKD at its defaults (from the design, with the output term)
    sim = CliRunner().invoke(cli, ["finetune", str(run_dir), "--device", "none-seed0-dev0", "--method", "e2e,ntkd"])
    cap = CliRunner().invoke(cli, ["finetune", str(run_dir), "--device", "none-seed0-dev0", "--method", "e2e,ntkd",
                                   "--captures", str(tmp_path / "lab" / "captures.npz")])
    assert sim.exit_code == 0 and cap.exit_code == 0, sim.output + cap.output
    dev = pipe.device_dir("none-seed0-dev0")
    for method in ("e2e", "ntkd"):
        first = json.loads((dev / "finetune" / method / "summary.json").read_text())
        again = json.loads(next(dev.glob(f"finetune-*captures/{method}/summary.json")).read_text())
        assert (again["test_accuracy"], again["val_accuracy"]) == (first["test_accuracy"], first["val_accuracy"]), method


def test_the_teacher_kernel_is_built_once_per_device(tmp_path, tiny_optics, monkeypatch):
    """NTKD compensation at several learning rates reads one teacher kernel over the device's
    captured images, not one per lr."""
    from click.testing import CliRunner

    import onnx_run.ntk.teacher_cache as teacher_cache
    from onnx_run.cli import cli

    built = []
    real = teacher_cache.bounded_cache
    monkeypatch.setattr(teacher_cache, "bounded_cache", lambda *a, **k: built.append(1) or real(*a, **k))
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(tmp_path / "runs"),
            "--stages", "teacher,students,realise,fabricate,compensate", "--set", "train.epochs=1",
            "--set", "train.max_train=96", "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=96",
            "--set", "run.progress=false", "--set", "fabricate.student=none", "--set", "finetune.epochs=1",
            "--set", 'finetune.methods=["none", "ntkd"]', "--set", "finetune.lr_grid=[1e-4, 1e-3, 1e-2]"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert len(built) == 1


def test_the_design_teacher_is_the_device_without_its_errors(tmp_path, tiny_optics):
    """``finetune.teacher = "design"``: on a device made without errors, the design teacher's
    outputs and backend NTK on the raw images are the student's own on the captured features, so
    KD and NTKD start at zero discrepancy; with errors they differ. ``finetune --teacher teacher``
    (not the config's, the default design) keeps its fine-tunings apart, in ``finetune-from-teacher/``."""
    from click.testing import CliRunner

    from onnx_run.cli import cli
    from onnx_run.ntk import empirical_ntk
    from onnx_run.ntk.teacher_cache import bounded_cache
    from onnx_run.pipeline import Pipeline, design_kernel_params

    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out),
            "--stages", "teacher,students,realise,fabricate", "--set", "train.epochs=1", "--set", "train.max_train=96",
            "--set", "teacher_train.epochs=1", "--set", "teacher_train.max_train=96", "--set", "run.progress=false",
            "--set", "fabricate.student=none", "--set", "finetune.epochs=1", "--set", "fabricate.errors=[]",
            "--set", 'finetune.methods=["none", "kd", "ntkd"]']
    assert CliRunner().invoke(cli, args).exit_code == 0
    run_dir = out / "tiny-classification-digits"
    res = CliRunner().invoke(cli, ["fabricate", str(run_dir), "--student", "none", "--name", "bent",
                                   "--error-model", "kernel-error:sigma=0.5"])
    assert res.exit_code == 0, res.output
    pipe = Pipeline.from_run_dir(run_dir)
    x = pipe.splits.train.tensors[0][:24]
    kernels = {}
    for name in ("none-seed0-dev0", "bent"):
        info = json.loads((pipe.device_dir(name) / "device.json").read_text())
        design = pipe.design_teacher(info)
        model, device = pipe.build_device(info)
        params = design_kernel_params(design)
        assert params and not any(p.requires_grad for p in design.parameters())
        k_design = bounded_cache(design, x, reduce=pipe.task.ntk_reduce, params=params).kernel(torch.arange(24))
        features = device.capture(x, seed=1)
        k_device = empirical_ntk(model.backend, features, reduce=pipe.task.ntk_reduce)
        with torch.no_grad():
            gap = float((design(x) - model.backend(features)).abs().max())
        kernels[name] = (float((k_design - k_device).norm() / k_design.norm()), gap)
    assert kernels["none-seed0-dev0"][0] < 1e-5 and kernels["none-seed0-dev0"][1] < 1e-5
    assert kernels["bent"][0] > 1e-3 and kernels["bent"][1] > 1e-3
    res = CliRunner().invoke(cli, ["finetune", str(run_dir), "--device", "bent", "--method", "kd,ntkd",
                                   "--teacher", "teacher"])
    assert res.exit_code == 0, res.output
    for method in ("kd", "ntkd"):
        assert (pipe.device_dir("bent") / "finetune-from-teacher" / method / "summary.json").exists()
    assert not (pipe.device_dir("bent") / "finetune").exists()
