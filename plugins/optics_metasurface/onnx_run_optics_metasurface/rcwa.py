"""A meta-atom library from rigorous coupled-wave analysis (RCWA), with meent (optional extra).

Why meent (docs/metasurface.md has the comparison): maintained (releases through 2026), MIT
licensed, needs only numpy and scipy (its numpy backend; torch/jax optional), models layers
as exact rectangles (continuous Fourier series, no raster staircase), and ships refractive
index tables for Si3N4 (Luke) and SiO2 (Malitson).

Model: a square Si3N4 pillar of width w in a square cell of the lattice period, height h, on a
SiO2 substrate; a plane wave at normal incidence from the substrate, transmitted into air
(towards the sensor). The period is below lambda / n_substrate, so only the zeroth order
propagates: the pillar's transmission is that order's complex amplitude. Amplitude =
sqrt(zeroth-order transmitted power efficiency); phase = that order's phase, sign flipped:
meent uses exp(+i omega t), this project exp(-i omega t) (a longer optical path = a larger
phase, as in the published fits). Square pillars at normal incidence are polarisation
independent; s polarisation is used.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Sequence

import numpy as np

from onnx_run.errors import UserError
from onnx_run.files import save_figure
from onnx_run.plotstyle import styled

from onnx_run_optics_metasurface.library import MetaAtomLibrary

EXTRA_HINT = "pip install 'onnx-run-optics-metasurface[rcwa]'"


def _import_meent():
    try:
        import meent
    except ImportError:
        raise UserError(f"build-library needs the RCWA solver meent, which is not installed: {EXTRA_HINT}") from None
    return meent


def _index(meent, table, material: str | float, wavelength_nm: float, what: str) -> float:
    if isinstance(material, (int, float)):
        return float(material)
    try:
        return float(np.real(meent.find_nk_index(material, table, wavelength_nm * 1e-9)))
    except Exception:  # noqa: BLE001 - an unknown name is the user's to fix
        names = ", ".join(sorted(meent.list_materials())[:12])
        raise UserError(f"--{what}: unknown material {material!r}; give a refractive index or one of: "
                        f"{names}, ...") from None


def _single_thread_blas():
    """Small eigenproblems do not scale across threads, and on a shared machine extra BLAS
    threads only contend: run the solver single-threaded when threadpoolctl is available."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def solve_pillar(meent, *, width_nm: float, wavelength_nm: float, period_nm: float, height_nm: float,
                 n_pillar: float, n_substrate: float, fourier_orders: int) -> complex:
    """Zeroth-order complex transmission of one pillar in its lattice (this project's convention)."""
    fto = int(fourier_orders)
    mee = meent.call_mee(backend=0, pol=0, n_top=n_substrate, n_bot=1.0, theta=0.0, phi=0.0, fto=[fto, fto],
                         wavelength=float(wavelength_nm), period=[float(period_nm), float(period_nm)],
                         thickness=[float(height_nm)], type_complex=np.complex128)
    half = period_nm / 2.0
    mee.ucell = [[1.0, [["rectangle", half, half, float(width_nm), float(width_nm), n_pillar, 0]]]]
    res = mee.conv_solve().res
    t0 = complex(res.T_s[fto, fto])
    power = float(np.real(res.de_ti[fto, fto]))
    return np.sqrt(max(power, 0.0)) * np.exp(-1j * np.angle(t0))


def build_library_rcwa(widths_nm: Sequence[float], wavelengths_nm: Sequence[float], *, period_nm: float = 293.0,
                       height_nm: float = 750.0, pillar: str | float = "Si3N4_luke",
                       substrate: str | float = "SiO2_malitson", fourier_orders: int = 7,
                       material: str = "Si3N4", on_step: Callable[[int, int], None] | None = None) -> MetaAtomLibrary:
    """Tabulate the transmission of every width at every wavelength by RCWA."""
    meent = _import_meent()
    widths = np.asarray(widths_nm, dtype=np.float64)
    lams = np.asarray(wavelengths_nm, dtype=np.float64)
    if widths.size < 2 or np.any(np.diff(widths) <= 0):
        raise UserError("--widths-nm: need at least two increasing widths")
    if widths[0] <= 0 or widths[-1] >= period_nm:
        raise UserError(f"--widths-nm: widths must lie in (0, {period_nm:g}) nm (the period), got "
                        f"{widths[0]:g}-{widths[-1]:g}")
    table = meent.read_material_table()
    phase = np.zeros((lams.size, widths.size))
    amp = np.zeros_like(phase)
    indices = {}
    t_start = time.perf_counter()
    total, done = lams.size * widths.size, 0
    with _single_thread_blas():
        for li, lam in enumerate(lams):
            n_p = _index(meent, table, pillar, lam, "pillar")
            n_s = _index(meent, table, substrate, lam, "substrate")
            if period_nm >= lam / n_s:
                raise UserError(f"--period-nm: {period_nm:g} nm lets diffraction orders propagate in the substrate at "
                                f"{lam:g} nm (needs < {lam / n_s:.4g} nm); the local-periodic library would be wrong")
            indices[f"{lam:g}"] = {"pillar": round(n_p, 5), "substrate": round(n_s, 5)}
            for wi, w in enumerate(widths):
                t = solve_pillar(meent, width_nm=w, wavelength_nm=lam, period_nm=period_nm, height_nm=height_nm,
                                 n_pillar=n_p, n_substrate=n_s, fourier_orders=fourier_orders)
                phase[li, wi], amp[li, wi] = np.angle(t), abs(t)
                done += 1
                if on_step is not None:
                    on_step(done, total)
    meta = {"material": material, "substrate": str(substrate), "height_nm": float(height_nm),
            "period_nm": float(period_nm),
            "source": f"RCWA (meent {getattr(meent, '__version__', '?')}, {fourier_orders} Fourier orders per axis)",
            "refractive_index": indices, "pillar_material": str(pillar),
            "incidence": "normal, from the substrate into air; zeroth order",
            "seconds": round(time.perf_counter() - t_start, 1)}
    return MetaAtomLibrary(widths, lams, phase, amp, meta)


def compare_with_fits(lib: MetaAtomLibrary) -> dict[str, float]:
    """Largest deviation (units of 2 pi) of the library's phase from the published fits, per
    wavelength, over their common widths, after removing the best constant offset (a global
    phase does not change a PSF)."""
    from onnx_run_optics_metasurface.library import PUBLISHED_FITS, PUBLISHED_RANGE_NM, published_phase

    out = {}
    lo, hi = max(PUBLISHED_RANGE_NM[0], lib.widths_nm[0]), min(PUBLISHED_RANGE_NM[1], lib.widths_nm[-1])
    w = np.linspace(lo, hi, 200)
    import torch

    for li, lam in enumerate(lib.wavelengths_nm):
        if min(abs(lam - k) for k in PUBLISHED_FITS) > 0.5:
            continue
        mine = lib.phase(torch.as_tensor(w), [li])[0].numpy()
        ref = published_phase(w, lam)
        d = mine - ref
        d -= np.median(d)
        out[f"{lam:g}"] = round(float(np.abs(d).max() / (2 * np.pi)), 4)
    return out


@styled
def plot_library(lib: MetaAtomLibrary, path, *, compare: bool = True):
    """Phase (in 2 pi) and amplitude vs width per wavelength, with the published fits dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from onnx_run_optics_metasurface.library import PUBLISHED_FITS, published_phase

    w = np.linspace(lib.widths_nm[0], lib.widths_nm[-1], 400)
    colors = {635.0: "tab:red", 532.0: "tab:green", 450.0: "tab:blue"}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for li, lam in enumerate(lib.wavelengths_nm):
        col = colors.get(float(round(lam)), None)
        ph = lib.phase(torch.as_tensor(w), [li])[0].numpy()
        ph0 = ph[0]
        a1.plot(w, (ph - ph0) / (2 * np.pi), color=col, label=f"{lam:g} nm (library)")
        a2.plot(w, lib.amplitude_at(torch.as_tensor(w), [li])[0].numpy(), color=col, label=f"{lam:g} nm")
        if compare and min(abs(lam - k) for k in PUBLISHED_FITS) <= 0.5:
            ref = published_phase(w, lam)
            a1.plot(w, (ref - ref[0]) / (2 * np.pi), "--", color=col, alpha=0.7, label=f"{lam:g} nm (published fit)")
    a1.set_xlabel("pillar width (nm)")
    a1.set_ylabel("phase - phase(w_min) (2 pi)")
    a1.legend(fontsize=7)
    a2.set_xlabel("pillar width (nm)")
    a2.set_ylabel("amplitude |t|")
    a2.set_ylim(0, 1.05)
    fig.suptitle(lib.summary(), fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
