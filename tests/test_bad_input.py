"""The catalogue of user mistakes: each one, run through the real console entry point, must end
in exit 2 with one ``Error:`` line that names the key or file, says what was wrong and what is
allowed, prints no traceback, and leaves the file system exactly as it was.

Each case is ``Case(id, argv, expect, setup)``: ``argv`` may name ``{tmp}`` (the test's folder),
``{run}`` (a copy of a small trained run directory, its fabricated device ``dev`` included) and
``{out}`` (a run folder that does not exist yet); ``setup(tmp, run)`` writes the bad files;
``expect`` are fragments the Error line must contain (formatted like ``argv``).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from onnx_run.cli import main

BASE = ["--optics", "tiny", "--task", "classification", "--distill", "none"]
DRY = [*BASE, "--check"]
SMALL = ["--set", "train.epochs=1", "--set", "train.max_train=64", "--set", "run.progress=false",
         "--set", "fabricate.student=none", "--set", "finetune.epochs=1", "--set", "finetune.methods=none,e2e"]


@attrs.frozen
class Case:
    id: str
    argv: list[str]
    expect: tuple[str, ...]
    setup: Callable[[Path, Path], None] | None = None
    env: dict[str, str] = attrs.field(factory=dict)
    #: files a failing command may rewrite (stages.json records what a resume was asked to run)
    may_change: frozenset[str] = frozenset()


def _write(rel: str, content: str | bytes) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return setup


def _idx(images: np.ndarray) -> bytes:
    dims = images.shape
    return struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + images.astype(
        np.uint8).tobytes()


def _mnist(n_train: int = 40, n_test: int = 20, *, labels_train: int | None = None, corrupt: str = "",
           gz: bool = False) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        d = tmp / "mnist"
        d.mkdir()
        rng = np.random.default_rng(0)
        files = {
            "train-images-idx3-ubyte": _idx(rng.integers(0, 255, (n_train, 28, 28))),
            "train-labels-idx1-ubyte": _idx(rng.integers(0, 10, (labels_train or n_train,))),
            "t10k-images-idx3-ubyte": _idx(rng.integers(0, 255, (n_test, 28, 28))),
            "t10k-labels-idx1-ubyte": _idx(rng.integers(0, 10, (n_test,))),
        }
        if corrupt == "truncated":
            files["train-images-idx3-ubyte"] = files["train-images-idx3-ubyte"][:500]
        elif corrupt == "magic":
            files["train-images-idx3-ubyte"] = b"PK\x03\x04" + files["train-images-idx3-ubyte"][4:]
        elif corrupt == "missing":
            del files["t10k-labels-idx1-ubyte"]
        elif corrupt == "labels-range":
            files["train-labels-idx1-ubyte"] = _idx(np.full((n_train,), 200))
        elif corrupt == "rank":
            files["train-images-idx3-ubyte"] = _idx(rng.integers(0, 255, (n_train, 784)))
        for name, data in files.items():
            if gz:
                name, data = name + ".gz", gzip.compress(data)
            if corrupt == "bad-gzip" and name.startswith("train-images"):
                data = data[:60]
            (d / name).write_bytes(data)
    return setup


def _cifar(content: object, *, raw: bytes | None = None) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        d = tmp / "cifar"
        d.mkdir()
        for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
            (d / name).write_bytes(raw if raw is not None else pickle.dumps(content))
        (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return setup


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/onnx-run-pwned",))


def _png(path: Path, size: int = 20, mode: str = "L") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(0).integers(0, 255, (size, size) if mode == "L" else (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr, mode=None).save(path)


def _folder(kind: str) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        d = tmp / "imgs"
        d.mkdir()
        if kind == "empty":
            return
        if kind == "one-class":
            for i in range(4):
                _png(d / "cat" / f"{i}.png")
            return
        for cls in ("cat", "dog"):
            for i in range(4):
                _png(d / cls / f"{i}.png")
        if kind == "empty-class":
            (d / "bird").mkdir()
        elif kind == "corrupt":
            (d / "dog" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return setup


def _carvana(kind: str) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        d = tmp / "carvana"
        for car in range(3):
            for view in (1, 2):
                stem = f"car{car}_{view:02d}"
                _png(d / "train" / f"{stem}.png", 40, "RGB")
                if kind == "missing-mask" and car == 2 and view == 2:
                    continue
                _png(d / "train_masks" / f"{stem}_mask.png", 40)
        if kind == "extra-mask":
            _png(d / "train_masks" / "ghost_01_mask.png", 40)
        elif kind == "corrupt-mask":
            (d / "train_masks" / "car0_01_mask.png").write_bytes(b"not an image")
        elif kind == "layout":
            shutil.rmtree(d / "train_masks")
            (d / "train").rename(d / "pictures")
    return setup


SEG = ["--optics", "tiny", "--task", "segmentation", "--distill", "none", "--check", "--dataset", "carvana",
       "--set", "task.data_dir={tmp}/carvana"]


def _torch_save(rel: str, obj: object) -> Callable[[Path, Path], None]:
    def setup(tmp: Path, run: Path) -> None:
        torch.save(obj, tmp / rel)
    return setup


def _psfs(kind: str) -> Callable[[Path, Path], None]:
    """Measured PSFs of the run's student (4 kernels of 5 x 5, grey), then spoilt one way."""
    def setup(tmp: Path, run: Path) -> None:
        d = tmp / "psfs"
        d.mkdir()
        entries = []
        for k in range(4):
            img = np.zeros((11, 11), np.float32)
            img[5, 5] = 1.0
            if kind == "nan" and k == 1:
                img[0, 0] = np.nan
            if kind == "negative" and k == 2:
                img -= 0.5
            if kind == "small":
                img = img[:3, :3]
            if kind == "rank":
                img = np.stack([img] * 4)
            if kind == "zero" and k == 0:
                img[:] = 0
            np.save(d / f"k{k}.npy", img)
            if kind == "missing-kernel" and k == 3:
                continue
            entries.append({"index": k, "positive": f"k{k}.npy"})
        if kind == "text-file":
            (d / "k0.npy").write_text("hello")
        if kind == "gif":
            entries[0]["positive"] = "k0.gif"
            (d / "k0.gif").write_bytes(b"GIF89a")
        if kind == "listed-twice":
            entries.append({"index": 0, "positive": "k0.npy"})
        if kind == "missing-file":
            entries[1]["positive"] = "nowhere.npy"
        if kind == "object":
            np.save(d / "k0.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        manifest = {"kernels": entries} if kind != "bad-json" else None
        (d / "manifest.json").write_text(json.dumps(manifest) if manifest else "{kernels: [")
        if kind == "no-manifest":
            (d / "manifest.json").unlink()
    return setup


def _captures(kind: str) -> Callable[[Path, Path], None]:
    """Captures of the run's device, spoilt one way (4 x 16 x 16 features, 64 training images)."""
    def setup(tmp: Path, run: Path) -> None:
        n = 6
        arrays = {"indices": np.arange(n), "features": np.ones((n, 4, 16, 16), np.float32)}
        if kind == "nan":
            arrays["features"][0, 0, 0, 0] = np.nan
        elif kind == "negative":
            arrays["features"][:] = -5.0
        elif kind == "shape":
            arrays["features"] = np.ones((n, 3, 16, 16), np.float32)
        elif kind == "no-indices":
            del arrays["indices"]
        elif kind == "index-range":
            arrays["indices"] = np.arange(n) + 10_000
        elif kind == "float-indices":
            arrays["indices"] = np.arange(n).astype(np.float32)
        elif kind == "duplicate-indices":
            arrays["indices"] = np.zeros(n, np.int64)
        elif kind == "count":
            arrays["indices"] = np.arange(n + 2)
        elif kind == "test-count":
            arrays["test_features"] = np.ones((3, 4, 16, 16), np.float32)
        elif kind == "object":
            arrays["features"] = np.array([{"x": 1}] * n, dtype=object)
        if kind == "text":
            (tmp / "captures.npz").write_text("not an archive")
            return
        np.savez(tmp / "captures.npz", **arrays)
    return setup


def _edit_run(fn: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    return lambda tmp, run: fn(run)


def _replace_in(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        p = run / rel
        p.write_text(p.read_text().replace(old, new))
    return edit


def _truncate(rel: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        p = run / rel
        p.write_bytes(p.read_bytes()[:100])
    return edit


def _spoil_last_checkpoint(run: Path) -> None:
    """A student whose training was killed (no summary.json) and whose last.pt is then cut short."""
    seed_dir = run / "students" / "none" / "seed0"
    (seed_dir / "summary.json").unlink()
    last = seed_dir / "last.pt"
    last.write_bytes(last.read_bytes()[:100])


def _plugin_changed_since(run: Path) -> None:
    """The student's checkpoint as if the optics plugin had gained a buffer after training."""
    best = run / "students" / "none" / "seed0" / "best.pt"
    state = torch.load(best, weights_only=True)
    state["model"]["frontend.calibration"] = torch.ones(3)
    torch.save(state, best)


def _toml(id, text, *expect) -> Case:  # noqa: A002 - a mistake in a config file given with --config
    return _c(id, [*DRY, "--config", "{tmp}/c.toml"], *expect, setup=_write("c.toml", text))


def _c(id, argv, *expect, setup=None, env=None, may_change=()) -> Case:  # noqa: A002
    return Case(id, list(argv), tuple(expect), setup, env or {}, frozenset(may_change))


CASES: list[Case] = [
    # -- the command line --------------------------------------------------------------------
    _c("unknown-optics", ["--optics", "nosuch", "--task", "classification", "--check"],
       "unknown optics 'nosuch'", "registered: "),
    _c("unknown-task", ["--optics", "tiny", "--task", "nosuch", "--check"], "unknown task 'nosuch'", "registered: "),
    _c("unknown-teacher", [*DRY, "--teacher", "nosuch"], "unknown teacher 'nosuch'", "registered: "),
    _c("unknown-distill", ["--optics", "tiny", "--task", "classification", "--distill", "none,nosuch", "--check"],
       "unknown distillation loss 'nosuch'", "registered: "),
    _c("empty-distill", ["--optics", "tiny", "--task", "classification", "--distill", ",", "--check"],
       "students.methods", "e.g. none,kd,ntkd"),
    _c("seeds-zero", [*DRY, "--seeds", "0"], "run.seeds", ">= 1"),
    _c("seeds-negative", [*DRY, "--seeds", "-3"], "run.seeds", ">= 1"),
    _c("epochs-zero", [*DRY, "--epochs", "0"], "train.epochs", ">= 1"),
    _c("seeds-not-a-number", [*DRY, "--seeds", "two"], "--seeds", "'two' is not a valid integer"),
    _c("unknown-device", [*DRY, "--device", "tpu"], "run.device", "cpu"),
    _c("unknown-stage", [*DRY, "--stages", "students,polish"], "--stages: unknown stage 'polish'", "stages are"),
    _c("unknown-preset", [*DRY, "--preset", "huge"], "huge", "paper"),
    _c("unknown-dataset", [*DRY, "--dataset", "imagenet"], "task.dataset", "must be one of digits", "'imagenet'"),
    _c("quiet-and-verbose", ["-q", "-v", *DRY], "-q/--quiet and -v/--verbose: choose one"),
    _c("unknown-option", [*DRY, "--optix", "4f"], "No such option '--optix'"),
    _c("unknown-command", ["trian"], "No such command 'trian'"),
    _c("resume-with-options", ["--resume", "{run}", "--optics", "tiny"], "--resume", "drop the other config options"),
    _c("resume-missing", ["--resume", "{tmp}/nowhere"], "nowhere", "config.toml"),
    _c("resume-not-a-run", ["--resume", "{tmp}/plain"], "plain", "no config.toml", setup=_write("plain/x.txt", "x")),
    # -- config files ------------------------------------------------------------------------
    _c("config-missing", [*DRY, "--config", "{tmp}/nope.toml"], "nope.toml", "not found"),
    _c("config-folder", [*DRY, "--config", "{tmp}"], "{tmp}", "is a directory"),
    _toml("config-bad-toml", "[train\nepochs = 3\n", "c.toml", "TOML"),
    _toml("config-binary", b"\xff\xfe\x00\x01", "c.toml"),
    _toml("config-unknown-section", "[trian]\nepochs = 3\n", "'trian'", "allowed sections"),
    _toml("config-unknown-key", "[train]\nepoch = 3\n", "train: unknown key 'epoch'", "allowed keys"),
    _toml("config-wrong-type", "[train]\nepochs = \"ten\"\n", "train.epochs", "integer"),
    _toml("config-section-not-table", "train = 3\n", "train", "table"),
    _toml("config-errors-not-list", "[fabricate]\nerrors = \"brightness\"\n", "fabricate.errors", "list"),
    _toml("config-error-without-name", "[fabricate]\nerrors = [{sigma = 0.1}]\n", "fabricate.errors[0]",
          "'name'"),
    _toml("config-error-unknown", "[fabricate]\nerrors = [{name = \"dust\"}]\n", "fabricate.errors[0]", "dust",
          "registered"),
    _toml("config-error-bad-key", "[fabricate]\nerrors = [{name = \"brightness\", sigmaa = 0.1}]\n",
          "fabricate.errors[0]", "sigmaa"),
    _toml("config-error-negative", "[fabricate]\nerrors = [{name = \"brightness\", sigma = -0.1}]\n",
          "fabricate.errors[0]", "sigma"),
    _toml("config-error-needs-capability", "[fabricate]\nerrors = [{name = \"phase-quantisation\", bits = 4}]\n",
          "phase-quantisation", "tiny"),
    # -- --set ---------------------------------------------------------------------------------
    _c("set-no-equals", [*DRY, "--set", "train.epochs"], "--set 'train.epochs'", "expected section.key=value"),
    _c("set-no-section", [*DRY, "--set", "epochs=3"], "--set epochs", "expected section.key=value"),
    _c("set-unknown-section", [*DRY, "--set", "trian.epochs=3"], "'trian'", "allowed sections"),
    _c("set-unknown-key", [*DRY, "--set", "train.epoch=3"], "train: unknown key 'epoch'", "allowed keys"),
    _c("set-text-for-int", [*DRY, "--set", "train.epochs=abc"], "train.epochs", "integer"),
    _c("set-float-for-int", [*DRY, "--set", "train.batch_size=6.5"], "train.batch_size", "integer"),
    _c("set-lr-inf", [*DRY, "--set", "train.lr=inf"], "train.lr", "finite"),
    _c("set-lr-nan", [*DRY, "--set", "train.lr=nan"], "train.lr", "finite"),
    _c("set-lr-negative", [*DRY, "--set", "train.lr=-0.1"], "train.lr", "> 0"),
    _c("set-lr-zero", [*DRY, "--set", "train.lr=0"], "train.lr", "> 0"),
    _c("set-batch-zero", [*DRY, "--set", "train.batch_size=0"], "train.batch_size", ">= 1"),
    _c("set-max-train-negative", [*DRY, "--set", "train.max_train=-5"], "train.max_train", ">= 0"),
    _c("set-optimizer", [*DRY, "--set", "train.optimizer=rmsprop2"], "train.optimizer", "adam"),
    _c("set-schedule", [*DRY, "--set", "train.schedule=wobbly"], "train.schedule", "cosine"),
    _c("set-grad-clip-nan", [*DRY, "--set", "train.grad_clip=nan"], "train.grad_clip", "finite"),
    _c("set-weight-decay-negative", [*DRY, "--set", "train.weight_decay=-1"], "train.weight_decay", ">= 0"),
    _c("set-teacher-epochs", [*DRY, "--set", "teacher_train.epochs=0"], "teacher_train.epochs", ">= 1"),
    _c("set-val-fraction", [*DRY, "--set", "task.val_fraction=1.5"], "task.val_fraction", "must be < 0.5, got 1.5"),
    _c("set-test-fraction", [*DRY, "--set", "task.test_fraction=0"], "task.test_fraction", "must be > 0, got 0"),
    _c("set-fractions-sum", [*DRY, "--set", "task.val_fraction=0.4", "--set", "task.test_fraction=0.7"],
       "task.test_fraction", "must be < 0.5, got 0.7"),
    _c("set-hidden-zero", [*DRY, "--set", "task.hidden=0"], "task.hidden", ">= 1"),
    _c("set-threads", [*DRY, "--set", "run.threads=-1"], "run.threads", ">= 0"),
    _c("set-precision", [*DRY, "--set", "run.precision=fp8"], "run.precision", "fp32"),
    _c("set-run-name-path", [*DRY, "--set", "run.name=../escape"], "run.name", "must be one folder name",
       "'../escape'"),
    _c("set-seed-negative", [*DRY, "--set", "run.seed=-1"], "run.seed", ">= 0"),
    _c("set-optics-key", [*DRY, "--set", "optics.kernels=3"], "optics: unknown key 'kernels'", "allowed keys"),
    _c("set-optics-zero", [*DRY, "--set", "optics.num_kernels=0"], "optics.num_kernels", ">= 1"),
    _c("set-optics-channels", [*DRY, "--set", "optics.channels=2"], "optics.channels", "[1, 3]"),
    _c("set-4f-wavelength", ["--optics", "4f", "--task", "classification", "--check",
                             "--set", "optics.wavelength_nm=-532"], "optics.wavelength_nm", "> 0"),
    _c("set-4f-mask", ["--optics", "4f", "--task", "classification", "--check", "--set", "optics.mask=glass"],
       "optics.mask", "phase"),
    _c("set-4f-wavelength-nan", ["--optics", "4f", "--task", "classification", "--check",
                                 "--set", "optics.wavelength_nm=nan"], "optics.wavelength_nm", "finite"),
    _c("set-methods-unknown", [*DRY, "--set", "students.methods=none,bogus"], "bogus", "registered"),
    _c("set-methods-empty", [*DRY, "--set", "students.methods="], "students.methods", "e.g. none,kd,ntkd"),
    _c("set-severity-zero", [*DRY, "--set", "fabricate.severity=0"], "fabricate.severity", "> 0"),
    _c("set-severity-nan", [*DRY, "--set", "fabricate.severity=nan"], "fabricate.severity", "finite"),
    _c("set-devices-zero", [*DRY, "--set", "fabricate.devices=0"], "fabricate.devices", ">= 1"),
    _c("set-finetune-fraction", [*DRY, "--set", "finetune.fraction=0"], "finetune.fraction", "must be > 0"),
    _c("set-finetune-fraction-big", [*DRY, "--set", "finetune.fraction=2"], "finetune.fraction", "must be <= 1"),
    _c("set-finetune-method", [*DRY, "--set", "finetune.methods=none,magic"], "finetune.methods", "'magic'",
       "allowed: none, e2e"),
    _c("set-lr-grid", [*DRY, "--set", "finetune.lr_grid=0.01,-1"], "finetune.lr_grid", "> 0"),
    _c("set-kd-temperature", ["--optics", "tiny", "--task", "classification", "--distill", "kd", "--check",
                              "--set", "distill.kd.temperature=0"], "distill.kd.temperature", "> 0"),
    _c("set-kd-folds", ["--optics", "tiny", "--task", "classification", "--distill", "kd", "--check",
                        "--set", "distill.kd.folds=1"], "distill.kd.folds", "from 2 to 20"),
    _c("set-distill-unknown", [*DRY, "--set", "distill.magic.beta=1"], "distill.magic", "registered"),
    _c("set-teacher-width", [*DRY, "--set", "teacher.conv1=0"], "teacher.conv1", ">= 1"),
    _c("set-estimate-inits", [*DRY, "--set", "estimate.inits=-1"], "estimate.inits", ">= 0"),
    _c("set-progress", [*DRY, "--set", "run.progress=maybe"], "run.progress", "true or false"),
    # -- data files ----------------------------------------------------------------------------
    _c("data-dir-missing", [*DRY, "--dataset", "fashion-mnist", "--set", "task.data_dir={tmp}/nowhere"],
       "nowhere", "does not exist"),
    _c("data-dir-file", [*DRY, "--dataset", "fashion-mnist", "--set", "task.data_dir={tmp}/f.txt"], "f.txt",
       setup=_write("f.txt", "x")),
    _c("data-dir-empty", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/e"], "train-images-idx3-ubyte",
       setup=_write("e/readme.txt", "nothing here")),
    _c("data-dir-none-for-idx", [*DRY, "--dataset", "mnist"], "task.data_dir", "mnist"),
    _c("idx-truncated", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/mnist"],
       "train-images-idx3-ubyte", "IDX", setup=_mnist(corrupt="truncated")),
    _c("idx-magic", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/mnist"], "train-images-idx3-ubyte",
       "not an IDX file", setup=_mnist(corrupt="magic")),
    _c("idx-missing-file", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/mnist"],
       "t10k-labels-idx1-ubyte", setup=_mnist(corrupt="missing")),
    _c("idx-count-mismatch", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/mnist"],
       "train-labels-idx1-ubyte", setup=_mnist(labels_train=30)),
    _c("idx-label-range", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/mnist"],
       "train-labels-idx1-ubyte", setup=_mnist(corrupt="labels-range")),
    _c("idx-rank", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/mnist"], "train-images-idx3-ubyte",
       setup=_mnist(corrupt="rank")),
    _c("idx-bad-gzip", [*DRY, "--dataset", "mnist", "--set", "task.data_dir={tmp}/mnist"],
       "train-images-idx3-ubyte.gz", setup=_mnist(gz=True, corrupt="bad-gzip")),
    _c("cifar-missing", [*DRY, "--dataset", "cifar10", "--set", "task.data_dir={tmp}/e"], "data_batch_1",
       "not found", setup=_write("e/x.txt", "")),
    _c("cifar-not-pickle", [*DRY, "--dataset", "cifar10", "--set", "task.data_dir={tmp}/cifar"], "data_batch_1",
       "not a valid pickle", setup=_cifar(None, raw=b"hello world")),
    _c("cifar-unsafe-pickle", [*DRY, "--dataset", "cifar10", "--set", "task.data_dir={tmp}/cifar"], "data_batch_1",
       "system", setup=_cifar(_Evil())),
    _c("cifar-not-dict", [*DRY, "--dataset", "cifar10", "--set", "task.data_dir={tmp}/cifar"], "data_batch_1",
       "not a dict", setup=_cifar([1, 2, 3])),
    _c("cifar-missing-key", [*DRY, "--dataset", "cifar10", "--set", "task.data_dir={tmp}/cifar"], "data_batch_1",
       "no b'labels' key", setup=_cifar({b"data": np.zeros((10, 3072), np.uint8)})),
    _c("cifar-wrong-shape", [*DRY, "--dataset", "cifar10", "--set", "task.data_dir={tmp}/cifar"], "data_batch_1",
       "b'data'", setup=_cifar({b"data": np.zeros((10, 100), np.uint8), b"labels": [0] * 10})),
    _c("folder-empty", [*DRY, "--dataset", "folder", "--set", "task.data_dir={tmp}/imgs"], "imgs",
       "no class subfolders", setup=_folder("empty")),
    _c("folder-one-class", [*DRY, "--dataset", "folder", "--set", "task.data_dir={tmp}/imgs"], "imgs", "class",
       setup=_folder("one-class")),
    _c("folder-empty-class", [*DRY, "--dataset", "folder", "--set", "task.data_dir={tmp}/imgs"], "bird",
       "contains no images", setup=_folder("empty-class")),
    _c("folder-corrupt-image", [*DRY, "--dataset", "folder", "--set", "task.data_dir={tmp}/imgs"], "9.png",
       setup=_folder("corrupt")),
    _c("carvana-missing-mask", SEG, "car2_02", "has no mask", setup=_carvana("missing-mask")),
    _c("carvana-extra-mask", SEG, "ghost_01_mask.png", "matches no image", setup=_carvana("extra-mask")),
    _c("carvana-corrupt-mask", SEG, "car0_01_mask.png", "not a readable image", setup=_carvana("corrupt-mask")),
    _c("carvana-layout", SEG, "carvana", "neither train/ + train_masks/", setup=_carvana("layout")),
    _c("carvana-missing-dir", ["--optics", "tiny", "--task", "segmentation", "--distill", "none", "--check",
                               "--dataset", "carvana", "--set", "task.data_dir={tmp}/nowhere"], "nowhere",
       "not found"),
    # -- teacher checkpoints -----------------------------------------------------------------
    _c("teacher-ckpt-missing", [*BASE, "--teacher-checkpoint", "{tmp}/t.pt", "--out", "{out}", "--stages", "teacher"],
       "--teacher-checkpoint", "not found"),
    _c("teacher-ckpt-text", [*BASE, "--teacher-checkpoint", "{tmp}/t.pt", "--out", "{out}", "--stages", "teacher"],
       "t.pt", "not a torch checkpoint", setup=_write("t.pt", "text")),
    _c("teacher-ckpt-unsafe", [*BASE, "--teacher-checkpoint", "{tmp}/t.pt", "--out", "{out}", "--stages", "teacher"],
       "t.pt", "not a torch checkpoint", setup=_torch_save("t.pt", {"w": _Evil()})),
    _c("teacher-ckpt-keys", [*BASE, "--teacher-checkpoint", "{tmp}/t.pt", "--out", "{out}", "--stages", "teacher"],
       "t.pt", "parameter names do not match", setup=_torch_save("t.pt", {"w": torch.zeros(2)})),
    _c("teacher-ckpt-list", [*BASE, "--teacher-checkpoint", "{tmp}/t.pt", "--out", "{out}", "--stages", "teacher"],
       "t.pt", setup=_torch_save("t.pt", [torch.zeros(2)])),
    _c("teacher-ckpt-folder", [*BASE, "--teacher-checkpoint", "{tmp}", "--out", "{out}", "--stages", "teacher"],
       "--teacher-checkpoint", "is a directory"),
    # -- run directories -------------------------------------------------------------------------
    _c("resume-edited-config", ["--resume", "{run}"], "config.toml was edited", "num_kernels 4 -> 6",
       setup=_edit_run(_replace_in("config.toml", "num_kernels = 4", "num_kernels = 6"))),
    _c("resume-broken-config", ["--resume", "{run}"], "config.toml",
       setup=_edit_run(_replace_in("config.toml", "[train]", "[train"))),
    _c("resume-broken-run-json", ["--resume", "{run}"], "run.json", "not the run's record",
       setup=_edit_run(_replace_in("run.json", "{", "["))),
    _c("resume-broken-stages", ["--resume", "{run}"], "stages.json", "not a list of stages",
       setup=_edit_run(lambda run: (run / "stages.json").write_text("{}"))),
    _c("resume-truncated-checkpoint", ["--resume", "{run}", "--stages", "students"], "last.pt",
       "cannot be read", "delete it", setup=_edit_run(_spoil_last_checkpoint), may_change={"run/stages.json"}),
    _c("fabricate-plugin-changed", ["fabricate", "{run}", "--name", "later", "--seed", "5"], "best.pt",
       "parameter names do not match",
       "the optics or task code changed", setup=_edit_run(_plugin_changed_since)),
    _c("report-not-a-run", ["report", "{tmp}"], "no config.toml"),
    _c("realise-missing", ["realise", "{tmp}/nowhere"], "nowhere", "no config.toml"),
    # -- fabricate, measure, finetune, robustness, estimate ---------------------------------------
    _c("fabricate-unknown-error", ["fabricate", "{run}", "--error-model", "dust"], "--error-model", "dust",
       "registered"),
    _c("fabricate-bad-spec", ["fabricate", "{run}", "--error-model", "brightness:sigma"], "brightness:sigma",
       "NAME:key=value"),
    _c("fabricate-bad-key", ["fabricate", "{run}", "--error-model", "brightness:sigmaa=0.1"], "sigmaa", "allowed"),
    _c("fabricate-bad-value", ["fabricate", "{run}", "--error-model", "brightness:sigma=-1"], "sigma", ">= 0"),
    _c("fabricate-severity", ["fabricate", "{run}", "--severity", "0"], "--severity", "(0, 100]"),
    _c("fabricate-severity-nan", ["fabricate", "{run}", "--severity", "nan"], "--severity", "(0, 100]"),
    _c("fabricate-student", ["fabricate", "{run}", "--student", "ntkd"], "--student 'ntkd'", "trained none"),
    _c("fabricate-name-taken", ["fabricate", "{run}", "--name", "dev", "--seed", "7"], "device 'dev' exists",
       "another --name"),
    _c("fabricate-psfs-missing", ["fabricate", "{run}", "--measured-psfs", "{tmp}/nowhere", "--name", "m"],
       "nowhere", "manifest.json"),
    _c("psfs-no-manifest", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "manifest.json",
       setup=_psfs("no-manifest")),
    _c("psfs-bad-json", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "manifest.json",
       "expected JSON", setup=_psfs("bad-json")),
    _c("psfs-nan", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "k1.npy", "NaN",
       setup=_psfs("nan")),
    _c("psfs-negative", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "k2.npy", "minimum",
       setup=_psfs("negative")),
    _c("psfs-small", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "smaller than",
       setup=_psfs("small")),
    _c("psfs-rank", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "k0.npy", "2-D image",
       setup=_psfs("rank")),
    _c("psfs-zero", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "k0.npy",
       "empty after background",
       setup=_psfs("zero")),
    _c("psfs-missing-kernel", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"],
       "manifest.json", "kernels 0..3", setup=_psfs("missing-kernel")),
    _c("psfs-listed-twice", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"],
       "kernel 0 listed twice", setup=_psfs("listed-twice")),
    _c("psfs-missing-file", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "nowhere.npy",
       "file not found", setup=_psfs("missing-file")),
    _c("psfs-text-file", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "k0.npy",
       "unreadable", setup=_psfs("text-file")),
    _c("psfs-format", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "k0.gif",
       "PNG, TIFF or NPY", setup=_psfs("gif")),
    _c("psfs-object", ["fabricate", "{run}", "--measured-psfs", "{tmp}/psfs", "--name", "m"], "k0.npy",
       setup=_psfs("object")),
    _c("finetune-unknown-device", ["finetune", "{run}", "--device", "nope"], "device 'nope'", "devices: dev"),
    _c("finetune-method", ["finetune", "{run}", "--method", "none,magic"], "--method", "'magic'", "allowed"),
    _c("finetune-method-no-settings", ["finetune", "{run}", "--method", "ntkd"], "--method ntkd",
       "[distill.ntkd]"),
    _c("finetune-fraction", ["finetune", "{run}", "--fraction", "0"], "--fraction", "(0, 1]"),
    _c("finetune-teacher", ["finetune", "{run}", "--teacher", "oracle"], "--teacher", "'oracle'", "allowed: teacher"),
    _c("set-finetune-teacher", [*DRY, "--set", "finetune.teacher=oracle"], "finetune.teacher", "must be in"),
    _c("set-ntkd-kd-weight", [*DRY, "--set", "distill.ntkd.kd_weight=-1"], "distill.ntkd.kd_weight", "must be >= 0"),
    _c("set-finetune-distill-shape", [*DRY, "--set", "finetune.distill={{ntkd=3}}"], "finetune.distill",
       "a table of settings per loss"),
    _c("set-finetune-distill-loss", [*DRY, "--set", "finetune.distill={{magic={{a=1}}}}"], "finetune.distill.magic",
       "allowed: "),
    _c("set-finetune-distill-key", [*DRY, "--set", "finetune.distill={{ntkd={{kd_wait=1}}}}"],
       "finetune.distill.ntkd: unknown key 'kd_wait'", "kd_weight"),
    _c("set-finetune-distill-value", [*DRY, "--set", "finetune.distill={{ntkd={{beta=-1}}}}"],
       "finetune.distill.ntkd.beta", "must be >= 0"),
    _c("captures-missing", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/c.npz"], "c.npz",
       "not found"),
    _c("captures-text", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "not a readable .npz", setup=_captures("text")),
    _c("captures-nan", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "'features'", "finite", setup=_captures("nan")),
    _c("captures-negative", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "'features' goes down to -5", "allowed: values >= 0", setup=_captures("negative")),
    _c("captures-shape", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "'features' has shape (6, 3, 16, 16)", setup=_captures("shape")),
    _c("captures-no-indices", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "missing array 'indices'", setup=_captures("no-indices")),
    _c("captures-index-range", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "training split", setup=_captures("index-range")),
    _c("captures-float-indices", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "integer", setup=_captures("float-indices")),
    _c("captures-duplicate-indices", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "distinct", setup=_captures("duplicate-indices")),
    _c("captures-count", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", setup=_captures("count")),
    _c("captures-test-count", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", "'test_features'", setup=_captures("test-count")),
    _c("captures-object", ["finetune", "{run}", "--device", "dev", "--captures", "{tmp}/captures.npz"],
       "captures.npz", setup=_captures("object")),
    _c("measure-unknown-device", ["measure", "{run}", "--device", "nope", "--out", "{tmp}/m"], "device 'nope'"),
    _c("measure-fraction", ["measure", "{run}", "--device", "dev", "--out", "{tmp}/m", "--fraction", "2"],
       "--fraction", "(0, 1]"),
    _c("measure-out-file", ["measure", "{run}", "--device", "dev", "--out", "{tmp}/f"], "f", "is a file",
       setup=_write("f", "x")),
    _c("robustness-values", ["robustness", "{run}", "--values", "0,abc"], "--values", "abc", "finite numbers"),
    _c("robustness-key", ["robustness", "{run}", "--error-model", "brightness", "--key", "sigmaa"], "sigmaa",
       "allowed"),
    _c("estimate-sweep-form", [*BASE, "estimate", "--sweep", "num_kernels=1,2"][4:] + ["--optics", "tiny", "--sweep",
                                                                                        "num_kernels=1,2"],
       "--sweep", "SECTION.KEY=V1,V2"),
    _c("estimate-sweep-key", ["estimate", "--optics", "tiny", "--sweep", "optics.kernels=1,2"],
       "optics: unknown key 'kernels'",
       "allowed keys"),
    _c("estimate-sweep-value", ["estimate", "--optics", "tiny", "--sweep", "optics.num_kernels=1,0"],
       "optics.num_kernels", ">= 1"),
    _c("estimate-inits", ["estimate", "--optics", "tiny", "--inits", "0"], "--inits", "0"),
    _c("compare-resume-missing", ["compare", "--resume", "{tmp}/nowhere"], "nowhere"),
    _c("config-show-bad-key", ["config", "show", "--set", "train.epoch=3"], "train: unknown key 'epoch'",
       "allowed keys"),
    _c("teacher-train-bad-ckpt", ["teacher", "train", "--optics", "tiny", "--distill", "none",
                                   "--teacher-checkpoint", "{tmp}/t.pt"],
       "t.pt", "not a torch checkpoint", setup=_write("t.pt", "text")),
    # -- plugins: their components' settings, their commands, a plugin that breaks the rules ----
    _c("plugin-4f-phase-bits", ["--optics", "4f", "--task", "classification", "--check",
                                "--set", "optics.phase_bits=17"], "optics.phase_bits", "<= 16"),
    _c("plugin-diffractive-preset", ["--optics", "diffractive", "--task", "classification", "--check",
                                     "--set", "optics.preset=moon"], "optics.preset", "'moon'"),
    _c("plugin-metasurface-mode", ["--optics", "metasurface", "--task", "classification", "--check",
                                   "--set", "optics.mode=magic"], "optics.mode", "'magic'"),
    _c("plugin-metasurface-spacing", ["--optics", "metasurface", "--task", "classification", "--check",
                                      "--set", "optics.spacing_mm=-1"], "optics.spacing_mm", ">= 0"),
    _c("plugin-segmentation-preset", ["--optics", "4f", "--task", "segmentation", "--check",
                                      "--set", "task.preset=huge"], "task.preset", "'huge'"),
    _c("plugin-all-optical-kernels", ["--optics", "diffractive", "--task", "all-optical", "--check",
                                      "--set", "optics.num_kernels=4"], "4 regions", "optics.num_kernels = 10"),
    _c("plugin-command-bad-option", ["metasurface", "--nope"], "No such option '--nope'"),
    _c("plugin-broken-optics", ["--optics", "broken", "--task", "classification", "--check"],
       "unknown optics 'broken'", "registered: "),
    _c("plugin-new-bad-name", ["plugin", "new", "My Optics", "--kind", "optics", "--out", "{tmp}"], "'My Optics'",
       "lower-case name"),
    _c("plugin-new-exists", ["plugin", "new", "pinhole", "--kind", "optics", "--out", "{tmp}"],
       "onnx-run-pinhole: exists", "does not exist yet", setup=_write("onnx-run-pinhole/keep.txt", "mine")),
    _c("plugin-new-kind", ["plugin", "new", "pinhole", "--kind", "camera", "--out", "{tmp}"], "--kind",
       "'camera'"),
    _c("plugin-new-out-file", ["plugin", "new", "pinhole", "--kind", "optics", "--out", "{tmp}/f/sub"], "--out",
       "is a file, not a folder", setup=_write("f", "keep")),
    _c("plugin-new-keyword", ["plugin", "new", "class", "--kind", "loss", "--out", "{tmp}"], "'class'", "keyword"),
    # -- plugins and the environment ---------------------------------------------------------
    _c("cuda-without-cuda", [*DRY, "--device", "cuda"], "run.device", "cuda"),
    _c("out-is-file", [*BASE, "--stages", "students", "--out", "{tmp}/f", *SMALL], "{tmp}/f is a file",
       "allowed: a folder", setup=_write("f", "keep")),
    _c("out-under-file", [*BASE, "--stages", "students", "--out", "{tmp}/f/runs", *SMALL], "{tmp}/f is a file",
       setup=_write("f", "keep")),
]


# -- the harness ------------------------------------------------------------------------------

_RUN: dict[str, Path] = {}


@pytest.fixture
def trained_run(tiny_optics, tmp_path_factory) -> Path:
    """One tiny trained run (student ``none``, realised, device ``dev`` fabricated), made once
    per session; each case works on a copy."""
    if "dir" not in _RUN:
        out = tmp_path_factory.mktemp("trained")
        code, text = _invoke([*BASE, "--out", str(out), "--stages", "students,realise", *SMALL])
        assert code == 0, text
        run = next(out.iterdir())
        code, text = _invoke(["fabricate", str(run), "--name", "dev"])
        assert code == 0, text
        _RUN["dir"] = run
    return _RUN["dir"]


def _invoke(argv: list[str]) -> tuple[int, str]:
    """The console entry point as a shell runs it: (exit code, stdout + stderr). An exception
    that escapes is returned as code -1 with its traceback, which every case then fails on."""
    import traceback

    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - the point is to see it
            code, tb = -1, traceback.format_exc()
            return code, out.getvalue().decode() + err.getvalue().decode() + tb
        return code, out.getvalue().decode() + err.getvalue().decode()


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its bytes (folders as ``dir``)."""
    return {p.relative_to(root).as_posix(): ("dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


def check_one_line(code: int, text: str, expect: tuple[str, ...]) -> str:
    assert "Traceback" not in text, text
    assert code == 2, f"exit {code}: {text}"
    errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, text
    # besides the Error line: warnings and notes, click's usage lines, the pipeline's header and stage lines
    assert not [ln for ln in text.splitlines() if ln.strip() and not ln.startswith((
        "Error:", "Warning:", "Note:", "Usage:", "Try ", "onnx-run ", "run directory: ", "[1/"))], text
    for fragment in expect:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


@attrs.frozen
class Outcome:
    code: int
    text: str
    expect: tuple[str, ...]  # the case's fragments, with its folders filled in
    before: dict[str, str]  # the working folder's snapshot before the command
    work: Path


def run_case(case: Case, tmp_path: Path, trained_run: Path, monkeypatch) -> Outcome:
    """Set the case's working folder up (a copy of the trained run where it needs one), run the
    command in it and keep the folder's snapshot from before."""
    work = tmp_path / "work"
    work.mkdir()
    names = {"tmp": str(work), "run": str(work / "run"), "out": str(work / "runs")}
    if any("{run}" in a for a in case.argv):
        shutil.copytree(trained_run, work / "run")
    if case.setup is not None:
        case.setup(work, work / "run")
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(work)
    before = _snapshot(work)
    code, text = _invoke([a.format(**names) for a in case.argv])
    return Outcome(code, text, tuple(e.format(**names) for e in case.expect), before, work)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_mistake_is_one_line_and_changes_nothing(case, tmp_path, trained_run, monkeypatch):
    res = run_case(case, tmp_path, trained_run, monkeypatch)
    check_one_line(res.code, res.text, res.expect)
    before, after = res.before, _snapshot(res.work)
    assert {k: v for k, v in after.items() if k not in case.may_change} == \
        {k: v for k, v in before.items() if k not in case.may_change}
    assert not Path("/tmp/onnx-run-pwned").exists()


def test_the_catalogue_is_large_and_distinct():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


# -- the file system at fault: unwritable, full at the start, full in the middle ------------------

RUN = [*BASE, "--stages", "students", *SMALL]


def _no_space(path: str = "") -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", path)


def test_an_unwritable_out_folder_is_one_line_and_writes_nothing(tmp_path, tiny_optics, monkeypatch):
    """A folder the user may not write to (patched: the tests may run as root, whom chmod does
    not stop): exit 2, one line naming the folder, nothing created."""
    locked = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == locked or locked in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    before = _snapshot(tmp_path)
    code, text = _invoke([*RUN, "--out", str(locked / "runs")])
    check_one_line(code, text, ("--out / run.out", "Permission denied", "allowed: a folder you can write to"))
    assert _snapshot(tmp_path) == before


def test_a_full_disk_at_the_first_write_leaves_no_run_directory(tmp_path, tiny_optics, monkeypatch):
    import onnx_run.files

    def full(fd):
        raise _no_space()

    monkeypatch.setattr(onnx_run.files.os, "fsync", full)
    code, text = _invoke([*RUN, "--out", str(tmp_path / "runs")])
    check_one_line(code, text, ("No space left on device", "nothing was written", "free some space"))
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes(tmp_path, tiny_optics, monkeypatch):
    """The disk fills while a checkpoint is written: exit 2, one line saying how to continue;
    no half-written file (no temporary left, every checkpoint loads); --resume then finishes."""
    import onnx_run.train.checkpoint as checkpoint

    saves = {"n": 0}
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:  # the second checkpoint of the training
            Path(path).write_bytes(b"half a checkpoint")  # what a full disk leaves: a torn file
            raise _no_space(str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    out = tmp_path / "runs"
    code, text = _invoke([*RUN, "--out", str(out), "--set", "train.epochs=2"])
    run_dir = out / "tiny-classification-digits"
    check_one_line(code, text, ("No space left on device", "nothing was half-written",
                                f"onnx-run --resume {run_dir}"))
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    for pt in run_dir.rglob("*.pt"):
        checkpoint.load_checkpoint(pt)  # whole, or it would not be there
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    code, text = _invoke(["--resume", str(run_dir)])
    assert code == 0, text
    assert (run_dir / "students" / "none" / "seed0" / "summary.json").exists()


def test_a_diverging_training_says_which_learning_rate_and_what_was_kept(tmp_path, tiny_optics):
    """lr = inf is refused when the config is read; a finite lr that still diverges stops in
    one line naming the learning rates, saying what was kept and what to do."""
    code, text = _invoke([*DRY, "--set", "train.lr=inf"])
    check_one_line(code, text, ("train.lr", "finite"))
    code, text = _invoke([*RUN, "--out", str(tmp_path / "runs"), "--set", "train.lr=1e30",
                          "--set", "train.optics_lr=1e30", "--set", "train.optimizer=sgd",
                          "--set", "train.batch_size=16"])
    check_one_line(code, text, ("the loss became", "(lr 1e+30, optics lr 1e+30)", "allowed: a lower learning rate"))
    assert "last good checkpoint" not in text


# -- the light dry run (no torch): what it catches, and what it leaves to the run's start ----------

#: mistakes in the settings, the plugins' names and the run directory: the light --dry-run
#: catches them in the same words as --check
CAUGHT_BY_DRY_RUN = {"unknown-optics", "unknown-task", "unknown-distill", "empty-distill", "set-4f-mask",
                     "set-kd-temperature", "set-kd-folds", "plugin-4f-phase-bits", "plugin-metasurface-mode",
                     "plugin-segmentation-preset", "carvana-missing-dir"}
CHECKED = [c for c in CASES if "--check" in c.argv]


@pytest.mark.parametrize("case", CHECKED, ids=[c.id for c in CHECKED])
def test_the_dry_run_catches_a_mistake_or_says_it_is_left_to_the_run(case, tmp_path, trained_run, monkeypatch):
    """Every --check case through the light --dry-run: the same one line, or (data, shapes,
    capabilities: what needs torch) exit 0 saying those are checked when the run starts;
    either way nothing is written."""
    dry = attrs.evolve(case, argv=["--dry-run" if a == "--check" else a for a in case.argv])
    res = run_case(dry, tmp_path, trained_run, monkeypatch)
    if res.code == 0:
        assert case.id not in CAUGHT_BY_DRY_RUN, res.text
        assert "checked when the run starts, before it writes anything (--check: now)" in res.text, res.text
    elif case.id == "carvana-missing-dir":  # the dry run only sees that the folder is missing
        check_one_line(res.code, res.text, ("task.data_dir", "nowhere", "does not exist"))
    else:
        check_one_line(res.code, res.text, res.expect)
    assert _snapshot(res.work) == res.before


def test_the_dry_run_catches_the_settings_mistakes_it_names():
    assert CAUGHT_BY_DRY_RUN <= {c.id for c in CHECKED}
