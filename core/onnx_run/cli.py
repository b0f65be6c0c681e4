"""The ``onnx-run`` command line.

``onnx-run --optics NAME --task NAME`` runs the pipeline; subcommands do one thing each.
User mistakes print ``Error: <one line>`` and exit with code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from onnx_run import __version__
from onnx_run.errors import UserError


def _registered(kind: str) -> list[str]:
    from onnx_run.plugins import components

    try:
        return sorted(components(kind))
    except UserError:
        return []


class OnnxRunGroup(click.Group):
    """A group that turns UserError into one line + exit 2 and lists installed components in --help."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
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
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


_FLAG_NAMES = ("optics", "task", "dataset", "teacher", "distill", "seed", "seeds", "out", "device", "epochs")


def load_run_config(kwargs: dict[str, Any]):
    from onnx_run.config import load_config

    flags = {k: kwargs.get(k) for k in _FLAG_NAMES}
    return load_config(kwargs.get("config_file"), kwargs.get("sets") or (), flags)


def _print_failed() -> None:
    from onnx_run.plugins import warn_failed

    warn_failed()


@click.group(cls=OnnxRunGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@config_options
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="continue a run directory after a kill")
@click.option("--stages", help="comma-separated subset of stages to run")
@click.option("--teacher-checkpoint", type=click.Path(dir_okay=False), help="use this teacher state dict")
@click.option("--dry-run", is_flag=True, help="resolve and validate everything, print the plan, run nothing")
@click.version_option(__version__, "--version", prog_name="onnx-run")
@click.pass_context
def cli(ctx: click.Context, resume, stages, teacher_checkpoint, dry_run, **kwargs) -> None:
    """Design, train, fabricate and fine-tune hybrid optical neural networks with NTKD.

    Without a subcommand, runs the pipeline for the chosen optics and task on the embedded
    default data.
    """
    if ctx.invoked_subcommand is not None:
        return
    from onnx_run.pipeline import Pipeline, default_run_dir, parse_stages

    _print_failed()
    chosen = parse_stages(stages)
    if resume:
        if any(kwargs.get(k) for k in ("config_file", "sets", *_FLAG_NAMES)):
            raise UserError("--resume: the run directory's config.toml is used; drop the other config options")
        pipe = Pipeline.from_run_dir(Path(resume), teacher_checkpoint=teacher_checkpoint)
    else:
        cfg = load_run_config(kwargs)
        pipe = Pipeline(cfg, default_run_dir(cfg), teacher_checkpoint=teacher_checkpoint)
    cfg = pipe.cfg
    click.echo(f"onnx-run {__version__}: optics {cfg.optics.name!r}, task {cfg.task.name!r} "
               f"(dataset {pipe.dataset!r}), teacher {cfg.teacher.name!r}, "
               f"students {', '.join(cfg.methods['distill'])}, seeds {pipe.seeds()}")
    click.echo(f"run directory: {pipe.run_dir}; stages: {', '.join(chosen)}")
    if dry_run:
        click.echo(f"input {pipe.channels}x{pipe.input_size[0]}x{pipe.input_size[1]} -> optical features "
                   f"{'x'.join(map(str, pipe.feature_shape))} -> {pipe.num_outputs} outputs; "
                   f"train/val/test {len(pipe.splits.train)}/{len(pipe.splits.val)}/{len(pipe.splits.test)}")
        click.echo("dry run: nothing was trained or written")
        return
    pipe.run(chosen, echo=click.echo)
    results = pipe.run_dir / "results.md"
    if results.exists():
        click.echo("")
        click.echo(results.read_text())


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


@cli.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False))
def report_cmd(run_dir: str) -> None:
    """Rebuild results tables from a finished (or partial) run directory."""
    from onnx_run.config import load_toml, resolve
    from onnx_run.report.tables import write_results

    path = Path(run_dir)
    if not (path / "config.toml").exists():
        raise UserError(f"run directory {run_dir}: no config.toml; is this an onnx-run run directory?")
    cfg = resolve(load_toml(path / "config.toml"))
    task = cfg.task.build()
    write_results(path, primary=task.primary_metric)
    click.echo((path / "results.md").read_text())


def _add_plugin_commands() -> None:
    from onnx_run.plugins import get_plugin_manager

    try:
        get_plugin_manager().hook.register_commands(cli=cli)
    except UserError as exc:
        click.echo(f"Error: {exc}", err=True)


_add_plugin_commands()


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        cli.main(args=argv, prog_name="onnx-run")
    except UserError as exc:  # raised outside a command (e.g. while loading plugins)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


__all__ = ["cli", "main"]
