"""The symmetric-grid layout rule shared by optics plugins.

K kernels of side k with minimum spacing d on an aperture of h x w: the paper's rule is
n_row = floor((h + d) / (k + d)), n_col = floor((w + d) / (k + d)) — each kernel takes k + d
except that the last one needs no trailing gap. The grid is kept symmetric by centring it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from onnx_run.errors import UserError

if TYPE_CHECKING:
    from onnx_run.components import Layout


def grid_counts(height: float, width: float, kernel: float, spacing: float) -> tuple[int, int]:
    # a tiny tolerance keeps exact fits (h = n k + (n-1) d) from flooring down in floating point
    eps = 1e-9
    rows = math.floor((height + spacing) / (kernel + spacing) + eps)
    cols = math.floor((width + spacing) / (kernel + spacing) + eps)
    return max(rows, 0), max(cols, 0)


def smallest_size_for_one(kernel: float) -> float:
    return kernel


def grid_layout(height_mm: float, width_mm: float, kernel_mm: float, spacing_mm: float, *,
                kernel_size_px: int, max_kernels: int | None = None, what: str = "aperture") -> Layout:
    """Kernel grid on an aperture; a size that fits no kernel is a one-line error naming the minimum."""
    from onnx_run.components import Layout  # here: the grid counts import no torch (config show)

    if kernel_mm <= 0 or spacing_mm < 0:
        raise UserError(f"{what}: kernel side must be > 0 and spacing >= 0 (got {kernel_mm} mm, {spacing_mm} mm)")
    rows, cols = grid_counts(height_mm, width_mm, kernel_mm, spacing_mm)
    if rows < 1 or cols < 1:
        raise UserError(
            f"{what}: {height_mm} x {width_mm} mm fits no kernel of side {kernel_mm} mm; "
            f"the smallest size that fits one is {kernel_mm} x {kernel_mm} mm"
        )
    count = rows * cols
    if max_kernels is not None:
        count = min(count, max_kernels)
    used_h = rows * kernel_mm + (rows - 1) * spacing_mm
    used_w = cols * kernel_mm + (cols - 1) * spacing_mm
    return Layout(count, rows, cols, kernel_size_px, {
        "height_mm": height_mm, "width_mm": width_mm, "kernel_mm": kernel_mm, "spacing_mm": spacing_mm,
        "grid": f"{rows} x {cols}", "used_height_mm": round(used_h, 6), "used_width_mm": round(used_w, 6),
        "margin_mm": [round((height_mm - used_h) / 2, 6), round((width_mm - used_w) / 2, 6)],
    })
