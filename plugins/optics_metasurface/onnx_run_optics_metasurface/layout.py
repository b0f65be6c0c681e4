"""Where the sub-apertures sit: the paper's symmetric-grid rule (``onnx_run.estimate.grid_layout``).

A signed kernel needs two sub-apertures (its positive and negative PSF), an unsigned one one.
The rule gives how many tiles of side ``kernel_mm`` with spacing ``spacing_mm`` fit the
metasurface; the tiles in use fill the most nearly square sub-grid that holds them, centred,
row-major from the top-left: the positive parts of kernels 0..K-1 first, then the negative
parts (the order of ``onnx_run.physics.incoherent.signed_to_pairs``).
"""

from __future__ import annotations

import math

import numpy as np

from onnx_run.components import Layout
from onnx_run.errors import UserError
from onnx_run.estimate.layout import grid_counts, grid_layout

from onnx_run_optics_metasurface.config import MetasurfaceConfig


def _side(n: int, kernel_mm: float, spacing_mm: float) -> float:
    return n * kernel_mm + (n - 1) * spacing_mm


def smallest_square_mm(tiles: int, kernel_mm: float, spacing_mm: float) -> float:
    """Side of the smallest square metasurface whose grid holds ``tiles`` tiles."""
    return _side(math.ceil(math.sqrt(tiles) - 1e-9), kernel_mm, spacing_mm)


def _used_grid(tiles: int, rows: int, cols: int) -> tuple[int, int]:
    """The most nearly square r x c <= rows x cols with r c >= tiles (fewest cells first)."""
    best = None
    for r in range(1, rows + 1):
        c = math.ceil(tiles / r)
        if c > cols:
            continue
        key = (r * c, abs(r - c), -r)
        if best is None or key < best[0]:
            best = (key, (r, c))
    assert best is not None
    return best[1]


def layout_for(config: MetasurfaceConfig) -> Layout:
    """The layout of a config, without building a model; one-line UserError if it does not fit."""
    c = config
    per = c.tiles_per_kernel
    if c.height_mm is None or c.width_mm is None:
        tiles = c.num_kernels * per
        side_r = math.ceil(math.sqrt(tiles) - 1e-9)
        side_c = math.ceil(tiles / side_r)
        height, width = _side(side_r, c.kernel_mm, c.spacing_mm), _side(side_c, c.kernel_mm, c.spacing_mm)
        auto = True
    else:
        height, width = float(c.height_mm), float(c.width_mm)
        auto = False
    base = grid_layout(height, width, c.kernel_mm, c.spacing_mm, kernel_size_px=c.kernel_size,
                       what="optics (metasurface)")
    fit = base.rows * base.cols
    kernels = c.num_kernels if c.num_kernels > 0 else fit // per
    tiles = kernels * per
    if kernels < 1:
        raise UserError(f"optics.num_kernels: a {height:g} x {width:g} mm metasurface fits {fit} tile(s) of "
                        f"{c.kernel_mm:g} mm, fewer than the {per} one signed kernel needs; the smallest square that "
                        f"fits one is {smallest_square_mm(per, c.kernel_mm, c.spacing_mm):g} mm")
    if tiles > fit:
        what = "signed kernels need" if c.signed else "kernels need"
        raise UserError(
            f"optics.num_kernels: {kernels} {what} {tiles} PSF tiles but a {height:g} x {width:g} mm metasurface fits "
            f"{fit} ({base.rows} x {base.cols} of {c.kernel_mm:g} mm, spacing {c.spacing_mm:g} mm); "
            f"the smallest square metasurface that fits {tiles} is {smallest_square_mm(tiles, c.kernel_mm, c.spacing_mm):g} x "
            f"{smallest_square_mm(tiles, c.kernel_mm, c.spacing_mm):g} mm")
    r, cc = _used_grid(tiles, base.rows, base.cols)
    feature_mm = c.input_size_px * c.sensor_pitch_um / 1000.0
    details = dict(base.details)
    details.update({
        "auto_size": auto,
        "fits_tiles": fit,
        "max_kernels": fit // per,
        "psf_tiles": tiles,
        "used_grid": f"{r} x {cc}",
        "pillars_per_tile": f"{c.pillars} x {c.pillars}",
        "pillars_total": tiles * c.pillars**2,
        "period_nm": c.period_nm,
        "distance_mm": c.distance_mm,
        "sensor_pitch_um": c.sensor_pitch_um,
        "psf_window_mm": round(c.kernel_size * c.sensor_pitch_um / 1000.0, 6),
        "feature_map_mm": round(feature_mm, 6),
        "tile_pitch_mm": round(c.kernel_mm + c.spacing_mm, 6),
        "feature_maps_overlap": feature_mm > c.kernel_mm + c.spacing_mm + 1e-12,
        "wavelengths_nm": list(c.design_wavelengths_nm),
    })
    return Layout(kernels, r, cc, c.kernel_size, details)


def tile_centres_mm(config: MetasurfaceConfig, layout: Layout | None = None) -> np.ndarray:
    """(tiles, 2) centres (y, x) in mm of the sub-apertures in use, relative to the metasurface centre
    (+y up), in tile order (positive parts first, then negative)."""
    lay = layout or layout_for(config)
    c = config
    tiles = lay.num_kernels * c.tiles_per_kernel
    pitch = c.kernel_mm + c.spacing_mm
    out = np.zeros((tiles, 2))
    for t in range(tiles):
        i, j = divmod(t, lay.cols)
        out[t, 0] = ((lay.rows - 1) / 2 - i) * pitch
        out[t, 1] = (j - (lay.cols - 1) / 2) * pitch
    return out


__all__ = ["layout_for", "tile_centres_mm", "smallest_square_mm", "grid_counts"]
