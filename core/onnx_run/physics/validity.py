"""When is a propagation method valid? Reports with the numbers, and warnings naming them.

The rules (docs/physics.md has the derivations and sources):

* Transfer-function methods (angular spectrum, Fresnel TF) sample the chirp ``H(f)``; it is
  alias-free while ``|z| <= z_max = Lp * dx / lambda * sqrt(1 - (lambda / 2 dx)^2)`` with ``Lp`` the
  padded window (Fresnel: without the square root). With 1x padding this is Voelz's critical
  distance ``z_c = N dx^2 / lambda``. Beyond it the Matsushima-Shimobaba band limit keeps the
  result alias-free by discarding high frequencies; we warn when it discards more than
  ``BAND_LIMIT_WARN_FRACTION`` of the band along an axis, and always warn when the TF is aliased
  (band limit off).
* Fresnel (paraxial) TF: phase error against the exact kernel at the highest kept frequency,
  ``k |z| (lambda f)^4 / 8``; warn above a quarter wave (pi/2).
* Pitch below lambda / 2: the grid carries evanescent waves and sub-wavelength structure where
  scalar diffraction is questionable; warn.
* Thin lens: its chirp ``exp(-i pi r^2 / (lambda f))`` is sampled only if
  ``dx <= lambda |f| / L`` (L: window width).
* Rayleigh-Sommerfeld direct integration is an impulse-response method: its kernel is sampled
  across the window for ``|z| >= z_c`` (Voelz 2011: impulse response for ``dx <= lambda z / L``).
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Sequence

import attrs
import numpy as np

from onnx_run.physics.grid import Grid, padded_size

#: warn when the band limit removes more than this fraction of the band along an axis
BAND_LIMIT_WARN_FRACTION = 0.5
#: warn when the paraxial (Fresnel) phase error at the band edge exceeds this (a quarter wave)
PARAXIAL_PHASE_WARN_RAD = math.pi / 2

METHODS = ("angular_spectrum", "fresnel", "rayleigh_sommerfeld")


class PhysicsWarning(UserWarning):
    """A physics routine was used outside the range where its numbers can be trusted."""


def band_limit_frequency(wavelength_m: float, distance_m: float, padded_width_m: float,
                         method: str = "angular_spectrum") -> float:
    """Largest alias-free frequency (1/m) along an axis of padded width ``padded_width_m``.

    Angular spectrum: Matsushima & Shimobaba (2009), ``1 / (lambda sqrt((2 df z)^2 + 1))``
    with ``df = 1 / padded width``. Fresnel TF: its paraxial counterpart ``1 / (2 df lambda |z|)``.
    """
    z = abs(float(distance_m))
    if z == 0:
        return math.inf
    df = 1.0 / padded_width_m
    if method == "fresnel":
        return 1.0 / (2 * df * wavelength_m * z)
    return 1.0 / (wavelength_m * math.sqrt((2 * df * z) ** 2 + 1))


def removed_fraction(n_padded: int, pitch_m: float, f_limit: float) -> float:
    """Fraction of the FFT frequencies of an axis with ``|f| > f_limit`` (what a band limit cuts)."""
    f = np.fft.fftfreq(n_padded, d=pitch_m)
    return float(np.mean(np.abs(f) > f_limit))


@attrs.frozen
class PropagationReport:
    """The validity numbers of one propagation (one wavelength)."""

    method: str
    wavelength_m: float
    pitch_m: float
    shape: tuple[int, int]
    distance_m: float
    pad_factor: float
    band_limit: bool
    #: a^2 / (lambda |z|) with a the half-width of the window (larger side)
    fresnel_number: float
    #: Voelz's critical distance N dx^2 / lambda (N: larger side, unpadded)
    critical_distance_m: float
    #: largest |z| at which the transfer function is sampled in the padded window
    max_tf_distance_m: float
    pitch_over_wavelength: float
    #: steepest propagating angle the grid represents, asin(lambda / 2 dx)
    max_angle_deg: float
    #: band-limit frequency along (y, x) in 1/m (inf: inactive)
    band_limit_per_m: tuple[float, float]
    #: per-axis fraction of the band the band limit removes (max over axes; 0 when off/inactive)
    band_removed_fraction: float
    #: Fresnel TF only: k |z| (lambda f_edge)^4 / 8 at the highest kept frequency
    paraxial_phase_error_rad: float
    issues: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


@attrs.frozen
class LensReport:
    """Sampling of a thin-lens chirp on a grid (one wavelength)."""

    focal_length_m: float
    wavelength_m: float
    pitch_m: float
    width_m: float
    #: the largest pitch that samples the chirp: lambda |f| / L
    max_pitch_m: float
    issues: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


def propagation_report(grid: Grid, distance_m: float, *, method: str = "angular_spectrum",
                       pad_factor: float = 2.0, band_limit: bool = True) -> tuple[PropagationReport, ...]:
    """Validity numbers of a propagation, one report per wavelength of ``grid``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    reports = []
    dx = grid.pitch_m
    n_max = max(grid.shape)
    z = abs(float(distance_m))
    pad = pad_factor if method != "rayleigh_sommerfeld" else 1.0
    hp, wp = padded_size(grid.shape[0], pad), padded_size(grid.shape[1], pad)
    for lam in grid.wavelengths_m:
        issues: list[str] = []
        half = 0.5 * n_max * dx
        fresnel_number = half**2 / (lam * z) if z > 0 else math.inf
        z_c = n_max * dx**2 / lam
        lp = min(hp, wp) * dx
        s = lam / (2 * dx)
        root = math.sqrt(max(0.0, 1 - s * s)) if method == "angular_spectrum" else 1.0
        z_max = lp * dx / lam * root
        max_angle = math.degrees(math.asin(min(1.0, s)))
        f_lim = (math.inf, math.inf)
        removed = 0.0
        paraxial = 0.0
        if method in ("angular_spectrum", "fresnel"):
            f_lim = (band_limit_frequency(lam, z, hp * dx, method),
                     band_limit_frequency(lam, z, wp * dx, method))
            frac = max(removed_fraction(hp, dx, f_lim[0]), removed_fraction(wp, dx, f_lim[1]))
            if band_limit:
                removed = frac
                if removed > BAND_LIMIT_WARN_FRACTION:
                    f_keep = min(f_lim)
                    angle = math.degrees(math.asin(min(1.0, lam * f_keep)))
                    issues.append(
                        f"{method}: |z| = {z:.4g} m is beyond the sampled range z_max = {z_max:.4g} m "
                        f"(critical distance N dx^2/lambda = {z_c:.4g} m, pad {pad_factor:g}); the band "
                        f"limit removes {100 * removed:.0f}% of the band per axis (keeps |f| <= "
                        f"{f_keep:.4g} 1/m, angles <= {angle:.3g} deg): pad more, or use a Fourier lens "
                        f"or an impulse-response method"
                    )
            elif z > z_max * (1 + 1e-9):
                issues.append(
                    f"{method}: transfer function aliased: |z| = {z:.4g} m > z_max = {z_max:.4g} m "
                    f"(critical distance N dx^2/lambda = {z_c:.4g} m, pad {pad_factor:g}) with the band "
                    f"limit off; turn the band limit on or pad more"
                )
            if method == "fresnel":
                f_edge = min(1.0 / (2 * dx), min(f_lim) if band_limit else math.inf)
                paraxial = (2 * math.pi / lam) * z * (lam * f_edge) ** 4 / 8
                if paraxial > PARAXIAL_PHASE_WARN_RAD:
                    issues.append(
                        f"fresnel: paraxial phase error {paraxial:.3g} rad at f = {f_edge:.4g} 1/m "
                        f"(angle {math.degrees(math.asin(min(1.0, lam * f_edge))):.3g} deg) exceeds "
                        f"pi/2 at |z| = {z:.4g} m; use the angular spectrum"
                    )
        else:  # Rayleigh-Sommerfeld direct integration: an impulse-response method
            if z < z_c * (1 - 1e-9):
                issues.append(
                    f"rayleigh_sommerfeld: |z| = {z:.4g} m is below the critical distance "
                    f"N dx^2/lambda = {z_c:.4g} m: the kernel exp(ikr) is undersampled across the "
                    f"window; sample finer or use the angular spectrum"
                )
        if dx < lam / 2:
            issues.append(
                f"pitch {dx:.4g} m is below lambda/2 = {lam / 2:.4g} m: evanescent, sub-wavelength "
                f"structure where scalar diffraction is questionable"
            )
        reports.append(PropagationReport(
            method=method, wavelength_m=lam, pitch_m=dx, shape=grid.shape, distance_m=float(distance_m),
            pad_factor=float(pad), band_limit=bool(band_limit), fresnel_number=fresnel_number,
            critical_distance_m=z_c, max_tf_distance_m=z_max, pitch_over_wavelength=dx / lam,
            max_angle_deg=max_angle, band_limit_per_m=f_lim, band_removed_fraction=removed,
            paraxial_phase_error_rad=paraxial, issues=tuple(issues),
        ))
    return tuple(reports)


def lens_report(grid: Grid, focal_length_m: float) -> tuple[LensReport, ...]:
    """Is a thin lens of focal length ``focal_length_m`` sampled on ``grid``? One per wavelength."""
    width = max(grid.extent_m)
    out = []
    for lam in grid.wavelengths_m:
        max_pitch = lam * abs(focal_length_m) / width
        issues = []
        if grid.pitch_m > max_pitch * (1 + 1e-9):
            issues.append(
                f"thin lens f = {focal_length_m:.4g} m: chirp undersampled at lambda = {lam:.4g} m: "
                f"pitch {grid.pitch_m:.4g} m > lambda f / L = {max_pitch:.4g} m (L = {width:.4g} m); "
                f"sample finer, use a smaller window or a longer focal length"
            )
        out.append(LensReport(float(focal_length_m), lam, grid.pitch_m, width, max_pitch, tuple(issues)))
    return tuple(out)


def warn_issues(reports: Iterable[PropagationReport | LensReport], stacklevel: int = 3) -> None:
    """Emit one PhysicsWarning per distinct issue found in ``reports``."""
    seen: set[str] = set()
    for report in reports:
        for issue in report.issues:
            if issue not in seen:
                seen.add(issue)
                warnings.warn(issue, PhysicsWarning, stacklevel=stacklevel)


def describe(reports: Sequence[PropagationReport]) -> str:
    """A short human-readable table of propagation reports."""
    lines = []
    for r in reports:
        lines.append(
            f"{r.method} lambda={r.wavelength_m:.4g} m z={r.distance_m:.4g} m N_F={r.fresnel_number:.3g} "
            f"z_c={r.critical_distance_m:.4g} m z_max={r.max_tf_distance_m:.4g} m "
            f"dx/lambda={r.pitch_over_wavelength:.3g} band removed={100 * r.band_removed_fraction:.0f}% "
            + ("ok" if r.ok else "; ".join(r.issues))
        )
    return "\n".join(lines)
