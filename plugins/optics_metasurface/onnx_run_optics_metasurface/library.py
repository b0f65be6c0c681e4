"""Meta-atom library: pillar width -> complex transmission, per design wavelength.

A metasurface is designed in the local-periodic approximation: each pillar transmits light as
if it sat in an infinite lattice of identical pillars, so one table ``width -> t(lambda)``
(computed once, by fits or RCWA) describes every pillar. The table ships as a small ``.npz``
(``widths_nm``, ``wavelengths_nm``, ``phase_rad`` unwrapped along the widths, ``amplitude``,
``metadata`` as JSON) and is interpolated with a monotone cubic (PCHIP) in torch, so the
width map can be optimised by gradient descent and a monotone phase curve stays monotone
between the tabulated widths. For speed (a design has millions of pillars) the cubic is
resampled once onto a dense uniform grid that contains the tabulated widths (error < 1e-5 rad)
and evaluated by a fused autograd function: two table look-ups per pillar instead of ~30
element-wise passes.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from onnx_run.errors import UserError
from onnx_run.files import save_arrays

#: libraries shipped with the plugin, by the name ``optics.library`` may give instead of a path:
#: "rcwa" (default: computed with ``onnx-run metasurface build-library``, meent, 7 Fourier orders)
#: and "fits" (the published phase fits, unit amplitude)
SHIPPED_LIBRARIES = {"rcwa": "si3n4_h750nm_p293nm_rcwa.npz", "fits": "si3n4_h750nm_p293nm_fits.npz"}
DEFAULT_LIBRARY = "rcwa"
#: nearest tabulated wavelength must be this close to a requested one
WAVELENGTH_TOLERANCE_NM = 0.5

#: published smooth fits of the phase (units of 2 pi) of 750 nm tall Si3N4 pillars on SiO2
#: with a 293 nm period, as a function of the pillar width r in micrometres:
#: phase = -a * (exp((r^2 - 2 b r) / (-c)) - 1)
PUBLISHED_FITS: dict[float, tuple[float, float, float]] = {
    635.0: (5.03593, 0.0122, 0.28081),
    532.0: (2.28293, 0.01878, 0.07134),
    450.0: (1.87336, 0.0237, 0.03191),
}
#: the widths over which the published fits were made (nm)
PUBLISHED_RANGE_NM = (60.0, 233.0)


def published_phase(width_nm: np.ndarray | float, wavelength_nm: float) -> np.ndarray:
    """Phase (radians) of the published fit at ``wavelength_nm`` (one of 635 / 532 / 450)."""
    key = min(PUBLISHED_FITS, key=lambda lam: abs(lam - wavelength_nm))
    if abs(key - wavelength_nm) > WAVELENGTH_TOLERANCE_NM:
        raise ValueError(f"no published fit at {wavelength_nm} nm; fits exist at {sorted(PUBLISHED_FITS)} nm")
    a, b, c = PUBLISHED_FITS[key]
    r = np.asarray(width_nm, dtype=np.float64) / 1000.0
    return 2 * math.pi * (-a * (np.exp((r**2 - 2 * b * r) / (-c)) - 1.0))


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes of a monotone piecewise-cubic Hermite interpolant along the last axis."""
    from scipy.interpolate import PchipInterpolator

    return PchipInterpolator(x, y, axis=-1).derivative()(x)


#: target spacing (nm) of the dense resampling of the cubic interpolant
DENSE_STEP_NM = 1.0 / 32


class _DenseLookup(torch.autograd.Function):
    """Linear interpolation in a dense complex table, fused: value and derivative in one pass.

    ``table`` (L, n) holds t at ``start + i step``; ``slope`` (L, n) the per-nm slope of each
    segment. Element-wise work is kept to a handful of passes: a design has millions of pillars.
    """

    @staticmethod
    def forward(ctx, width_nm, table, slope, start_nm, step_nm):  # type: ignore[override]
        n = table.shape[-1]
        u = (width_nm - start_nm).mul_(1.0 / step_nm)
        # on the CPU, check whether any width left the table; elsewhere mask always (an element-wise
        # pass is cheaper than waiting for the device to answer)
        outside = u.device.type != "cpu" or bool(u.min() < 0) or bool(u.max() > n - 1)
        i0 = u.floor().clamp_(0, n - 2)
        dw = u.sub_(i0).clamp_(0, 1).mul_(step_nm)  # width above the segment start, nm (u reused)
        idx = i0.to(torch.int64)
        outs, ders = [], []
        for li in range(table.shape[0]):
            d = torch.take(slope[li], idx)
            outs.append(torch.take(table[li], idx).add_(d * dw))
            ders.append(d)
        out = outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)
        if ctx.needs_input_grad[0]:
            der = ders[0].unsqueeze(0) if len(ders) == 1 else torch.stack(ders)
            if outside:  # widths clamped to the table's ends get no gradient
                der = der * ((width_nm >= start_nm) & (width_nm <= start_nm + (n - 1) * step_nm))
            ctx.save_for_backward(der)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (der,) = ctx.saved_tensors
        # real input, complex output: dL/dw = Re(conj(dt/dw) grad) = sum over (re, im) of the products
        g = (torch.view_as_real(grad.resolve_conj()) * torch.view_as_real(der)).sum(-1)
        return (g[0] if g.shape[0] == 1 else g.sum(0)), None, None, None, None


class MetaAtomLibrary:
    """Tabulated transmission of one pillar family (material, height, lattice period).

    ``phase_rad`` and ``amplitude`` have shape (wavelengths, widths). Interpolation between
    widths is a C1 monotone cubic; widths outside the table are clamped to its ends (a design
    never gets there: widths are parametrised into the fabricable range, which must lie inside
    the table).
    """

    def __init__(self, widths_nm: Sequence[float], wavelengths_nm: Sequence[float], phase_rad: np.ndarray,
                 amplitude: np.ndarray, metadata: Mapping[str, Any] | None = None):
        self.widths_nm = np.asarray(widths_nm, dtype=np.float64)
        self.wavelengths_nm = np.asarray(wavelengths_nm, dtype=np.float64)
        phase = np.asarray(phase_rad, dtype=np.float64)
        amp = np.asarray(amplitude, dtype=np.float64)
        w, lam = self.widths_nm.size, self.wavelengths_nm.size
        if self.widths_nm.ndim != 1 or w < 2 or np.any(np.diff(self.widths_nm) <= 0):
            raise ValueError("library widths_nm must be a strictly increasing 1-D array of at least 2 widths")
        if phase.shape != (lam, w) or amp.shape != (lam, w):
            raise ValueError(f"library phase/amplitude must be (wavelengths, widths) = {(lam, w)}, "
                             f"got {phase.shape} and {amp.shape}")
        if not (np.all(np.isfinite(phase)) and np.all(np.isfinite(amp)) and np.all(amp >= 0)):
            raise ValueError("library phase must be finite and amplitude finite and >= 0")
        # phase is only defined modulo 2 pi: unwrap along the widths so interpolation is smooth
        self.phase_rad = np.unwrap(phase, axis=1)
        self.amplitude = amp
        self.metadata = dict(metadata or {})
        self._phase_slope = _pchip_slopes(self.widths_nm, self.phase_rad)
        self._amp_slope = _pchip_slopes(self.widths_nm, self.amplitude)
        self._torch_cache: dict[tuple[str, torch.dtype], tuple[torch.Tensor, ...]] = {}
        self._dense_cache: dict[tuple[str, torch.dtype, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = {}
        steps = np.diff(self.widths_nm)
        if np.allclose(steps, steps[0], rtol=1e-9, atol=1e-9):
            refine = max(1, int(math.ceil(steps[0] / DENSE_STEP_NM - 1e-9)))
            self._dense_step = float(steps[0]) / refine  # a refinement: the nodes are on the dense grid
            count = (self.widths_nm.size - 1) * refine + 1
        else:
            count = int(math.ceil((self.widths_nm[-1] - self.widths_nm[0]) / DENSE_STEP_NM)) + 1
            self._dense_step = float(self.widths_nm[-1] - self.widths_nm[0]) / (count - 1)
        self._dense_w = self.widths_nm[0] + self._dense_step * np.arange(count)

    # -- files -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "MetaAtomLibrary":
        """Read a library ``.npz``; a missing or malformed file is a one-line UserError."""
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as data:
                meta = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
                return cls(data["widths_nm"], data["wavelengths_nm"], data["phase_rad"], data["amplitude"], meta)
        except FileNotFoundError:
            raise UserError(f"meta-atom library {p}: file not found") from None
        except (KeyError, ValueError, OSError) as exc:
            raise UserError(f"meta-atom library {p}: not a valid library file ({exc})") from None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        save_arrays(p, widths_nm=self.widths_nm, wavelengths_nm=self.wavelengths_nm, phase_rad=self.phase_rad,
                    amplitude=self.amplitude, metadata=np.array(json.dumps(self.metadata, sort_keys=True)))
        return p

    # -- lookups ---------------------------------------------------------------------------
    @property
    def width_range_nm(self) -> tuple[float, float]:
        return float(self.widths_nm[0]), float(self.widths_nm[-1])

    def wavelength_index(self, wavelength_nm: float, *, key: str = "wavelengths_nm") -> int:
        """Index of the tabulated wavelength; a wavelength the library lacks is a UserError."""
        i = int(np.argmin(np.abs(self.wavelengths_nm - wavelength_nm)))
        if abs(self.wavelengths_nm[i] - wavelength_nm) > WAVELENGTH_TOLERANCE_NM:
            have = ", ".join(f"{v:g}" for v in self.wavelengths_nm)
            raise UserError(f"{key}: {wavelength_nm:g} nm is not in the meta-atom library (it has {have} nm)")
        return i

    def check_widths(self, lo_nm: float, hi_nm: float, *, key: str = "optics") -> None:
        a, b = self.width_range_nm
        if lo_nm < a - 1e-9 or hi_nm > b + 1e-9:
            raise UserError(f"{key}: widths {lo_nm:g}-{hi_nm:g} nm fall outside the meta-atom library's "
                            f"{a:g}-{b:g} nm; allowed range is {a:g}-{b:g} nm")

    def _tables(self, device: torch.device | str | None, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        key = (str(device), dtype)
        tabs = self._torch_cache.get(key)
        if tabs is None:
            tabs = tuple(torch.as_tensor(a, device=device, dtype=dtype) for a in
                         (self.widths_nm, self.phase_rad, self._phase_slope, self.amplitude, self._amp_slope))
            self._torch_cache[key] = tabs
        return tabs

    @staticmethod
    def _hermite(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Cubic Hermite interpolation of rows ``y`` (L, W) with slopes ``d`` at ``w`` -> (L, *w.shape)."""
        w = w.clamp(x[0], x[-1])
        i = torch.searchsorted(x, w.detach().contiguous(), right=True).sub_(1).clamp_(0, x.numel() - 2)
        x0, h = x[i], x[i + 1] - x[i]
        t = (w - x0) / h
        t2, t3 = t * t, t * t * t
        h00, h10, h01, h11 = 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, -2 * t3 + 3 * t2, t3 - t2
        flat = i.reshape(-1)
        rows = []
        for li in range(y.shape[0]):
            y0, y1 = y[li, flat].reshape(i.shape), y[li, flat + 1].reshape(i.shape)
            d0, d1 = d[li, flat].reshape(i.shape), d[li, flat + 1].reshape(i.shape)
            rows.append(h00 * y0 + h10 * h * d0 + h01 * y1 + h11 * h * d1)
        return torch.stack(rows)

    def phase(self, width_nm: torch.Tensor, wavelength_indices: Sequence[int] | None = None) -> torch.Tensor:
        """Phase (radians) at the widths, one row per wavelength: (L, *width_nm.shape)."""
        x, ph, dph, _, _ = self._tables(width_nm.device, width_nm.dtype)
        if wavelength_indices is not None:
            ph, dph = ph[list(wavelength_indices)], dph[list(wavelength_indices)]
        return self._hermite(width_nm, x, ph, dph)

    def amplitude_at(self, width_nm: torch.Tensor, wavelength_indices: Sequence[int] | None = None) -> torch.Tensor:
        x, _, _, amp, damp = self._tables(width_nm.device, width_nm.dtype)
        if wavelength_indices is not None:
            amp, damp = amp[list(wavelength_indices)], damp[list(wavelength_indices)]
        return self._hermite(width_nm, x, amp, damp).clamp_min(0)

    def transmission_exact(self, width_nm: torch.Tensor,
                           wavelength_indices: Sequence[int] | None = None) -> torch.Tensor:
        """Complex transmission ``a exp(i phi)`` from the cubic itself: (L, *width_nm.shape)."""
        return torch.polar(self.amplitude_at(width_nm, wavelength_indices), self.phase(width_nm, wavelength_indices))

    def _dense(self, device: torch.device, dtype: torch.dtype,
               rows: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(device), dtype, rows)
        tabs = self._dense_cache.get(key)
        if tabs is None:
            w = torch.as_tensor(self._dense_w, dtype=torch.float64)
            t = self.transmission_exact(w, list(rows))  # (L, n) complex128
            slope = torch.zeros_like(t)
            slope[:, :-1] = (t[:, 1:] - t[:, :-1]) / self._dense_step
            cplx = torch.complex128 if dtype == torch.float64 else torch.complex64
            tabs = (t.to(device, cplx).contiguous(), slope.to(device, cplx).contiguous())
            self._dense_cache[key] = tabs
        return tabs

    def transmission(self, width_nm: torch.Tensor, wavelength_indices: Sequence[int] | None = None) -> torch.Tensor:
        """Complex transmission at the widths, (L, *width_nm.shape), differentiable in the widths.

        The cubic interpolant resampled on a dense grid (``DENSE_STEP_NM``) and interpolated
        linearly: what the frontends use (fast); ``transmission_exact`` is the reference.
        """
        rows = (tuple(range(self.wavelengths_nm.size)) if wavelength_indices is None
                else tuple(int(i) for i in wavelength_indices))
        table, slope = self._dense(width_nm.device, width_nm.dtype, rows)
        return _DenseLookup.apply(width_nm, table, slope, float(self._dense_w[0]), self._dense_step)

    def widths_for_phase(self, phase_rad: np.ndarray, wavelength_index: int, lo_nm: float, hi_nm: float,
                         samples: int = 512, bins: int = 2048) -> np.ndarray:
        """The width in [lo, hi] whose transmission is closest to ``exp(i phase)`` (phase mod 2 pi).

        Used to start a design from a phase map (lens, Gerchberg-Saxton); where the library
        covers less than 2 pi the closest reachable phase is taken. A look-up table over
        ``bins`` phase bins keeps this O(pixels).
        """
        grid = np.linspace(lo_nm, hi_nm, samples)
        t = self.transmission_exact(torch.as_tensor(grid), [wavelength_index])[0].numpy()
        t = t / np.maximum(np.abs(t).max(), 1e-12)
        centres = np.exp(1j * (np.arange(bins) + 0.5) * 2 * np.pi / bins)
        best = np.argmin(np.abs(centres[:, None] - t[None, :]), axis=1)
        b = np.floor(np.mod(np.asarray(phase_rad, dtype=np.float64), 2 * np.pi) / (2 * np.pi) * bins).astype(np.int64)
        return grid[best[np.clip(b, 0, bins - 1)]]

    def summary(self) -> str:
        m = self.metadata
        a, b = self.width_range_nm
        lams = "/".join(f"{v:g}" for v in self.wavelengths_nm)
        return (f"{m.get('material', '?')} pillars {m.get('height_nm', '?')} nm tall, "
                f"period {m.get('period_nm', '?')} nm, widths {a:g}-{b:g} nm ({self.widths_nm.size}), {lams} nm, "
                f"source: {m.get('source', '?')}")


def fit_library(widths_nm: Sequence[float] | None = None) -> MetaAtomLibrary:
    """The library made from the published phase fits, unit amplitude (no loss modelled)."""
    w = np.arange(PUBLISHED_RANGE_NM[0], PUBLISHED_RANGE_NM[1] + 0.5, 1.0) if widths_nm is None \
        else np.asarray(widths_nm, dtype=np.float64)
    lams = np.array(sorted(PUBLISHED_FITS, reverse=True))
    phase = np.stack([published_phase(w, lam) for lam in lams])
    meta = {"material": "Si3N4", "substrate": "SiO2", "height_nm": 750.0, "period_nm": 293.0,
            "source": "published phase-vs-width fits (Majumdar group design code), unit amplitude",
            "polarisation": "insensitive (square pillars)"}
    return MetaAtomLibrary(w, lams, phase, np.ones_like(phase), meta)


def shipped_library_path(name: str = DEFAULT_LIBRARY) -> Path:
    return Path(str(resources.files("onnx_run_optics_metasurface") / "data" / SHIPPED_LIBRARIES[name]))


def default_library_path() -> Path:
    return shipped_library_path(DEFAULT_LIBRARY)


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> MetaAtomLibrary:
    return MetaAtomLibrary.load(path)


def load_library(path: str | Path | None = None, *, key: str = "optics.library") -> MetaAtomLibrary:
    """A shipped library by name ("rcwa", "fits"; empty: the default) or a file (cached per file)."""
    text = str(path) if path else DEFAULT_LIBRARY
    p = shipped_library_path(text) if text in SHIPPED_LIBRARIES else Path(text)
    if not p.exists():
        raise UserError(f"{key}: meta-atom library {p} not found; give a .npz path or one of "
                        f"{', '.join(SHIPPED_LIBRARIES)}")
    return _load_cached(str(p.resolve()), p.stat().st_mtime)
