"""The ``onnx-run`` command line.

``onnx-run --optics NAME --task NAME`` runs the pipeline; subcommands do one thing each.
User mistakes print ``Error: <one line>`` and exit with code 2.
"""

from __future__ import annotations

import errno
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import click

from onnx_run import __version__
from onnx_run.errors import UserError
from onnx_run.scaffold import KINDS as SCAFFOLD_KINDS


def _registered(kind: str) -> list[str]:
    from onnx_run.plugins import components

    try:
        return sorted(components(kind))
    except UserError:
        return []


class OnnxRunGroup(click.Group):
    """A group that turns UserError into one line + exit 2 and lists installed components in --help.

    Plugins' commands join the top group when a command is looked up or listed, not when the
    module is imported: ``--version`` loads no plugin (nor torch)."""

    _plugin_commands_added = False

    def _with_plugin_commands(self) -> None:
        if self is cli and not OnnxRunGroup._plugin_commands_added:
            OnnxRunGroup._plugin_commands_added = True
            _add_plugin_commands()

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._with_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._with_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:
            if exc.errno not in _FILE_SYSTEM_ERRNOS:
                raise
            click.echo(f"Error: {_file_system_error(exc)}", err=True)
            ctx.exit(2)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self is not cli:
            return super().format_epilog(ctx, formatter)
        with formatter.section("Installed components"):
            formatter.write_dl([
                ("optics", ", ".join(_registered("optics")) or "none"),
                ("tasks", ", ".join(_registered("tasks")) or "none"),
                ("teachers", ", ".join(_registered("teachers")) or "none"),
                ("distillation", ", ".join(_registered("distillation_losses")) or "none"),
                ("error models", ", ".join(_registered("error_models")) or "none"),
            ])
        formatter.write_paragraph()
        formatter.write_text("Example: onnx-run --optics 4f --task classification")


#: faults of the file system a person can fix: a full disk or quota, no permission, read-only
_FILE_SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _file_system_error(exc: OSError, run_dir: Path | None = None) -> str:
    """One line for a write the file system refused. Every file onnx-run writes is written
    whole or not at all (onnx_run.files), so what exists is intact and the command can run again;
    a run that got a ``run_dir`` continues from it (none left: nothing was written)."""
    where = exc.filename or "a file"
    fix = ("free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else "allowed: a folder you can write to")
    if run_dir is not None and not run_dir.exists():
        return f"{where}: {exc.strerror or exc}; nothing was written: {fix}"
    then = f"onnx-run --resume {run_dir}" if run_dir is not None else "the same command again (a run: --resume RUN_DIR)"
    return f"{where}: {exc.strerror or exc}; nothing was half-written: {fix}, then {then}"


def config_options(fn: Callable) -> Callable:
    """The options that build a run config, shared by the pipeline and subcommands."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="run config TOML file"),
        click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="override one setting (repeatable), e.g. --set train.epochs=5"),
        click.option("--optics", help="optics plugin (see the list below)"),
        click.option("--task", help="task plugin"),
        click.option("--dataset", help="dataset of the task (task.dataset)"),
        click.option("--teacher", help="teacher network (default: the task's)"),
        click.option("--distill", help="distillation loss(es), comma-separated: none,kd,ntkd"),
        click.option("--seed", type=int, help="first seed (run.seed)"),
        click.option("--seeds", type=int, help="number of seeds; results are mean ± std"),
        click.option("--out", help="folder for run directories (run.out)"),
        click.option("--device", help="cpu, cuda or auto (run.device)"),
        click.option("--epochs", type=int, help="student training epochs (train.epochs)"),
        click.option("--preset", metavar="NAME",
                     help="named settings under your own (run.preset), e.g. paper: the paper's sizes, for a GPU"),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


_FLAG_NAMES = ("optics", "task", "dataset", "teacher", "distill", "seed", "seeds", "out", "device", "epochs",
               "preset")


def _print_notes(cfg) -> None:
    for note in cfg.notes:
        click.echo(f"Note: {note}", err=True)


def load_run_config(kwargs: dict[str, Any]):
    from onnx_run.config import load_config

    flags = {k: kwargs.get(k) for k in _FLAG_NAMES}
    cfg = load_config(kwargs.get("config_file"), kwargs.get("sets") or (), flags)
    _print_notes(cfg)
    return cfg


def _print_failed() -> None:
    from onnx_run.plugins import warn_failed

    warn_failed()


@click.group(cls=OnnxRunGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@config_options
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="continue a run directory after a kill")
@click.option("--stages", help="comma-separated subset of stages to run")
@click.option("--teacher-checkpoint", type=click.Path(dir_okay=False), help="use this teacher state dict")
@click.option("--dry-run", is_flag=True,
              help="check the settings, plugins and run directory, print the plan, run nothing (no torch: instant)")
@click.option("--check", "deep_check", is_flag=True,
              help="as --dry-run, and read the data and build the optics and models as a run does before it writes")
@click.option("-q", "--quiet", is_flag=True, help="no progress and no warnings: the stage lines, results and errors")
@click.option("-v", "--verbose", is_flag=True, help="warnings in Python's full form, with where they were raised")
@click.version_option(__version__, "--version", prog_name="onnx-run")
@click.pass_context
def cli(ctx: click.Context, resume, stages, teacher_checkpoint, dry_run, deep_check, quiet, verbose,
        **kwargs) -> None:
    """Design, train, fabricate and fine-tune hybrid optical neural networks with NTKD.

    Without a subcommand, runs the pipeline for the chosen optics and task on the embedded
    default data.
    """
    if quiet and verbose:
        raise UserError("-q/--quiet and -v/--verbose: choose one")
    if quiet:
        warnings.simplefilter("ignore")
    elif verbose:
        warnings.showwarning = _PYTHON_SHOWWARNING
    if ctx.invoked_subcommand is not None:
        return
    _print_failed()
    cfg, run_dir, chosen = _named_run(resume, stages, kwargs)
    if dry_run and not deep_check:
        _dry_run(cfg, run_dir, chosen, teacher_checkpoint)
        return
    from onnx_run.pipeline import Pipeline

    pipe = Pipeline(cfg, run_dir, teacher_checkpoint=teacher_checkpoint)
    from onnx_run.train.distributed import is_main, shutdown

    pipe.check()  # a run directory it cannot use: one line before anything is said or written
    pipe.check_teacher(chosen)  # and a teacher that cannot take the images, where the stages use it
    if quiet:  # this invocation only: the run's config (run.progress) is left as it is
        pipe.progress = False
    cfg = pipe.cfg
    main = is_main()
    say = click.echo if main else (lambda *a, **k: None)  # under torchrun rank 0 speaks for all
    for line in _header(cfg, pipe.dataset, pipe.seeds(), pipe.run_dir, chosen):
        say(line)
    if deep_check:
        say(f"input {pipe.channels}x{pipe.input_size[0]}x{pipe.input_size[1]} -> optical features "
                   f"{'x'.join(map(str, pipe.feature_shape))} -> {pipe.num_outputs} outputs; "
                   f"train/val/test {len(pipe.splits.train)}/{len(pipe.splits.val)}/{len(pipe.splits.test)}")
        for k in pipe.fold_counts():
            say(f"teacher: also {k} fold teachers, each trained without the training images it gives KD "
                f"targets for (out-of-fold; trained once, cached)")
        say("checked: settings, plugins, run directory, data, optics and models; nothing was trained or written")
        return
    try:
        from onnx_run.report.run_figures import write_report

        pipe.run(chosen, echo=click.echo, stage_functions={"report": write_report})
    except OSError as exc:
        if exc.errno not in _FILE_SYSTEM_ERRNOS:
            raise
        raise UserError(_file_system_error(exc, pipe.run_dir)) from None
    finally:
        shutdown()
    results = pipe.run_dir / "results.md"
    if results.exists() and main:
        say("")
        say(results.read_text())


def _header(cfg, dataset: str, seeds: list[int], run_dir: Path, chosen: tuple[str, ...]) -> list[str]:
    """The two lines every run starts with: what runs, and where."""
    return [f"onnx-run {__version__}: optics {cfg.optics.name!r}, task {cfg.task.name!r} (dataset {dataset!r}), "
            f"teacher {cfg.teacher.name!r}, students {', '.join(cfg.students.methods)}, seeds {seeds}",
            f"run directory: {run_dir}; stages: {', '.join(chosen)}"]


def _named_run(resume: str | None, stages: str | None, kwargs: dict[str, Any]):
    """The run a command names, without torch: (config, run directory, stages). ``--resume`` reads
    the directory's config.toml and, without ``--stages``, continues what was asked (a
    teacher,students run stays one)."""
    from onnx_run.rundir import default_run_dir, parse_stages, recorded_stages, run_dir_config

    chosen = parse_stages(stages)
    if not resume:
        cfg = load_run_config(kwargs)
        return cfg, default_run_dir(cfg), chosen
    if any(kwargs.get(k) for k in ("config_file", "sets", *_FLAG_NAMES)):
        raise UserError("--resume: the run directory's config.toml is used; drop the other config options")
    run_dir = Path(resume)
    cfg = run_dir_config(run_dir)
    return cfg, run_dir, (chosen if stages else recorded_stages(run_dir) or chosen)


def _dry_run(cfg, run_dir: Path, chosen: tuple[str, ...], teacher_checkpoint: str | None) -> None:
    """``--dry-run``: the settings, the plugins and the run directory, checked without torch or
    any model (a fraction of a second); ``--check`` also reads the data and builds the models."""
    from onnx_run.rundir import check_data_dir, check_run_dir, check_teacher_checkpoint_file, distributions

    check_run_dir(cfg, run_dir, {"config": cfg.to_dict(), "distributions": distributions(cfg)})
    check_teacher_checkpoint_file(teacher_checkpoint)
    dataset = getattr(cfg.task.config, "dataset", cfg.task.name)
    if getattr(cfg.task.config, "data_dir", ""):
        check_data_dir(dataset, cfg.task.config.data_dir)
    for line in _header(cfg, dataset, [cfg.run.seed + i for i in range(cfg.run.seeds)], run_dir, chosen):
        click.echo(line)
    click.echo("dry run: settings, plugins and the run directory checked; the data, the optics and the models are "
               "checked when the run starts, before it writes anything (--check: now); nothing was trained or "
               "written")


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
@click.option("--all", "include_all", is_flag=True, help="include the built-in plugins")
def plugins_cmd(as_json: bool, include_all: bool) -> None:
    """List installed plugins: distribution, version, hooks and components."""
    from onnx_run.plugins import plugin_listing

    rows = plugin_listing(include_builtins=include_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("No plugins installed (use --all to see the built-ins).")
        return
    table = [("plugin", "distribution", "version", "hooks", "components")]
    for r in rows:
        comps = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["components"].items())
        if "error" in r:
            comps = f"FAILED: {r['error']}"
        table.append((r["name"], r["distribution"], r["version"], ", ".join(r["hooks"]), comps))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for i, row in enumerate(table):
        click.echo("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:4])) + "  " + row[4])
        if i == 0:
            click.echo("  ".join("-" * w for w in widths) + "  " + "-" * 10)


@cli.group("config", cls=OnnxRunGroup)
def config_group() -> None:
    """Inspect run configurations."""


@config_group.command("show")
@config_options
def config_show(**kwargs) -> None:
    """Print the fully resolved config as TOML (a starting point for --config)."""
    cfg = load_run_config(kwargs)
    click.echo(cfg.to_toml(), nl=False)


@cli.group("teacher", cls=OnnxRunGroup)
def teacher_group() -> None:
    """Electronic teachers."""


@teacher_group.command("train")
@config_options
@click.option("--teacher-checkpoint", type=click.Path(dir_okay=False), help="evaluate this state dict instead")
def teacher_train(teacher_checkpoint, **kwargs) -> None:
    """Train (or reuse from the cache) the teacher for the task's dataset and print its accuracy."""
    from onnx_run.pipeline import Pipeline, default_run_dir

    cfg = load_run_config(kwargs)
    pipe = Pipeline(cfg, default_run_dir(cfg), teacher_checkpoint=teacher_checkpoint)
    _, info = pipe.teacher()
    primary = pipe.task.primary_metric
    click.echo(f"teacher {cfg.teacher.name!r} on {pipe.dataset!r}: test {primary} "
               f"{info[f'test_{primary}'] * 100:.2f} % ({info['parameters']} parameters); {info['source']}")


@cli.command("compare")
@config_options
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="continue a compare directory after a kill")
@click.option("--search-only", is_flag=True, help="run the search and write search.md; train no final seeds")
def compare_cmd(resume, search_only, **kwargs) -> None:
    """Compare distillation methods under one protocol: each method's settings tuned on the
    validation split with the same grid budget, then the final seeds, paired differences."""
    from onnx_run.compare import Comparison

    _print_failed()
    if resume:
        if any(kwargs.get(k) for k in ("config_file", "sets", *_FLAG_NAMES)):
            raise UserError("--resume: the directory's config.toml is used; drop the other config options")
        comp = Comparison.from_run_dir(Path(resume), echo=click.echo)
    else:
        comp = Comparison(load_run_config(kwargs), echo=click.echo)
    click.echo(f"compare directory: {comp.run_dir}")
    comp.run(search_only=search_only)
    click.echo("")
    click.echo((comp.run_dir / ("search.md" if search_only else "compare.md")).read_text())


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
def report_cmd(run_dir: str) -> None:
    """Rebuild results tables and figures from a finished (or partial) run directory."""
    from onnx_run.report.run_figures import write_report

    pipe = _open_run(run_dir)
    write_report(pipe)
    click.echo((pipe.run_dir / "results.md").read_text())


def estimate_options(fn):
    """The estimate's size options, shared by ``estimate`` and ``design``."""
    for option in reversed([
        click.option("--inits", type=click.IntRange(1, 64), default=None,
                     help="students (seeds) whose kernel regressions are averaged [default: 2]"),
        click.option("--width-multiplier", type=click.IntRange(1, 64), default=None,
                     help="backend hidden widths x this [default: 1, the widths the run trains]"),
        click.option("--max-train", type=click.IntRange(10, 1_000_000), default=None,
                     help="training images in the kernel regression [default: all]"),
        click.option("--warmup-steps", type=click.IntRange(0, 100_000), default=None,
                     help="task-loss steps before the kernel is taken; 0: random optics "
                          "[default: 5 % of the run's training steps (segmentation 50 %), at most 500]"),
    ]):
        fn = option(fn)
    return fn


@cli.command("estimate")
@config_options
@click.option("--sweep", metavar="KEY=V1,V2,...",
              help="vary one setting, e.g. optics.num_kernels=1,2,4,8 or optics.aperture_mm=0.5,1,2")
@estimate_options
def estimate_cmd(sweep, inits, width_multiplier, max_train, warmup_steps, **kwargs) -> None:
    """How many kernels fit, and what accuracy can the design reach? (NTK kernel regression)"""
    from onnx_run.estimate.report import write_estimate

    key, values, configs = _sweep_configs(kwargs, sweep, "--sweep")
    rows = _estimate_points(configs, key, values, inits=inits, width_multiplier=width_multiplier,
                            max_train=max_train, warmup_steps=warmup_steps)
    out_dir = write_estimate(configs[0], rows)
    click.echo(f"written: {out_dir}/estimate.md, estimate.json" + (", estimate.png" if len(rows) > 1 else ""))


def _sweep_configs(kwargs: dict, sweep: str | None, option: str) -> tuple[str | None, list, list]:
    """(key, values, resolved configs) of a KEY=V1,V2,... option; every point is resolved
    before any work, so a bad value fails first."""
    from onnx_run.config import build_raw, parse_value, resolve, set_dotted

    raw = build_raw(kwargs.get("config_file"), kwargs.get("sets") or (), {k: kwargs.get(k) for k in _FLAG_NAMES})
    values: list = [None]
    key = None
    if sweep:
        key, sep, text = sweep.partition("=")
        key = key.strip()
        if not sep or "." not in key or not text.strip():
            raise UserError(f"{option} {sweep!r}: expected SECTION.KEY=V1,V2,..., e.g. optics.num_kernels=1,2,4,8")
        values = [parse_value(t.strip()) for t in text.split(",") if t.strip()]
    configs = []
    for value in values:
        point = json.loads(json.dumps(raw))
        if key is not None:
            set_dotted(point, key, value)
        configs.append(resolve(point))
    _print_notes(configs[0])
    return key, values, configs


def _estimate_points(configs: list, key: str | None, values: list, **sizes) -> list[dict]:
    """The estimate of each design point, one line of progress each."""
    from onnx_run.estimate.ntk_estimate import estimate_design
    from onnx_run.train.loop import apply_threads, resolve_device

    device = resolve_device(configs[0].run.device)  # 'cuda' without CUDA: one line, before any work
    apply_threads(configs[0].run.threads)
    rows = []
    for value, cfg in zip(values, configs):
        row = estimate_design(cfg, progress=cfg.run.progress, device=device, **sizes)
        if key is not None:
            row["sweep_key"], row["sweep_value"] = key, value
        rows.append(row)
        click.echo(f"{key + '=' + str(value) + ': ' if key else ''}{row['num_kernels']} kernel"
                   f"{'s' * (row['num_kernels'] != 1)} "
                   f"({row['layout'].get('grid', str(row['layout']['rows']) + ' x ' + str(row['layout']['cols']))}), "
                   f"estimated test {row['metric']} {row['estimate'] * 100:.2f} ± {row['estimate_band'] * 100:.2f} % "
                   f"(ridge {row['ridge']:g}, {row['n_train']} train images, {row['seconds']:.1f} s)")
    return rows


@cli.command("design")
@config_options
@click.option("--sizes", "sizes_option", metavar="KEY=V1,V2,...", default="optics.num_kernels=1,2,4,8",
              show_default=True,
              help="the candidate designs, smallest first: one setting's values, e.g. optics.height_mm=0.2,0.4,0.8")
@click.option("--target", type=click.FloatRange(0, 100, min_open=True), required=True,
              help="the accuracy (or mIoU) wanted, in %")
@estimate_options
def design_cmd(sizes_option, target, inits, width_multiplier, max_train, warmup_steps, **kwargs) -> None:
    """Which design to build: the estimate of each candidate, and the smallest that meets --target."""
    from onnx_run.estimate.report import choose_design, write_design

    key, values, configs = _sweep_configs(kwargs, sizes_option, "--sizes")
    rows = _estimate_points(configs, key, values, inits=inits, width_multiplier=width_multiplier,
                            max_train=max_train, warmup_steps=warmup_steps)
    choice = choose_design(rows, target / 100)
    out_dir = write_design(configs[0], rows, target / 100, choice)
    click.echo(choice["sentence"])
    click.echo(f"written: {out_dir}/design.md, design.json, design.png")


def _open_run(run_dir: str):
    from onnx_run.pipeline import Pipeline

    return Pipeline.from_run_dir(Path(run_dir))


@cli.command("realise")
@click.argument("run_dir", type=click.Path(file_okay=False))
def realise_cmd(run_dir: str) -> None:
    """Realise the trained optics of a run as a physical design (and export it)."""
    pipe = _open_run(run_dir)
    for row in pipe.stage_realise()["realised"]:
        primary = pipe.task.primary_metric
        click.echo(f"seed {row['seed']}: test {primary} ideal {row[f'ideal_test_{primary}'] * 100:.2f} %, "
                   f"realised {row[f'test_{primary}'] * 100:.2f} %; {pipe.realised_dir(row['seed'])}")


@cli.command("fabricate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--error-model", "error_models", multiple=True, metavar="NAME[:KEY=VALUE,...]",
              help="error model and its settings, repeatable, applied in order "
                   "(default: the run config's fabricate.errors)")
@click.option("--seed", type=int, default=None, help="device seed: the same seed gives the same device")
@click.option("--student", help="which trained student to fabricate (default: fabricate.student)")
@click.option("--student-seed", type=int, default=None, help="which seed of that student (default: run.seed)")
@click.option("--measured-psfs", type=click.Path(file_okay=False), help="build the device from measured PSFs")
@click.option("--name", help="device name (a folder under RUN_DIR/fabricated)")
@click.option("--severity", type=float, default=None,
              help="every error's magnitude times this (default: fabricate.severity); 2 = twice as bad")
def fabricate_cmd(run_dir, error_models, seed, student, student_seed, measured_psfs, name, severity) -> None:
    """Make a fabricated device from a trained run (sampled errors, or measured PSFs)."""
    import math

    from onnx_run.fabrication.device import check_capabilities, parse_error_spec, scale_error_specs

    pipe = _open_run(run_dir)
    errors = [parse_error_spec(e) for e in error_models] if error_models else list(pipe.cfg.fabricate.errors)
    if measured_psfs and not error_models:
        errors = [e for e in errors if e.get("name") == "sensor-noise"]
    key = "--error-model" if error_models else "fabricate.errors"
    severity = pipe.cfg.fabricate.severity if severity is None else severity
    if not (math.isfinite(severity) and 0 < severity <= 100):
        raise UserError(f"--severity: expected a number in (0, 100], got {severity:g}")
    errors = scale_error_specs(errors, severity, key=key)  # every table checked before any work
    check_capabilities(errors, pipe.optics_capabilities, pipe.cfg.optics.name, key=key)
    student = student or pipe.fabricated_student()
    if student not in pipe.cfg.students.methods:
        raise UserError(f"--student {student!r}: this run trained {', '.join(pipe.cfg.students.methods)}")
    student_seed = pipe.cfg.run.seed if student_seed is None else student_seed
    seed = pipe.cfg.fabricate.seed if seed is None else seed
    info: dict[str, Any] = {"student": student, "student_seed": student_seed, "device_seed": seed, "errors": errors}
    if severity != 1:
        info["severity"] = severity
    if measured_psfs:
        info["measured_psfs"] = str(Path(measured_psfs).resolve())
    info["name"] = name or (f"{student}-seed{student_seed}-" + ("measured" if measured_psfs else f"s{seed}")
                            + ("" if severity == 1 else f"-x{severity:g}"))
    pipe.write_device(info)
    click.echo(f"device {info['name']!r}: {pipe.device_dir(info['name'])}")


@cli.command("measure")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--device", "device_name", required=True, help="device name under RUN_DIR/fabricated")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for psfs/ (manifest.json + NPY) and captures.npz")
@click.option("--fraction", type=float, default=None, help="fraction of the training set captured (finetune.fraction)")
def measure_cmd(run_dir, device_name, out_dir, fraction) -> None:
    """Measure a simulated device as a lab would: point-source PSFs and captured images, in the
    formats that fabricate --measured-psfs and finetune --captures read."""
    if fraction is not None and not (0 < fraction <= 1):
        raise UserError(f"--fraction: expected a number in (0, 1], got {fraction:g}")
    pipe = _open_run(run_dir)
    files = pipe.measure_device(device_name, Path(out_dir), fraction=fraction)
    click.echo(f"device {device_name!r} measured: PSFs in {files['psfs']}, captures in {files['captures']}")
    click.echo(f"use them: onnx-run fabricate {run_dir} --measured-psfs {files['psfs']} --name NAME; "
               f"onnx-run finetune {run_dir} --device {device_name} --captures {files['captures']}")


@cli.command("finetune")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--device", "device_name", help="device name under RUN_DIR/fabricated (default: every device)")
@click.option("--method", "methods", default=None,
              help="comma-separated: none (no compensation), e2e (task loss), kd, ntkd "
                   "[default: the run's finetune.methods]")
@click.option("--fraction", type=float, default=None, help="fraction of the training set captured (finetune.fraction)")
@click.option("--captures", type=click.Path(dir_okay=False), help=".npz of captured feature maps from a real device")
@click.option("--teacher", default=None, metavar="teacher|design",
              help="whom kd and ntkd distil: the run's teacher, or the student as designed (finetune.teacher)")
def finetune_cmd(run_dir, device_name, methods, fraction, captures, teacher) -> None:
    """Backend-only fine-tuning of fabricated devices; prints the compensation table."""
    from onnx_run.fabrication.finetune import FINETUNE_METHODS
    from onnx_run.report.tables import fmt, mean_std

    pipe = _open_run(run_dir)
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else list(pipe.cfg.finetune.methods)
    for m in chosen:
        if m not in FINETUNE_METHODS:
            raise UserError(f"--method: unknown method {m!r}; allowed: {', '.join(FINETUNE_METHODS)}")
        if m in ("kd", "ntkd") and m not in pipe.cfg.methods["distill"]:
            raise UserError(f"--method {m}: the run config has no [distill.{m}] settings")
    if fraction is not None and not 0 < fraction <= 1:
        raise UserError(f"--fraction: must be in (0, 1], got {fraction}")
    if teacher not in (None, "teacher", "design"):
        raise UserError(f"--teacher: unknown teacher {teacher!r}; allowed: teacher (the run's), design (the student "
                        f"as designed)")
    base = pipe.run_dir / "fabricated"
    names = [device_name] if device_name else sorted(p.name for p in base.glob("*") if (p / "device.json").exists())
    if not names:
        raise UserError(f"{base}: no fabricated devices; run onnx-run fabricate {run_dir} first")
    rows = []
    for name in names:
        rows += pipe.compensate_device(name, chosen, fraction=fraction, captures=Path(captures) if captures else None,
                                       teacher=teacher)
    primary = pipe.task.primary_metric
    click.echo(f"| compensation | test {primary} (%) | devices |")
    click.echo("|---|---|---|")
    for m in chosen:
        vals = [r[f"test_{primary}"] for r in rows if r["method"] == m]
        mean, std = mean_std(vals)
        click.echo(f"| {m} | {fmt(mean, std, len(vals))} | {len(vals)} |")


@cli.command("robustness")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--error-model", "error_spec", default="kernel-error", show_default=True,
              metavar="NAME[:KEY=VALUE,...]", help="the error model whose magnitude is varied")
@click.option("--key", default="sigma", show_default=True, help="the setting varied")
@click.option("--values", default="0,0.1,0.2,0.3", show_default=True, help="comma-separated magnitudes")
@click.option("--method", "methods", default="none,e2e,ntkd", show_default=True, help="compensation methods")
def robustness_cmd(run_dir, error_spec, key, values, methods) -> None:
    """Accuracy vs error magnitude, with and without compensation (table + robustness.png)."""
    import math

    from onnx_run.config import parse_value
    from onnx_run.fabrication.device import check_capabilities, parse_error_spec
    from onnx_run.report.figures import robustness_figure
    from onnx_run.report.tables import fmt, mean_std
    from onnx_run.files import write_json

    pipe = _open_run(run_dir)
    base = parse_error_spec(error_spec)
    mags = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
    bad = [m for m in mags if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m)]
    if bad or not mags:
        raise UserError(f"--values {values!r}: expected comma-separated finite numbers, e.g. 0,0.1,0.2")
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    specs = [{**base, key: mag} for mag in mags]
    for spec in specs:  # every point's table and what it needs of the optics, before any work
        check_capabilities([spec], pipe.optics_capabilities, pipe.cfg.optics.name, key="--error-model")
    points = []
    primary = pipe.task.primary_metric
    for mag, spec in zip(mags, specs):
        for info in pipe.config_devices():
            dev = {**{k: v for k, v in info.items() if k != "severity"},  # the swept model alone, as given
                   "name": f"robust-{base['name']}-{key}{mag}-{info['name']}", "errors": [spec]}
            pipe.write_device(dev)
            for row in pipe.compensate_device(dev["name"], chosen):
                points.append({"magnitude": mag, "method": row["method"], primary: row[f"test_{primary}"]})
    out = pipe.run_dir / "figures"
    out.mkdir(exist_ok=True)
    robustness_figure(points, out / "robustness.png", primary, f"{base['name']} {key}")
    write_json(pipe.run_dir / "robustness.json", points)
    click.echo(f"| {base['name']} {key} | " + " | ".join(chosen) + " |")
    click.echo("|---|" + "---|" * len(chosen))
    for mag in mags:
        cells = []
        for m in chosen:
            vals = [p[primary] for p in points if p["magnitude"] == mag and p["method"] == m]
            cells.append(fmt(*mean_std(vals), len(vals)))
        click.echo(f"| {mag} | " + " | ".join(cells) + " |")
    click.echo(f"written: {out / 'robustness.png'}, {pipe.run_dir / 'robustness.json'}")


@cli.group("plugin", cls=OnnxRunGroup)
def plugin_group() -> None:
    """Write your own plugins."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(list(SCAFFOLD_KINDS)), help="what the plugin registers")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="folder the package folder onnx-run-NAME/ is written under")
def plugin_new(name: str, kind: str, out_dir: str) -> None:
    """A working plugin package to start from: pyproject.toml with the entry point, a torch-free
    config, the component, and tests that check the onnx-run contract and run every stage."""
    from onnx_run.scaffold import new_plugin

    target = new_plugin(name, kind, Path(out_dir))
    click.echo(f"written: {target}, a plugin package registering the {kind.replace('-', ' ')} {name!r}")
    click.echo(f"next: pip install -e {target} && onnx-run plugins && python -m pytest {target / 'tests'}")


def _add_plugin_commands() -> None:
    from onnx_run.plugins import get_plugin_manager

    try:
        get_plugin_manager().hook.register_commands(cli=cli)
    except UserError as exc:
        click.echo(f"Error: {exc}", err=True)



_SHOWN: set[str] = set()
_PYTHON_SHOWWARNING = warnings.showwarning  # what -v/--verbose brings back


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as a person reads them: one line, ``Warning: <what>``, no source path or code
    line (Python's default prints both, on two lines), and each text once per command."""
    text = " ".join(str(message).split())
    if text not in _SHOWN:
        _SHOWN.add(text)
        click.echo(f"Warning: {text}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="onnx-run")
    except UserError as exc:  # raised outside a command (e.g. while loading plugins)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


__all__ = ["cli", "main"]
