"""``onnx-run metasurface ...``: build a meta-atom library by RCWA, inspect one, export a design."""

from __future__ import annotations

from pathlib import Path

import click

from onnx_run.errors import UserError


def _parse_widths(text: str) -> list[float]:
    """``START:STOP:STEP`` (inclusive) or a comma-separated list, in nm."""
    try:
        if ":" in text:
            a, b, s = (float(x) for x in text.split(":"))
            if s <= 0 or b <= a:
                raise ValueError
            import numpy as np

            return [float(x) for x in np.arange(a, b + s / 2, s)]
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--widths-nm {text!r}: expected START:STOP:STEP (e.g. 60:233:1) or a list 60,80,100") from None


def _parse_floats(text: str, opt: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{opt} {text!r}: expected comma-separated numbers") from None


def _material(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


def make_group() -> click.Group:
    from onnx_run.cli import OnnxRunGroup

    @click.group("metasurface", cls=OnnxRunGroup)
    def group() -> None:
        """Metasurface optics: meta-atom libraries (RCWA) and GDSII export."""

    @group.command("build-library")
    @click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
                  help="library file to write (.npz)")
    @click.option("--widths-nm", default="60:233:1", show_default=True, help="START:STOP:STEP or a list")
    @click.option("--wavelengths-nm", default="635,532,450", show_default=True)
    @click.option("--period-nm", type=float, default=293.0, show_default=True)
    @click.option("--height-nm", type=float, default=750.0, show_default=True)
    @click.option("--pillar", default="Si3N4_luke", show_default=True,
                  help="pillar material (meent table name) or refractive index")
    @click.option("--substrate", default="SiO2_malitson", show_default=True,
                  help="substrate material (meent table name) or refractive index")
    @click.option("--material", default="Si3N4", show_default=True, help="material name recorded in the library")
    @click.option("--fourier-orders", type=click.IntRange(1, 25), default=7, show_default=True,
                  help="Fourier orders per axis (converged to ~1e-3 waves at 5-7 for the default pillars)")
    @click.option("--png/--no-png", default=True, show_default=True,
                  help="also plot phase/amplitude vs the published fits")
    def build_library(out_path, widths_nm, wavelengths_nm, period_nm, height_nm, pillar, substrate, material,
                      fourier_orders, png) -> None:
        """Compute a meta-atom library with RCWA (needs the [rcwa] extra: meent)."""
        from onnx_run_optics_metasurface.rcwa import build_library_rcwa, compare_with_fits, plot_library

        widths = _parse_widths(widths_nm)
        lams = _parse_floats(wavelengths_nm, "--wavelengths-nm")
        if not lams:
            raise UserError("--wavelengths-nm: give at least one wavelength")
        total = len(widths) * len(lams)
        click.echo(f"RCWA: {len(widths)} widths x {len(lams)} wavelengths = {total} solves, "
                   f"{fourier_orders} Fourier orders per axis")
        with click.progressbar(length=total, label="solving") as bar:
            last = [0]

            def step(done, _total):
                bar.update(done - last[0])
                last[0] = done

            lib = build_library_rcwa(widths, lams, period_nm=period_nm, height_nm=height_nm, pillar=_material(pillar),
                                     substrate=_material(substrate), fourier_orders=fourier_orders, material=material,
                                     on_step=step)
        path = lib.save(out_path)
        click.echo(f"written: {path} ({lib.summary()})")
        dev = compare_with_fits(lib)
        if dev:
            click.echo("largest phase deviation from the published fits (waves, offset removed): "
                       + ", ".join(f"{k} nm {v:.3f}" for k, v in dev.items()))
        if png:
            click.echo(f"written: {plot_library(lib, Path(out_path).with_suffix('.png'))}")

    @group.command("show-library")
    @click.argument("library", required=False)
    @click.option("--png", type=click.Path(dir_okay=False), help="plot phase/amplitude vs width to this file")
    def show_library(library, png) -> None:
        """Summarise a meta-atom library: a .npz file or a shipped one (rcwa, the default; fits)."""
        from onnx_run_optics_metasurface.library import DEFAULT_LIBRARY, load_library
        from onnx_run_optics_metasurface.rcwa import compare_with_fits, plot_library

        lib = load_library(library, key="show-library")
        click.echo(f"{library or DEFAULT_LIBRARY}: {lib.summary()}")
        dev = compare_with_fits(lib)
        if dev:
            click.echo("largest phase deviation from the published fits (waves, offset removed): "
                       + ", ".join(f"{k} nm {v:.3f}" for k, v in dev.items()))
        if png:
            click.echo(f"written: {plot_library(lib, png)}")

    @group.command("export")
    @click.argument("run_dir", type=click.Path(file_okay=False))
    @click.option("--gds", "gds_path", type=click.Path(dir_okay=False), required=True, help="GDSII file to write")
    @click.option("--layer", type=click.IntRange(0, 65535), default=1, show_default=True)
    @click.option("--datatype", type=click.IntRange(0, 65535), default=0, show_default=True)
    @click.option("--student", help="distillation method of the realised student (default: fabricate.student)")
    @click.option("--seed", type=int, help="student seed (default: run.seed)")
    def export_cmd(run_dir, gds_path, layer, datatype, student, seed) -> None:
        """Write the GDSII layout (+ PNG previews) of a run's realised metasurface."""
        from onnx_run_optics_metasurface.export import (save_psf_previews, save_width_previews, tile_names,
                                                        write_gds)

        realised = load_run_design(Path(run_dir), student=student, seed=seed)
        c = realised.config
        names = tile_names(realised.layout().num_kernels, c.signed)
        import torch

        with torch.no_grad():
            widths = realised.design_widths_nm().cpu().numpy()
            psfs = realised.psfs().cpu().numpy()
            target = realised.target_psfs.cpu().numpy()
        gds = write_gds(widths, realised.tile_centres_mm(), c.period_nm, Path(gds_path), names=names,
                        layer=layer, datatype=datatype)
        stem = gds.with_suffix("")
        w_png = save_width_previews(widths, names, stem.parent / f"{stem.name}_widths.png",
                                    lo=c.min_width_nm, hi=c.max_width_nm)
        p_png = save_psf_previews(psfs, target, names, stem.parent / f"{stem.name}_psfs.png",
                                  "realised PSFs vs target (each scaled to its maximum)")
        lay = realised.layout()
        click.echo(f"written: {gds} ({len(names)} tiles of {c.pillars} x {c.pillars} pillars, "
                   f"{lay.rows} x {lay.cols} grid, layer {layer}/{datatype}, units um)")
        click.echo(f"written: {w_png}")
        click.echo(f"written: {p_png}")

    return group


def load_run_design(run_dir: Path, *, student: str | None = None, seed: int | None = None):
    """The realised metasurface of a pipeline run directory (rebuilt from config.toml + frontend.pt)."""
    from onnx_run.config import load_toml, resolve
    from onnx_run.train.checkpoint import load_checkpoint

    cfg_path = run_dir / "config.toml"
    if not cfg_path.exists():
        raise UserError(f"run directory {run_dir}: no config.toml; is this an onnx-run run directory?")
    cfg = resolve(load_toml(cfg_path))
    if cfg.optics.name != "metasurface":
        raise UserError(f"run directory {run_dir}: optics is {cfg.optics.name!r}, not 'metasurface'")
    if student is None:
        student = cfg.fabricate.student
        if student not in cfg.students.methods:
            student = list(cfg.students.methods)[-1]
    seed = cfg.run.seed if seed is None else seed
    path = run_dir / "realised" / f"{student}-seed{seed}" / "frontend.pt"
    if not path.exists():
        have = sorted(p.name for p in (run_dir / "realised").glob("*")) if (run_dir / "realised").exists() else []
        raise UserError(f"{path}: missing; run the realise stage first"
                        + (f" (realised designs here: {', '.join(have)})" if have else ""))
    frontend = cfg.optics.build()
    return frontend.load_realised(load_checkpoint(path)["model"])
