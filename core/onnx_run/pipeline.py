"""The pipeline: stages run in order, each skipping work already done in the run directory.

Stages: estimate -> teacher -> students -> realise -> fabricate -> compensate -> report. Every stage is resumable: a student whose
summary.json exists is not retrained; one with a last.pt continues from it.
Everything that can fail on user input (config, plugins, data files, checkpoint shapes) is
checked before the run directory is created, so bad input never leaves half a run behind.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from onnx_run.components import HybridModel
from onnx_run.config import RunConfig, finetune_losses
from onnx_run.errors import UserError
from onnx_run.files import atomic_write_text, write_json
from onnx_run.rundir import (PARALLEL_STAGES, STAGES, check_run_dir, check_teacher_checkpoint_file, default_run_dir,
                             distributions, make_folder, parse_stages, run_dir_config, started_threads)
from onnx_run.precision import check_precision
from onnx_run.train.loop import (Output, Recipe, TrainData, Trainee, Training, apply_threads, resolve_device,
                                  seed_everything)

class Pipeline:
    """One run directory, its config, and the stages that fill it."""

    def __init__(self, cfg: RunConfig, run_dir: Path, *, teacher_checkpoint: str | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.teacher_checkpoint = teacher_checkpoint
        from onnx_run.train.distributed import init_from_env

        device = resolve_device(cfg.run.device)
        self.precision = check_precision(cfg.run.precision, device)  # fp16 without CUDA: refused here
        self.device = init_from_env(device)
        #: torch's CPU threads: run.threads, else those this run started with (results depend on
        #: the count in the last bits: a resume keeps it), else chosen from the free cores
        self.threads = apply_threads(cfg.run.threads or started_threads(self.run_dir))
        self.progress = cfg.run.progress
        self.task = cfg.task.build()
        seed_everything(cfg.run.seed)
        probe = cfg.optics.build()
        self.channels = probe.in_channels
        self.input_size = tuple(probe.input_size)
        self.feature_shape = probe.feature_shape()
        self.splits = self.task.datasets(image_size=self.input_size, channels=self.channels, seed=cfg.run.seed)
        self.num_outputs = self.task.num_outputs(self.splits)
        self.task.build_backend(self.feature_shape, self.num_outputs)  # optics and task agree, before any work
        self.dataset = getattr(cfg.task.config, "dataset", cfg.task.name)
        #: the teacher ("teacher": (model, info)) and its kernel lookup ("kernel"), built on first
        #: use and shared with every variant of this pipeline
        self._shared: dict[str, Any] = {}
        from onnx_run.fabrication.device import check_capabilities, scale_error_specs

        #: fabricate.errors at fabricate.severity, checked now: a misspelt model or key is one line
        #: before anything trains, not a failure at the fabricate stage
        self.device_errors = scale_error_specs(cfg.fabricate.errors, cfg.fabricate.severity)
        #: what the optics declares it can do beyond the contract (OpticalFrontend.capabilities)
        self.optics_capabilities = frozenset(probe.capabilities)
        check_capabilities(self.device_errors, self.optics_capabilities, cfg.optics.name)
        check_teacher_checkpoint_file(teacher_checkpoint)
        if teacher_checkpoint:
            for section, choices in cfg.methods.items():
                for method, choice in choices.items():
                    folds = choice.build().teacher_folds
                    if folds:
                        raise UserError(f"{section}.{method}.folds: out-of-fold targets ({folds} folds) need fold "
                                        f"teachers that onnx-run trains itself; with --teacher-checkpoint set "
                                        f"--set {section}.{method}.folds=0 (the checkpoint's own targets)")
            from onnx_run.train.teacher import check_teacher_checkpoint

            check_teacher_checkpoint(cfg, self.task, self.splits, teacher_checkpoint, cfg.run.seed)

    # -- run directory -----------------------------------------------------------------------
    @classmethod
    def from_run_dir(cls, run_dir: Path, **kwargs: Any) -> "Pipeline":
        return cls(run_dir_config(run_dir), Path(run_dir), **kwargs)

    def check(self) -> None:
        """Refuse, writing nothing, a run directory this run cannot use (rundir.check_run_dir)."""
        check_run_dir(self.cfg, self.run_dir, self._record())

    def check_teacher(self, stages: tuple[str, ...]) -> None:
        """Refuse, writing nothing, a teacher that cannot take the run's images where ``stages``
        use the teacher."""
        if self.uses_teacher(stages) and "teacher" not in self._shared:
            from onnx_run.train.teacher import check_teacher_input

            check_teacher_input(self.cfg, self.task, self.splits)

    def uses_teacher(self, stages: tuple[str, ...]) -> bool:
        """Whether ``stages`` build the run's teacher: its own stage, the students' losses that
        need one, compensation's where it distils from that teacher (not from the design)."""
        cfg = self.cfg
        losses = cfg.methods.get("distill", {})
        users = [*(cfg.students.methods if "students" in stages else []),
                 *(cfg.finetune.methods if "compensate" in stages and cfg.finetune.teacher == "teacher" else [])]
        return "teacher" in stages or any(losses[n].build().needs_teacher for n in users if n in losses)

    def _record(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "distributions": distributions(self.cfg), "threads": self.threads}

    def prepare(self) -> None:
        """Create the run directory and write the resolved config (refuse a different one)."""
        self.check()
        from onnx_run.train.distributed import barrier, is_main

        text = self.cfg.to_toml()
        path = self.run_dir / "config.toml"
        started = self.run_dir / "run.json"
        now = self._record()
        if is_main():
            new = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
            make_folder(self.run_dir)
            try:
                atomic_write_text(path, text)
                if not started.exists():  # what made this run: checked again by every --resume
                    write_json(started, now)
            except OSError:  # a full disk at the first write: no run directory rather than half of one
                if new:
                    shutil.rmtree(new[-1], ignore_errors=True)
                raise
        barrier()

    def seeds(self) -> list[int]:
        return [self.cfg.run.seed + i for i in range(self.cfg.run.seeds)]

    # -- components ----------------------------------------------------------------------------
    def build_student(self, seed: int) -> HybridModel:
        seed_everything(seed)
        frontend = self.cfg.optics.build()
        backend = self.task.build_backend(frontend.feature_shape(), self.num_outputs)
        return HybridModel(frontend, backend)

    def teacher(self) -> tuple[torch.nn.Module, dict[str, Any]]:
        if "teacher" not in self._shared:
            from onnx_run.train.teacher import check_teacher_input, get_teacher

            check_teacher_input(self.cfg, self.task, self.splits)  # one line, not a traceback in its training

            self._shared["teacher"] = get_teacher(self.cfg, self.task, self.splits, dataset=self.dataset,
                                        seed=self.cfg.run.seed, device=self.device,
                                        checkpoint=self.teacher_checkpoint, progress=self.progress)
        return self._shared["teacher"]

    def fold_counts(self) -> list[int]:
        """The numbers of fold teachers the run's losses ask for (``teacher_folds`` >= 2)."""
        return sorted({c.build().teacher_folds for choices in self.cfg.methods.values()
                       for c in choices.values()} - {0})

    def teacher_outputs(self, folds: int) -> torch.Tensor | None:
        """Out-of-fold teacher outputs on the training split for ``folds`` >= 2 (the fold teachers
        are trained once and cached beside the teacher); None for 0 (the teacher's own outputs,
        which the training loop computes)."""
        if not folds:
            return None
        key = f"out-of-fold-{folds}"
        if key not in self._shared:
            from onnx_run.train.teacher import out_of_fold_outputs

            self._shared[key] = out_of_fold_outputs(self.cfg, self.task, self.splits, dataset=self.dataset,
                                                    seed=self.cfg.run.seed, device=self.device, folds=folds,
                                                    progress=self.progress)
        return self._shared[key][0]

    def teacher_kernel(self):
        """Teacher NTK per batch, from a cache computed once for the training set."""
        if "kernel" not in self._shared:
            from onnx_run.ntk.teacher_cache import TeacherKernelCache, bounded_cache
            from onnx_run.train.checkpoint import load_checkpoint, save_checkpoint

            teacher, info = self.teacher()
            x = self.splits.train.tensors[0].to(self.device)
            path = self._teacher_kernel_file(info)
            cache = None
            if path is not None and path.exists():
                try:
                    cache = TeacherKernelCache.from_state(teacher, load_checkpoint(path, map_location=self.device),
                                                          reduce=self.task.ntk_reduce)
                except (UserError, KeyError, TypeError, ValueError):
                    cache = None  # a cut or foreign file: rebuilt and replaced below
                if cache is not None and cache.n != x.shape[0]:
                    cache = None
            if cache is None:
                cache = bounded_cache(teacher, x, reduce=self.task.ntk_reduce, progress=self.progress)
                if path is not None:
                    save_checkpoint(path, cache.state())
            self._shared["kernel"] = lambda xb, idx: cache.kernel(idx)  # idx on the CPU: checked there, no device wait
        return self._shared["kernel"]

    def _teacher_kernel_file(self, info: dict[str, Any]) -> Path | None:
        """Where the teacher's kernel over this training split is kept between runs: beside the
        cached teacher, keyed by the task settings (its NTK output reduction) and the training
        images themselves. None for a user's teacher checkpoint (nothing to key it on)."""
        import hashlib

        from onnx_run.config import unstructure
        from onnx_run.train.teacher import cache_root

        source = Path(str(info.get("source", "")))
        if not source.is_dir() or cache_root() not in source.parents:
            return None
        x = self.splits.train.tensors[0]
        digest = hashlib.sha256()
        digest.update(json.dumps({"task": self.cfg.task.name, "config": unstructure(self.cfg.task.config),
                                  "shape": list(x.shape), "version": 1}, sort_keys=True).encode())
        digest.update(x.detach().cpu().contiguous().numpy().data)  # the buffer itself, not a copy
        return source / f"ntk-{digest.hexdigest()[:16]}.pt"

    # -- stages -----------------------------------------------------------------------------
    def stage_teacher(self) -> dict[str, Any]:
        from onnx_run.train.distributed import is_main

        _, info = self.teacher()
        for k in self.fold_counts():  # fold teachers of out-of-fold targets, trained here with the teacher
            self.teacher_outputs(k)
            info = {**info, f"out_of_fold_{k}": self._shared[f"out-of-fold-{k}"][1]}
        if is_main():
            write_json(self.run_dir / "teacher.json", info)
        return info

    def student_dir(self, method: str, seed: int) -> Path:
        return self.run_dir / "students" / method / f"seed{seed}"

    def train_student(self, method: str, seed: int, run_dir: Path, *, settings=None, desc: str = "") -> dict[str, Any]:
        """Train one student (or return its finished summary); ``settings`` replaces train.*."""
        if (run_dir / "summary.json").exists():
            return json.loads((run_dir / "summary.json").read_text())
        loss_fn = self.cfg.methods["distill"][method].build()
        teacher = self.teacher()[0] if loss_fn.needs_teacher else None
        kernel = self.teacher_kernel() if loss_fn.needs_teacher_kernel else None
        model = self.build_student(seed)
        outputs = self.teacher_outputs(loss_fn.teacher_folds) if loss_fn.needs_teacher else None
        return Training(
            trainee=Trainee(model=model, loss_fn=loss_fn, teacher=teacher, teacher_kernel=kernel,
                            teacher_outputs=outputs),
            data=TrainData(task=self.task, splits=self.splits),
            recipe=Recipe(settings=settings or self.cfg.train, seed=seed, device=self.device, precision=self.precision),
            output=Output(run_dir=run_dir, desc=desc or f"student {method} seed {seed}", progress=self.progress),
        ).run()

    def stage_students(self) -> dict[str, list[dict[str, Any]]]:
        results: dict[str, list[dict[str, Any]]] = {}
        for method in self.cfg.students.methods:
            for seed in self.seeds():
                results.setdefault(method, []).append(self.train_student(method, seed, self.student_dir(method, seed)))
        return results

    def variant(self, cfg: RunConfig) -> "Pipeline":
        """This pipeline with other training, optics or loss settings, sharing the data, the
        teacher and its kernel cache (loaded once); a setting that changes the data or the
        teacher is refused: such variants are not comparable."""
        same = ("run.seed", "task.dataset", "task.data_dir", "task.val_fraction", "task.test_fraction",
                "optics.input_size_px", "optics.channels", "teacher", "teacher_train", "run.device", "run.precision")
        a, b = self.cfg.to_dict(), cfg.to_dict()
        for key in same:
            section, _, name = key.partition(".")
            va, vb = a.get(section, {}), b.get(section, {})
            if name:
                va, vb = va.get(name), vb.get(name)
            if va != vb:
                raise UserError(f"{key}: a variant of the run may not change it ({va!r} -> {vb!r}): it changes "
                                f"the data or the teacher every method is compared on")
        clone = copy.copy(self)
        clone.cfg = cfg
        clone.task = cfg.task.build()
        clone.feature_shape = cfg.optics.build().feature_shape()
        return clone  # clone._shared is self._shared: one teacher, one kernel cache

    def stage_estimate(self) -> dict[str, Any]:
        from onnx_run.estimate.ntk_estimate import estimate_design

        path = self.run_dir / "estimate.json"
        if path.exists():
            row = json.loads(path.read_text())
        else:
            row = estimate_design(self.cfg, splits=self.splits, progress=self.progress, device=self.device)
            write_json(path, row)
        if self.cfg.estimate.curve:
            self.estimate_curve(row)
        return row

    def estimate_curve(self, design: dict[str, Any]) -> list[dict[str, Any]]:
        """Estimates for 1, 2, 4, ... kernels below the design's count and the design's own
        (estimate_curve.json, saved point by point: a kill loses at most one). The design's
        estimate is reused unless the task asks for smaller sizes on the curve."""
        from onnx_run.config import resolve, set_dotted
        from onnx_run.estimate.ntk_estimate import estimate_design, estimate_sizes

        path = self.run_dir / "estimate_curve.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        done = {r["num_kernels"] for r in rows}
        same_sizes = estimate_sizes(self.cfg, self.task, curve=True) == estimate_sizes(self.cfg, self.task)
        last = design["num_kernels"]
        for count in [2 ** i for i in range(16) if 2 ** i < last] + [last]:
            if count in done:
                continue
            if count == last and same_sizes:
                rows.append(design)
            else:
                raw = self.cfg.to_dict()
                set_dotted(raw, "optics.num_kernels", count)
                rows.append(estimate_design(resolve(raw), curve=True, splits=self.splits, progress=self.progress,
                                            device=self.device))
            rows.sort(key=lambda r: r["num_kernels"])
            write_json(path, rows)
        return rows

    # -- after training: realise, fabricate, compensate ------------------------------------
    def fabricated_student(self) -> str:
        """The student method whose optics become devices (fabricate.student if trained)."""
        method = self.cfg.fabricate.student
        methods = list(self.cfg.students.methods)
        return method if method in methods else methods[-1]

    def _student_state(self, method: str, seed: int) -> dict[str, torch.Tensor]:
        from onnx_run.train.checkpoint import load_checkpoint

        path = self.student_dir(method, seed) / "best.pt"
        if not path.exists():
            raise UserError(f"{path}: missing; train the students first (onnx-run --resume {self.run_dir})")
        return load_checkpoint(path, map_location="cpu")["model"]

    def student_checkpoint_note(self, method: str, seed: int) -> str:
        """How a student checkpoint that no longer fits its model is named in the one-line error:
        the components' code changed since this run trained it (run.json names the versions)."""
        return (f"{self.student_dir(method, seed) / 'best.pt'} (trained by this run; the optics or task code changed "
                f"since: reinstall the versions in run.json, or start a new run)")

    def realised_dir(self, seed: int, method: str | None = None) -> Path:
        return self.run_dir / "realised" / f"{method or self.fabricated_student()}-seed{seed}"

    def realised_frontend(self, seed: int, method: str | None = None):
        """(trained student, its frontend realised physically); the realisation is cached."""
        from onnx_run.train.checkpoint import load_checkpoint, load_state_dict_checked, save_checkpoint

        method = method or self.fabricated_student()
        model = self.build_student(seed)
        load_state_dict_checked(model, self._student_state(method, seed), self.student_checkpoint_note(method, seed))
        out = self.realised_dir(seed, method)
        if (out / "frontend.pt").exists():
            return model, model.frontend.load_realised(load_checkpoint(out / "frontend.pt")["model"])
        realised, report = model.frontend.to(self.device).realise(progress=self.progress)  # on run.device
        out.mkdir(parents=True, exist_ok=True)
        files = realised.export(out / "export")
        write_json(out / "report.json", {**report, "files": [str(f) for f in files]})
        save_checkpoint(out / "frontend.pt", {"model": realised.state_dict()})
        return model, realised

    def stage_realise(self) -> dict[str, Any]:
        from onnx_run.train.loop import evaluate

        rows = []
        for seed in self.seeds():
            out = self.realised_dir(seed)
            if (out / "summary.json").exists():
                rows.append(json.loads((out / "summary.json").read_text()))
                continue
            model, realised = self.realised_frontend(seed)
            hybrid = HybridModel(realised, model.backend).to(self.device)
            test = evaluate(hybrid, self.task, self.splits.test, device=self.device, precision=self.precision)
            ideal = evaluate(model.to(self.device), self.task, self.splits.test, device=self.device,
                             precision=self.precision)
            summary = {"seed": seed, "student": self.fabricated_student(),
                       **{f"test_{k}": x for k, x in test.items()}, **{f"ideal_test_{k}": x for k, x in ideal.items()},
                       **json.loads((out / "report.json").read_text())}
            write_json(out / "summary.json", summary)
            rows.append(summary)
        return {"realised": rows}

    # -- devices ---------------------------------------------------------------------------
    def device_dir(self, name: str) -> Path:
        return self.run_dir / "fabricated" / name

    def config_devices(self) -> list[dict[str, Any]]:
        """The devices the config asks for: fabricate.devices per student seed."""
        student = self.fabricated_student()
        severity = self.cfg.fabricate.severity
        harsher = {} if severity == 1 else {"severity": severity}
        tag = "" if severity == 1 else f"-x{severity:g}"  # devices of several severities side by side
        return [{"name": f"{student}-seed{seed}-dev{i}{tag}", "student": student, "student_seed": seed,
                 "device_seed": self.cfg.fabricate.seed + 1000 * seed + i, "errors": self.device_errors, **harsher}
                for seed in self.seeds() for i in range(self.cfg.fabricate.devices)]

    def build_device(self, info: dict[str, Any]):
        """(trained student, fabricated frontend) rebuilt from a device description."""
        from onnx_run.fabrication.device import FabricatedFrontend, build_error_models, fabricate

        model, realised = self.realised_frontend(info["student_seed"], info["student"])
        errors = build_error_models(info.get("errors", []))
        if info.get("measured_psfs"):
            from onnx_run.fabrication.measured import measured_frontend

            frontend = measured_frontend(Path(info["measured_psfs"]), like=realised,
                                         calibration=self.splits.train.tensors[0][:256])
            return model, FabricatedFrontend(frontend.to(self.device), errors)
        return model, fabricate(realised.to(self.device), errors, int(info["device_seed"]))

    def write_device(self, info: dict[str, Any]) -> dict[str, Any]:
        """Fabricate (or import) one device and store its description and frontend state."""
        from onnx_run.train.checkpoint import save_checkpoint

        out = self.device_dir(info["name"])
        if (out / "device.json").exists():
            existing = json.loads((out / "device.json").read_text())
            if existing != json.loads(json.dumps(info)):
                raise UserError(f"device {info['name']!r} exists in {out} with other settings; give another --name")
            return existing
        _, device = self.build_device(info)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "device.pt", {"model": device.frontend.state_dict()})
        write_json(out / "device.json", info)
        return info

    def stage_fabricate(self) -> dict[str, Any]:
        return {"devices": [self.write_device(info) for info in self.config_devices()]}

    def compensate_device(self, name: str, methods: list[str] | None = None, *, fraction: float | None = None,
                          captures: Path | None = None, teacher: str | None = None) -> list[dict[str, Any]]:
        """Backend-only fine-tuning of one device's student; one summary per method. ``fraction``,
        ``captures`` and ``teacher`` (finetune.teacher) other than the config's are kept apart, in
        ``finetune-f<fraction>[-captures][-from-<teacher>]/``."""
        import attrs

        from onnx_run.fabrication.finetune import finetune_backend

        out = self.device_dir(name)
        info = self._device_info(name)
        settings = self.cfg.finetune
        if fraction is not None:
            settings = attrs.evolve(settings, fraction=fraction)
        other_teacher = teacher is not None and teacher != settings.teacher
        if teacher is not None:
            settings = attrs.evolve(settings, teacher=teacher)
        methods = list(methods or settings.methods)
        tag = "" if captures is None and fraction is None else f"-f{settings.fraction:g}" + ("-captures" if captures else "")
        tag += f"-from-{settings.teacher}" if other_teacher else ""
        base = out / f"finetune{tag}"
        todo = [m for m in methods if not (base / m / "summary.json").exists()]
        rows = []
        ctx = self.compensation_context(info, settings, captures=captures,
                                        distils=any(m in ("kd", "ntkd") for m in todo)) if todo else {}
        choices = self.compensation_losses(settings.teacher)
        for method in methods:
            path = base / method / "summary.json"
            if method in todo:
                def tune(settings: Any, run_dir: Path, method: str = method) -> dict[str, Any]:
                    return finetune_backend(task=self.task, splits=self.splits, method=method, settings=settings,
                                            run_dir=run_dir, seed=int(info["student_seed"]), device=self.device,
                                            loss_choices=choices, progress=self.progress,
                                            precision=self.precision, **ctx)

                summary = (tune(settings, base / method) if method == "none" or not settings.lr_grid
                           else self._lr_search(tune, settings, base / method))
            else:
                summary = json.loads(path.read_text())
            rows.append({"method": method, "device": name, **summary})
        return rows

    def compensation_context(self, info: dict[str, Any], settings: Any, *, captures: Path | None = None,
                             distils: bool = True) -> dict[str, Any]:
        """What every fine-tuning of one device reads, built once (``finetune_backend``'s inputs):
        the captured features (``settings.fraction`` of the training images, or the user's
        ``captures``; validation; test), the trained backend, and with ``distils`` the teacher of
        ``settings.teacher`` with its kernel cache."""
        from onnx_run.fabrication.finetune import backend_state
        from onnx_run.train.checkpoint import load_state_dict_checked

        model, device = self.build_device(info)
        seed = int(info["device_seed"])
        cap: dict[str, Any] = {}
        if captures is not None:
            from onnx_run.fabrication.measured import read_captures

            with torch.no_grad():  # the design's own features: intensities, or signed differences?
                ideal = model.frontend(self.splits.train.tensors[0][:32].to(self.device))
            cap = read_captures(captures, n_train=len(self.splits.train), feature_shape=self.feature_shape,
                                n_test=len(self.splits.test), intensities=bool((ideal >= 0).all()))
            idx, feats = cap["indices"], cap["features"]
        else:
            idx, feats = self.captured(device, "train", seed, fraction=settings.fraction)
        test_f = cap["test_features"] if "test_features" in cap else self.captured(device, "test", seed)[1]
        backend = model.backend
        load_state_dict_checked(backend, backend_state(self._student_state(info["student"], info["student_seed"])),
                                self.student_checkpoint_note(info["student"], info["student_seed"]))
        design = settings.teacher == "design"
        teacher = None if not distils else self.design_teacher(info) if design else self.teacher()[0]
        params = design_kernel_params(teacher) if design and teacher is not None else None

        @functools.cache
        def teacher_cache() -> Any:  # built once per device: every method and lr reads the same images
            from onnx_run.ntk.teacher_cache import bounded_cache

            return bounded_cache(teacher, self.splits.train.tensors[0][idx].to(self.device),
                                 reduce=self.task.ntk_reduce, params=params, progress=self.progress)

        return dict(backend=backend, train_idx=idx, train_features=feats,
                    val_features=self.captured(device, "val", seed)[1], test_features=test_f, teacher=teacher,
                    out_of_fold=None if design else self.teacher_outputs, teacher_cache=teacher_cache)

    def compensation_losses(self, teacher: str) -> dict[str, Any]:
        """The fine-tuning losses (``finetune_losses``) for ``finetune.teacher``: from the design,
        KD takes the design's own outputs (there are no fold designs)."""
        import attrs

        choices = finetune_losses(self.cfg)
        if teacher == "design" and "kd" in choices:
            choices["kd"] = attrs.evolve(choices["kd"], config=attrs.evolve(choices["kd"].config, folds=0))
        return choices

    def design_teacher(self, info: dict[str, Any]) -> HybridModel:
        """The device's student as designed (realised frontend, trained backend), frozen: the
        teacher of ``finetune.teacher = "design"``, which knows what the device should compute."""
        model, realised = self.realised_frontend(info["student_seed"], info["student"])
        design = HybridModel(realised, model.backend).to(self.device).eval()
        for p in design.parameters():
            p.requires_grad_(False)
        return design

    def captured(self, device: Any, split: str, device_seed: int, *, fraction: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, feature maps) of a split's images captured through ``device``: for
        ``train`` the seeded ``fraction`` of it; each split's noise from its own seed, so the
        simulated route and an exported measurement (``onnx-run measure``) see the same frames."""
        from onnx_run.fabrication.finetune import finetune_subset

        images = getattr(self.splits, split).tensors[0]
        offset = {"train": 1, "val": 2, "test": 3}[split]
        idx = finetune_subset(len(images), fraction, device_seed) if split == "train" else torch.arange(len(images))
        return idx, device.capture(images[idx], seed=device_seed + offset)

    def measure_device(self, name: str, out: Path, *, fraction: float | None = None) -> dict[str, Path]:
        """What a lab would hand over for the device ``name``: its PSFs measured with a point
        source (errors included, noise not) and its captures of the fine-tuning images and the
        test split, in the formats ``fabricate --measured-psfs`` and ``finetune --captures`` read."""
        from onnx_run.fabrication.measured import impulse_psfs, write_captures, write_measured_psfs

        info = self._device_info(name)
        model, device = self.build_device(info)
        seed = int(info["device_seed"])
        size = int(model.frontend.kernels().shape[-1])
        psfs = impulse_psfs(device.frontend, in_channels=self.channels, input_size=self.input_size, kernel_size=size)
        idx, feats = self.captured(device, "train", seed, fraction=self.cfg.finetune.fraction if fraction is None
                                   else fraction)
        out = Path(out)
        make_folder(out / "psfs", "--out")
        return {"psfs": write_measured_psfs(psfs, out / "psfs").parent,
                "captures": write_captures(out / "captures.npz", indices=idx, features=feats,
                                           test_features=self.captured(device, "test", seed)[1])}

    def _lr_search(self, tune: Callable[[Any, Path], dict[str, Any]], settings: Any, out: Path) -> dict[str, Any]:
        """Fine-tune at each lr of ``finetune.lr_grid`` (``out/lr<x>/``) and keep the one best on
        the captured validation images: its summary, with the grid's validation scores, becomes
        ``out/summary.json``."""
        import attrs

        metric = f"val_{self.task.primary_metric}"
        tried = [(lr, tune(attrs.evolve(settings, lr=lr), out / f"lr{lr:g}")) for lr in settings.lr_grid]
        lr, best = max(tried, key=lambda t: t[1][metric])  # the first of equals: the grid's order decides
        summary = {**best, "lr": lr, "lr_search": {f"{x:g}": s[metric] for x, s in tried}}
        write_json(out / "summary.json", summary)
        return summary

    def _device_info(self, name: str) -> dict[str, Any]:
        """device.json of a fabricated device, or one line naming the devices there are."""
        path = self.device_dir(name) / "device.json"
        if not path.exists():
            known = sorted(p.name for p in (self.run_dir / "fabricated").glob("*") if (p / "device.json").exists())
            raise UserError(f"device {name!r}: not found in {self.run_dir / 'fabricated'}; devices: "
                            f"{', '.join(known) or 'none (run onnx-run fabricate first)'}")
        return json.loads(path.read_text())

    def stage_compensate(self) -> dict[str, Any]:
        rows = []
        for info in self.config_devices():
            if not (self.device_dir(info["name"]) / "device.json").exists():
                self.write_device(info)
            rows += self.compensate_device(info["name"])
        return {"compensation": rows}

    def run(self, stages: tuple[str, ...] = STAGES, echo=print, *,
            stage_functions: Mapping[str, Callable[["Pipeline"], Any]] | None = None) -> dict[str, Any]:
        """Run the stages in order, one status line per stage (inner progress bars below it).

        ``stage_functions`` supplies stages that live above the pipeline (DESIGN's layers:
        ``report`` reads the pipeline, never the reverse): the CLI passes
        ``{"report": onnx_run.report.run_figures.write_report}``."""
        stage_functions = dict(stage_functions or {})
        missing = [s for s in stages if s not in stage_functions and not hasattr(self, f"stage_{s}")]
        if missing:
            raise UserError(f"stages: {', '.join(missing)} need(s) a stage function from the caller "
                            f"(the report stage comes from onnx_run.report.run_figures.write_report)")
        from onnx_run.train.distributed import barrier, is_main, solo, world_size

        self.check_teacher(stages)  # before anything is written
        self.prepare()
        main = is_main()
        if main:  # what was asked, so that --resume without --stages continues the same request
            write_json(self.run_dir / "stages.json", {"stages": list(stages)})
        say = echo if main else (lambda *_: None)
        out: dict[str, Any] = {}
        timings: dict[str, float] = {}
        for i, stage in enumerate(stages, 1):
            t0 = time.perf_counter()
            say(f"[{i}/{len(stages)}] {stage} ...")
            if stage in PARALLEL_STAGES or world_size() == 1:
                out[stage] = self._stage(stage, stage_functions)
            elif main:
                with solo():  # rank 0 alone: its trainings (fine-tuning) must not wait for the others
                    out[stage] = self._stage(stage, stage_functions)
            barrier()  # ranks other than 0 wait while rank 0 runs a serial stage
            timings[stage] = round(time.perf_counter() - t0, 2)
            note = _stage_note(stage, out.get(stage), self.task.primary_metric)
            say(f"[{i}/{len(stages)}] {stage} done in {timings[stage]:.1f} s{note}")
        if main:
            path = self.run_dir / "timings.json"
            previous = json.loads(path.read_text()) if path.exists() else {}
            write_json(path, {**previous, **timings})
        return out

    def _stage(self, stage: str, stage_functions: Mapping[str, Callable[["Pipeline"], Any]]) -> Any:
        if stage in stage_functions:
            return stage_functions[stage](self)
        return getattr(self, f"stage_{stage}")()


def design_kernel_params(design: HybridModel) -> list[str]:
    """The design teacher's NTK is taken w.r.t. its backend: the student's own parametrisation
    (its parameters are frozen, so ``backend_parameter_names`` would list none)."""
    return [n for n, _ in design.named_parameters() if n.startswith("backend.")]


def _stage_note(stage: str, result: Any, metric: str) -> str:
    """A short summary for the stage's status line."""
    try:
        if stage == "estimate":
            return f": {result['num_kernels']} kernels, estimate {result['estimate'] * 100:.1f} %"
        if stage == "teacher":
            return f": {result['name']} test {metric} {result['test_' + metric] * 100:.1f} %"
    except (KeyError, TypeError):
        pass
    return ""
