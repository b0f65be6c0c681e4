"""Export of a metasurface design: GDSII layout (gdstk), width maps (.npy) and PNG previews.

GDSII conventions: user unit 1 um, database unit 0.5 nm (pillar centres on a 293 nm lattice
fall on half nanometres; with a 0.5 nm grid integer-nm widths stay exact); one cell per PSF tile (``K03_POS``,
``K03_NEG``; ``K03`` when unsigned) holding one square polygon per pillar, centred on the
tile; a top cell ``METASURFACE`` places the tiles as in the layout (metasurface centre at the
origin, +y up). Array row 0 of a width map is the tile's top row (+y), as in the previews.
Widths are rounded to whole nanometres.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from onnx_run.errors import UserError
from onnx_run.files import atomic_path, save_array, save_figure
from onnx_run.plotstyle import styled

if TYPE_CHECKING:
    from onnx_run_optics_metasurface.frontend import MetasurfaceFrontend

TOP_CELL = "METASURFACE"


def tile_names(num_kernels: int, signed: bool) -> list[str]:
    if not signed:
        return [f"K{k:02d}" for k in range(num_kernels)]
    return [f"K{k:02d}_POS" for k in range(num_kernels)] + [f"K{k:02d}_NEG" for k in range(num_kernels)]


def pillar_centres_um(pillars: int, period_nm: float) -> np.ndarray:
    """Centre offsets (um) of the pillars of one axis, relative to the tile centre."""
    return (np.arange(pillars) - (pillars - 1) / 2) * period_nm / 1000.0


def write_gds(widths_nm: np.ndarray, centres_mm: np.ndarray, period_nm: float, path: Path, *,
              names: list[str], layer: int = 1, datatype: int = 0) -> Path:
    """Write pillars of ``widths_nm`` (tiles, N, N) as square polygons, one cell per tile."""
    import gdstk

    if not (0 <= layer <= 65535 and 0 <= datatype <= 65535):
        raise UserError(f"--layer/--datatype must be 0-65535, got {layer}/{datatype}")
    lib = gdstk.Library(name="ONNX_RUN_METASURFACE", unit=1e-6, precision=5e-10)
    top = lib.new_cell(TOP_CELL)
    n = widths_nm.shape[-1]
    c = pillar_centres_um(n, period_nm)
    xs, ys = np.meshgrid(c, c[::-1])  # row 0 at the top (+y)
    # whole-nm widths, half widths in um
    half = np.round(np.asarray(widths_nm, dtype=np.float64)) / 2000.0
    for t, name in enumerate(names):
        cell = lib.new_cell(name)
        h = half[t]
        x0, x1 = (xs - h).ravel(), (xs + h).ravel()
        y0, y1 = (ys - h).ravel(), (ys + h).ravel()
        cell.add(*[gdstk.rectangle((a, b), (cc, d), layer=layer, datatype=datatype)
                   for a, b, cc, d in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist())])
        top.add(gdstk.Reference(cell, (float(centres_mm[t, 1] * 1000.0), float(centres_mm[t, 0] * 1000.0))))
    path = Path(path)
    with atomic_path(path) as tmp:
        lib.write_gds(str(tmp))
    return path


def read_gds_pillars(path: Path, *, layer: int | None = None, datatype: int | None = None) -> dict[str, np.ndarray]:
    """Read back a layout: per tile cell, an array (pillars, 3) of (x_um, y_um, width_nm) in the
    top cell's frame (tile reference offsets applied). For checks and round-trip tests."""
    import gdstk

    lib = gdstk.read_gds(str(path))
    cells = {c.name: c for c in lib.cells}
    if TOP_CELL not in cells:
        raise UserError(f"{path}: no {TOP_CELL} cell; not an onnx-run metasurface layout")
    out = {}
    for ref in cells[TOP_CELL].references:
        cell = ref.cell
        ox, oy = ref.origin
        rows = []
        for poly in cell.polygons:
            if (layer is not None and poly.layer != layer) or (datatype is not None and poly.datatype != datatype):
                continue
            pts = poly.points
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            rows.append(((x0 + x1) / 2 + ox, (y0 + y1) / 2 + oy, (x1 - x0) * 1000.0))
        out[cell.name] = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return out


def _grid_shape(n: int) -> tuple[int, int]:
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


@styled
def save_width_previews(widths_nm: np.ndarray, names: list[str], path: Path, *, lo: float, hi: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = _grid_shape(len(names))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows + 0.4), squeeze=False)
    im = None
    for ax in axes.ravel():
        ax.axis("off")
    for t, name in enumerate(names):
        ax = axes.ravel()[t]
        im = ax.imshow(widths_nm[t], cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name, fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="pillar width (nm)")
    fig.suptitle("metasurface width maps (one per PSF tile)", fontsize=10)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


@styled
def save_psf_previews(realised: np.ndarray, target: np.ndarray | None, names: list[str], path: Path,
                      title: str) -> Path:
    """Realised PSFs next to their targets, each normalised to its own maximum (channels summed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have_target = target is not None and float(np.abs(target).sum()) > 0
    n = len(names)
    cols = min(n, 8)
    blocks = int(np.ceil(n / cols))
    rows = blocks * (2 if have_target else 1)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for t, name in enumerate(names):
        b, j = divmod(t, cols)
        r = b * (2 if have_target else 1)
        img = realised[t].sum(0)
        axes[r, j].imshow(img / max(float(img.max()), 1e-30), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        axes[r, j].set_title(f"{name}\nrealised", fontsize=6)
        if have_target:
            tg = target[t].sum(0)
            axes[r + 1, j].imshow(tg / max(float(tg.max()), 1e-30), cmap="magma", vmin=0, vmax=1,
                                  interpolation="nearest")
            axes[r + 1, j].set_title("target", fontsize=6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def export_frontend(frontend: "MetasurfaceFrontend", out_dir: Path, *, gds_name: str = "layout.gds",
                    layer: int = 1, datatype: int = 0) -> list[Path]:
    """Everything a fabrication needs from a frontend: arrays, previews, and (physical) the GDS."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    c = frontend.config
    names = tile_names(frontend.layout().num_kernels, c.signed)
    files: list[Path] = []
    with torch.no_grad():
        psfs = frontend.psfs().detach().cpu().numpy()
        kernels = frontend.kernels().detach().cpu().numpy()
    save_array(out_dir / "psfs.npy", psfs)
    save_array(out_dir / "kernels.npy", kernels)
    files += [out_dir / "psfs.npy", out_dir / "kernels.npy"]
    if frontend.mode != "physical":
        files.append(save_psf_previews(psfs, None, names, out_dir / "psfs.png", "trained PSFs (kernel mode)"))
        return files
    with torch.no_grad():
        widths = frontend.design_widths_nm().detach().cpu().numpy()
        target = frontend.target_psfs.detach().cpu().numpy()
        gains = frontend.tile_gain.detach().cpu().numpy()
    save_array(out_dir / "widths_nm.npy", widths.astype(np.float32))
    save_array(out_dir / "tile_gain.npy", gains)
    files += [out_dir / "widths_nm.npy", out_dir / "tile_gain.npy"]
    files.append(save_width_previews(widths, names, out_dir / "widths.png", lo=c.min_width_nm, hi=c.max_width_nm))
    files.append(save_psf_previews(psfs, target if np.abs(target).sum() > 0 else None, names, out_dir / "psfs.png",
                                   "realised PSFs vs target (each scaled to its maximum)"))
    if c.export_gds:
        files.append(write_gds(widths, frontend.tile_centres_mm(), c.period_nm, out_dir / gds_name, names=names,
                               layer=layer, datatype=datatype))
    return files
