"""The metasurface frontend: K signed kernels as pairs of sub-aperture PSFs on their own sensor tiles.

Forward model (both modes): every tile t has an intensity PSF p_t (C, kh, kw), in units of the
fraction of the light through its sub-aperture that reaches each sensor pixel (so sum <= 1).
The sensor records ``x * p_t`` (incoherent imaging, wavelength channels summed by the
monochrome sensor; ``onnx_run.physics.incoherent``), a per-tile digital read-out gain g_t is
applied and signed pairs are subtracted:

    features_k = G (g_k+ (x * p_k+) - g_k- (x * p_k-)),   G = sqrt(C kh kw)  (fixed)

G makes a uniform PSF a unit-L2 kernel, so features are O(1) for inputs in [0, 1].

* ``mode = "kernel"`` (training default, fast): p_t = eta_t softmax(logits_t), eta_t =
  sigmoid(.) in (0, 1): non-negative PSFs whose energy cannot exceed the light that entered.
  g_t = 1. ``realise`` turns these into a width map (gradient descent on the pillar widths)
  and returns a physical-mode frontend.
* ``mode = "physical"``: the parameter is the pillar-width map (sigmoid into [min, max] width);
  p_t comes from the meta-atom library and the band-limited angular spectrum to the sensor
  (``onnx_run_optics_metasurface.optics``); g_t is a trainable digital gain (fitted by
  realisation to give each PSF the energy the trained kernel asked for: the normalised design
  loss leaves it free, and only a per-tile scalar can be applied after a monochrome capture).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from onnx_run.components import Layout, OpticalFrontend
from onnx_run.errors import UserError
from onnx_run.physics.incoherent import incoherent_conv, subtract_pairs

from onnx_run_optics_metasurface.config import MetasurfaceConfig
from onnx_run_optics_metasurface.layout import layout_for, tile_centres_mm
from onnx_run_optics_metasurface.library import MetaAtomLibrary, load_library
from onnx_run_optics_metasurface.optics import TileGeometry, gerchberg_saxton, lens_phase, operator

#: sigmoid parameters are kept inside +-LOGIT_LIMIT so that every width stays reachable by gradients
LOGIT_LIMIT = 8.0


def output_gain(channels: int, kh: int, kw: int) -> float:
    """The fixed gain G = sqrt(C kh kw) applied to every feature map."""
    return math.sqrt(channels * kh * kw)


def normalised_error(psfs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|| p / ||p|| - t / ||t|| || per tile (over channels and pixels): 0 = same shape, sqrt(2) = disjoint."""
    p = psfs.flatten(1)
    t = target.flatten(1)
    p = p / p.norm(dim=1, keepdim=True).clamp_min(1e-30)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (p - t).norm(dim=1)


def check_library(config: MetasurfaceConfig, lib: MetaAtomLibrary) -> list[int]:
    """One-line UserErrors when the library does not describe the configured pillars; returns the
    library row of each channel's wavelength."""
    meta = lib.metadata
    for key, cfg_key, value in (("period_nm", "period_nm", config.period_nm),
                                ("height_nm", "pillar_height_nm", config.pillar_height_nm)):
        if key in meta and abs(float(meta[key]) - value) > 0.5:
            raise UserError(
                f"optics.{cfg_key}: {value:g} nm, but the meta-atom library was made for {float(meta[key]):g} nm; "
                f"build one with `onnx-run metasurface build-library` and set optics.library")
    if "material" in meta and str(meta["material"]).lower() != config.material.lower():
        raise UserError(f"optics.material: {config.material!r}, but the meta-atom library is for {meta['material']!r}")
    lib.check_widths(config.min_width_nm, config.max_width_nm, key="optics.min_width_nm/max_width_nm")
    return [lib.wavelength_index(w, key="optics.wavelengths_nm") for w in config.design_wavelengths_nm]


class MetasurfaceFrontend(OpticalFrontend):
    """See the module docstring. Built from a :class:`MetasurfaceConfig`."""

    capabilities = frozenset({"perturb_kernels"})

    def __init__(self, config: MetasurfaceConfig, *, init_widths: bool = True):
        super().__init__(config)
        self._layout = layout_for(config)
        self.mode = config.mode
        self.in_channels = config.channels
        self.input_size = (config.input_size_px, config.input_size_px)
        self.signed = config.signed
        k = config.kernel_size
        self.num_tiles = self._layout.num_kernels * config.tiles_per_kernel
        self.gain = output_gain(config.channels, k, k)
        self.wavelength_rows = check_library(config, self.library())
        # fabrication state: changed only on copies, by the error models of this plugin
        self.distance_error_m = 0.0
        self.sensor_shift_m = (0.0, 0.0)
        self.wavelength_shift_nm: tuple[float, ...] = (0.0,) * config.channels
        self.width_clip_nm: tuple[float, float] | None = None
        self._psf_cache: tuple[tuple, torch.Tensor] | None = None
        shape = (self.num_tiles, config.channels, k, k)
        if self.mode == "kernel":
            self.psf_logits = nn.Parameter(torch.randn(shape))
            self.efficiency_logits = nn.Parameter(0.5 * torch.randn(self.num_tiles, config.channels))
        else:
            n = config.pillars
            self.width_logits = nn.Parameter(torch.zeros(self.num_tiles, n, n))
            self.tile_gain = nn.Parameter(torch.ones(self.num_tiles))
            # what realisation aimed at (zeros: trained physically, no target)
            self.register_buffer("target_psfs", torch.zeros(shape))
            if init_widths:
                self._init_random_widths()

    # -- configuration ------------------------------------------------------------------------
    def library(self) -> MetaAtomLibrary:
        return load_library(self.config.library)

    @classmethod
    def layout_for(cls, config: MetasurfaceConfig) -> Layout:
        """The physical layout of ``config`` without building a model (UserError if it does not fit)."""
        return layout_for(config)

    def layout(self) -> Layout:
        return self._layout

    def tile_centres_mm(self) -> np.ndarray:
        return tile_centres_mm(self.config, self._layout)

    def geometry(self) -> TileGeometry:
        """The sub-aperture/sensor geometry, including fabrication errors set on this copy."""
        c = self.config
        lams = tuple((w + s) * 1e-9 for w, s in zip(c.design_wavelengths_nm, self.wavelength_shift_nm))
        return TileGeometry(c.pillars, c.period_nm * 1e-9, lams, c.distance_mm * 1e-3 + self.distance_error_m,
                            (c.kernel_size, c.kernel_size), c.sensor_pitch_um * 1e-6,
                            (float(self.sensor_shift_m[0]), float(self.sensor_shift_m[1])))

    # -- physical model ------------------------------------------------------------------------
    def _require_physical(self, what: str) -> None:
        if self.mode != "physical":
            raise NotImplementedError(f"{what} needs a physical metasurface (a width map); realise the kernel-mode "
                                      f"frontend first")

    def widths_nm(self) -> torch.Tensor:
        """Pillar widths (tiles, N, N) in nm as fabricated: design + fabrication offsets, clipped."""
        self._require_physical("widths_nm")
        c = self.config
        w = c.min_width_nm + (c.max_width_nm - c.min_width_nm) * torch.sigmoid(self.width_logits)
        offset = getattr(self, "width_offset_nm", None)
        if offset is not None:
            w = w + offset
        if self.width_clip_nm is not None:
            w = w.clamp(*self.width_clip_nm)
        return w

    def design_widths_nm(self) -> torch.Tensor:
        """The designed widths (no fabrication error): what the GDS holds."""
        self._require_physical("design_widths_nm")
        c = self.config
        return c.min_width_nm + (c.max_width_nm - c.min_width_nm) * torch.sigmoid(self.width_logits)

    def set_widths_nm(self, widths: torch.Tensor) -> None:
        """Set the design to these widths (clamped into the fabricable range)."""
        c = self.config
        frac = (widths.detach().to(self.width_logits) - c.min_width_nm) / (c.max_width_nm - c.min_width_nm)
        lim = 1.0 / (1.0 + math.exp(LOGIT_LIMIT))
        with torch.no_grad():
            self.width_logits.copy_(torch.logit(frac.clamp(lim, 1 - lim)))
        self._psf_cache = None

    def _transmission(self, widths: torch.Tensor, channel: int) -> torch.Tensor:
        lib = self.library()
        row = self.wavelength_rows[channel]
        shift = self.wavelength_shift_nm[channel]
        if shift == 0.0:
            return lib.transmission(widths, [row])[0]
        # off the tabulated wavelength: propagation phase of a waveguide mode scales as 1/lambda
        # (dispersion of the pillars neglected); unwrapped phase, so the scaling is continuous
        lam = float(lib.wavelengths_nm[row])
        amp = lib.amplitude_at(widths, [row])[0]
        phase = lib.phase(widths, [row])[0] * (lam / (lam + shift))
        return torch.polar(amp, phase)

    def psfs_from_widths(self, widths_nm: torch.Tensor) -> torch.Tensor:
        """Physical PSFs (tiles, C, kh, kw) of a width map (tiles, N, N)."""
        geom = self.geometry()
        scale = geom.sensor_pitch_m**2 / geom.aperture_m**2
        out = []
        for ch in range(self.in_channels):
            t = self._transmission(widths_nm, ch)
            out.append(operator(geom, ch, t.device, t.dtype).pixel_power(t) * scale)
        return torch.stack(out, dim=1)

    def _cache_key(self) -> tuple:
        tensors = [*self.parameters(), *self.buffers()]
        return (tuple((t.data_ptr(), t._version, t.device.type) for t in tensors), self.distance_error_m,
                tuple(self.sensor_shift_m), tuple(self.wavelength_shift_nm), self.width_clip_nm)

    def psfs(self) -> torch.Tensor:
        """Optical PSFs (tiles, C, kh, kw) before the digital gains, as fractions of the light."""
        if self.mode == "kernel":
            eta = torch.sigmoid(self.efficiency_logits)[..., None, None]
            return eta * torch.softmax(self.psf_logits.flatten(2), dim=-1).view_as(self.psf_logits)
        frozen = not any(p.requires_grad for p in self.parameters())
        if frozen or not torch.is_grad_enabled():
            key = self._cache_key()
            if self._psf_cache is not None and self._psf_cache[0] == key:
                return self._psf_cache[1]
            with torch.no_grad():
                value = self.psfs_from_widths(self.widths_nm())
            self._psf_cache = (key, value)
            return value
        return self.psfs_from_widths(self.widths_nm())

    def effective_psfs(self) -> torch.Tensor:
        """G g_t p_t: what each tile contributes to the features (tiles, C, kh, kw)."""
        p = self.psfs()
        if self.mode == "physical":
            p = p * self.tile_gain[:, None, None, None]
        return p * self.gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = incoherent_conv(x, self.effective_psfs().to(x.dtype))
        return subtract_pairs(feats, dim=-3) if self.signed else feats

    def kernels(self) -> torch.Tensor:
        """Signed effective kernels (K, C, kh, kw) in sensor pixels."""
        with torch.no_grad():
            p = self.effective_psfs().detach().clone()
        return subtract_pairs(p, dim=0) if self.signed else p

    def perturb_kernels(self, relative_sigma: float, generator: torch.Generator) -> OpticalFrontend:
        """A frozen copy whose PSF values are scaled by 1 + sigma N(0, 1) (kept >= 0)."""
        with torch.no_grad():
            p = self.effective_psfs().detach()
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)  # CPU-seeded: any device
        return FixedPSFFrontend(self.config, (p * (1 + relative_sigma * noise)).clamp_min(0))

    # -- initialisation and realisation ------------------------------------------------------
    def _design_channel(self) -> int:
        """The channel whose wavelength starts a design: the one nearest 532 nm (the middle of RGB)."""
        lams = self.config.design_wavelengths_nm
        return int(np.argmin([abs(w - 532.0) for w in lams]))

    def _widths_from_phase(self, phase: np.ndarray) -> torch.Tensor:
        ch = self._design_channel()
        c = self.config
        w = self.library().widths_for_phase(phase, self.wavelength_rows[ch], c.min_width_nm, c.max_width_nm)
        return torch.as_tensor(w, dtype=torch.float32)

    def _init_random_widths(self) -> None:
        """Random kernels for a physical frontend trained from scratch: a random field inside each
        tile's window, traced back to the aperture (phase only) -> a speckle PSF in the window."""
        geom = self.geometry()
        ch = self._design_channel()
        op = operator(geom, ch, "cpu", torch.complex64)
        inside = ((op.pix_y[:, None] >= 0) & (op.pix_x[None, :] >= 0)).to(torch.float32)
        shape = (self.num_tiles, *inside.shape)
        field = torch.polar(torch.rand(shape), torch.rand(shape) * (2 * math.pi)) * inside
        phase = torch.angle(op.adjoint(field)).numpy()
        self.set_widths_nm(self._widths_from_phase(phase))

    def realise(self, *, progress: bool = True) -> tuple[OpticalFrontend, dict[str, Any]]:
        """Kernel mode: design each tile's widths so its PSF matches the trained one (Adam on the
        widths in um, the paper's setting; loss between L2-normalised PSF and target), fit the
        digital gains, return the physical frontend and a report. Physical mode: already real."""
        if self.mode == "physical":
            return copy.deepcopy(self), {"exact": True, "mode": "physical"}
        t0 = time.perf_counter()
        with torch.no_grad():
            target = self.psfs().detach().float()
        # designed where this frontend lives (a GPU run realises on the GPU)
        phys = MetasurfaceFrontend(attrs.evolve(self.config, mode="physical"), init_widths=False).to(target.device)
        report = phys.design(target, progress=progress)
        report["seconds"] = round(time.perf_counter() - t0, 2)
        return phys, report

    def design(self, target: torch.Tensor, *, progress: bool = True, generator: torch.Generator | None = None,
               iterations: int | None = None) -> dict[str, Any]:
        """Design this physical frontend's widths for ``target`` PSFs (tiles, C, kh, kw); fit gains."""
        from onnx_run.progress import bar as progress_bar

        self._require_physical("design")
        c = self.config
        iters = c.realise_iterations if iterations is None else iterations
        gen = generator or torch.Generator().manual_seed(0)  # a CPU generator: the same start anywhere
        device = self.width_logits.device
        target = target.detach().to(device=device, dtype=torch.float32)
        geom = self.geometry()
        ch = self._design_channel()
        if c.realise_init == "gs":
            phase = gerchberg_saxton(target[:, ch], geom, ch, iterations=c.gs_iterations, generator=gen).cpu().numpy()
        else:
            phase = np.broadcast_to(lens_phase(geom, ch), (self.num_tiles, c.pillars, c.pillars))
        widths = self._widths_from_phase(phase).to(device).requires_grad_(True)  # the library lookup is numpy
        with torch.no_grad():
            err0 = normalised_error(self.psfs_from_widths(widths), target)
        # Adam is invariant to the gradient's scale but not to the parameter's: the paper's lr is
        # per um of width, so in nm it is 1000x larger (same steps)
        lr_nm = c.realise_lr * 1000.0
        try:
            opt = torch.optim.Adam([widths], lr=lr_nm, fused=True)
        except (RuntimeError, TypeError):  # no fused kernel on this build/device
            opt = torch.optim.Adam([widths], lr=lr_nm)
        history = []
        # Adam at a fixed lr jitters around the optimum at the end: keep the best iterate seen
        best_loss, best = float(err0.pow(2).sum()), widths.detach().clone()
        bar = progress_bar(range(iters), desc="realise metasurface", enabled=progress)
        for it in bar:
            opt.zero_grad(set_to_none=True)
            err = normalised_error(self.psfs_from_widths(widths), target)
            loss = err.pow(2).sum()
            value = float(loss.detach())
            if value < best_loss:
                best_loss = value
                best.copy_(widths.detach())
            loss.backward()
            opt.step()
            with torch.no_grad():
                widths.clamp_(c.min_width_nm, c.max_width_nm)
            if it % 50 == 0 or it == iters - 1:
                mean = float(err.detach().mean())
                history.append([it, round(mean, 5)])
                bar.set_postfix(fit=f"{mean:.4f}")
        if iters:
            with torch.no_grad():  # the last step's result has not been scored yet
                last = float(normalised_error(self.psfs_from_widths(widths), target).pow(2).sum())
            if last < best_loss:
                best.copy_(widths.detach())
        self.set_widths_nm(best)
        with torch.no_grad():
            psf = self.psfs_from_widths(self.widths_nm())
            err = normalised_error(psf, target)
            # digital gain per tile: least squares g p ~ target (energy the trained kernel asked for)
            num = (psf * target).flatten(1).sum(1)
            den = psf.pow(2).flatten(1).sum(1).clamp_min(1e-30)
            self.tile_gain.copy_(num / den)
            self.target_psfs.copy_(target)
            self._psf_cache = None
            real = self.kernels()
            want = target * self.gain
            want = subtract_pairs(want, dim=0) if self.signed else want
            kerr = (real - want).flatten(1).norm(dim=1) / want.flatten(1).norm(dim=1).clamp_min(1e-30)
        return {
            "mode": "kernel -> physical",
            "fit_error_per_kernel": [round(float(e), 5) for e in kerr],
            "fit_error_mean": round(float(kerr.mean()), 5),
            "psf_error_per_tile": [round(float(e), 5) for e in err],
            "psf_error_mean": round(float(err.mean()), 5),
            "psf_error_initial_mean": round(float(err0.mean()), 5),
            "psf_efficiency_mean": round(float(psf.flatten(2).sum(-1).mean()), 5),
            "tile_gain_range": [round(float(self.tile_gain.detach().min()), 4),
                                round(float(self.tile_gain.detach().max()), 4)],
            "iterations": iters, "lr": c.realise_lr, "init": c.realise_init,
            "history": history,
            "pillars": int(self.num_tiles * c.pillars**2),
            "library": self.library().summary(),
        }

    def load_realised(self, state: dict[str, Any]) -> OpticalFrontend:
        """Rebuild the physical frontend that :meth:`realise` returned, from its state dict."""
        phys = MetasurfaceFrontend(attrs.evolve(self.config, mode="physical"), init_widths=False)
        try:
            phys.load_state_dict(state)
        except RuntimeError as exc:
            msg = " ".join(str(exc).split())[:200]
            raise UserError(f"realised metasurface state does not match optics config ({msg})") from None
        return phys



class FixedPSFFrontend(OpticalFrontend):
    """A frontend frozen at given effective PSFs (tiles, C, kh, kw): what ``kernel-error`` makes."""

    capabilities = frozenset({"perturb_kernels"})

    def __init__(self, config: MetasurfaceConfig, effective_psfs: torch.Tensor):
        super().__init__(config)
        self._layout = layout_for(config)
        self.in_channels = config.channels
        self.input_size = (config.input_size_px, config.input_size_px)
        self.signed = config.signed
        self.register_buffer("fixed_psfs", effective_psfs.detach().clone())

    def layout(self) -> Layout:
        return self._layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = incoherent_conv(x, self.fixed_psfs.to(x.dtype))
        return subtract_pairs(feats, dim=-3) if self.signed else feats

    def kernels(self) -> torch.Tensor:
        p = self.fixed_psfs.detach().clone()
        return subtract_pairs(p, dim=0) if self.signed else p

    def perturb_kernels(self, relative_sigma: float, generator: torch.Generator) -> OpticalFrontend:
        p = self.fixed_psfs
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        return FixedPSFFrontend(self.config, (p * (1 + relative_sigma * noise)).clamp_min(0))
