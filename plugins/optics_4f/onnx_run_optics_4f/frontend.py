"""The 4f frontend: an incoherent (by default) 4f system with a learnable Fourier-plane mask.

Chain (Chang et al., Sci. Rep. 2018): the input intensity image is shown on an incoherent display
in the front focal plane of lens 1, at the sensor pitch (unit magnification, f1 = f2 = f). A mask
(SLM or DOE: ``slm_pixels`` of ``slm_pitch_um``, limited phase range and bit depth) sits in the
Fourier plane; lens 2 images onto the sensor. The coherent impulse response in the read-out frame
is ``h = IFT[mask]`` scaled to sensor coordinates by lambda f, the intensity PSF is ``|h|^2``, and
the sensor image is the input intensity convolved with it.

One mask makes one PSF that holds all kernels: ``T`` tiles (K, or 2K for signed kernels as
positive/negative pairs) on a grid of tiles ``input + kernel - 1`` pixels apart, so the T
convolution outputs land side by side on the sensor without overlapping. Feature map t is the
sensor crop around tile t; signed kernels are pos - neg, subtracted digitally after capture.

By default only the kernel windows of the PSF are simulated (light elsewhere is assumed lost to
the crops); ``crosstalk=True`` simulates the whole sensor, stray light included. Outputs are
multiplied by a fixed ``gain`` (default: the number of tiles, so a tile holding its equal share
of the light sums to one) to be O(1) for the digital backend.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onnx_run.components import Layout, OpticalFrontend
from onnx_run.files import atomic_write_text, save_array, save_figure
from onnx_run.plotstyle import styled
from onnx_run.physics import (Sensor, bounded, coherent_conv, constrained_phase, incoherent_conv,
                              raw_from_bounded, raw_from_phase, requantised_raw)

from onnx_run_optics_4f.config import Optics4fConfig
from onnx_run_optics_4f.geometry import (Geometry, geometry, layout_from_geometry, sensor_matrix,
                                         warn_chain)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite (zero) gradient at 0: display intensity -> field amplitude."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


class Frontend4f(OpticalFrontend):
    """4f system with a learnable Fourier-plane mask; see the module docstring."""

    capabilities = frozenset({"perturb_kernels", "quantise_phase"})

    def __init__(self, config: Optics4fConfig | None = None):
        config = Optics4fConfig() if config is None else config
        super().__init__(config)
        g = geometry(config)  # UserError when the kernels do not fit
        warn_chain(g)
        self.geometry: Geometry = g
        self._layout = layout_from_geometry(g, config)
        self.in_channels = config.channels
        self.input_size = (config.input_size_px, config.input_size_px)
        self.gain = float(config.output_gain) if config.output_gain is not None else float(g.tiles)
        self.phase_range = config.phase_range_pi * math.pi
        m = g.slm_pixels

        k = g.kernel_px
        offs = np.arange(k) - k // 2
        self._win_y = np.concatenate([cy + offs for cy in g.centres_y_px])
        self._win_x = np.concatenate([cx + offs for cx in g.centres_x_px])
        self._register_weights("_ey", self._win_y, half=False)
        self._register_weights("_ex", self._win_x, half=True)
        if config.crosstalk:
            n = g.input_px
            self._reg_y0 = min(g.centres_y_px) - (n - 1)
            self._reg_x0 = min(g.centres_x_px) - (n - 1)
            self._register_weights("_ey_reg", np.arange(self._reg_y0, max(g.centres_y_px) + n), half=False)
            self._register_weights("_ex_reg", np.arange(self._reg_x0, max(g.centres_x_px) + n), half=True)
        # thin-element dispersion: the phase scales as design wavelength / wavelength
        scale = torch.tensor([g.design_wavelength_m / lam for lam in g.wavelengths_m], dtype=torch.float32)
        self.register_buffer("_phase_scale", scale[:, None, None], persistent=False)

        gen = torch.Generator().manual_seed(config.seed)
        if config.mask in ("phase", "complex"):
            self.phase_raw = nn.Parameter(self._initial_phase_raw(gen))
        else:
            self.register_parameter("phase_raw", None)
        if config.mask in ("amplitude", "complex"):
            init_amp = torch.rand(m, m, generator=gen) if config.mask == "amplitude" else torch.full((m, m), 0.9)
            self.amplitude_raw = nn.Parameter(raw_from_bounded(init_amp.to(torch.float32)))
        else:
            self.register_parameter("amplitude_raw", None)
        self.sensor = Sensor(read_noise_e=config.read_noise_e, adc_bits=config.adc_bits, noise=config.noise)
        # multiplicative PSF errors of a fabricated device (perturb_kernels); None: as designed
        self.register_buffer("_psf_error", None)
        self.register_buffer("_psf_error_region", None)

    # -- construction helpers ---------------------------------------------------------------
    def _register_weights(self, name: str, positions: np.ndarray, *, half: bool) -> None:
        g, coh = self.geometry, self.config.coherent
        mats = np.stack([sensor_matrix(g, lam, positions, coherent=coh, half=half) for lam in g.wavelengths_m])
        self.register_buffer(name, torch.as_tensor(mats, dtype=torch.complex64), persistent=False)

    def _initial_phase_raw(self, gen: torch.Generator) -> torch.Tensor:
        """Random phase, or a Gerchberg-Saxton phase whose PSF tiles hold random kernels.

        GS runs at the design wavelength on the DFT grid; each DFT sample takes the target of the
        sensor pixel it falls in.
        """
        cfg, g = self.config, self.geometry
        m, n_fft = g.slm_pixels, g.fft_size
        phase = torch.rand(m, m, generator=gen, dtype=torch.float64) * 2 * math.pi
        if cfg.init == "gerchberg_saxton" and cfg.init_iterations > 0:
            k = g.kernel_px
            if cfg.signed:
                w = torch.randn(cfg.num_kernels, k, k, generator=gen, dtype=torch.float64)
                tiles = torch.cat([w.clamp(min=0), (-w).clamp(min=0)])
            else:
                tiles = torch.rand(cfg.num_kernels, k, k, generator=gen, dtype=torch.float64)
            full = torch.zeros(g.rows * g.cols, k, k, dtype=torch.float64)
            full[: g.tiles] = tiles
            target = full.reshape(g.rows, g.cols, k, k).permute(0, 2, 1, 3).reshape(g.rows * k, g.cols * k)
            # DFT sample j (FFT order) sits at z = j' dz, j' in [-N/2, N/2); dz = L / N
            period_px = g.period_px[int(np.argmin([abs(l - g.design_wavelength_m) for l in g.wavelengths_m]))]
            zpx = np.rint((np.fft.fftfreq(n_fft) * n_fft) * period_px / n_fft).astype(int)

            def index_map(win: np.ndarray) -> torch.Tensor:
                where = {int(v): i for i, v in enumerate(win)}
                return torch.as_tensor([where.get(int(v), -1) for v in zpx])

            iy, ix = index_map(self._win_y), index_map(self._win_x)
            padded = torch.cat([target, torch.zeros(1, target.shape[1], dtype=target.dtype)], 0)
            padded = torch.cat([padded, torch.zeros(padded.shape[0], 1, dtype=target.dtype)], 1)
            amp = padded[iy][:, ix].sqrt().to(torch.float32)
            periodic = self.phase_range >= 2 * math.pi - 1e-9
            t = torch.polar(torch.ones(m, m), phase.to(torch.float32))
            for _ in range(cfg.init_iterations):
                field = torch.fft.ifft2(t, s=(n_fft, n_fft))
                field = field * (amp / field.abs().clamp(min=1e-30))
                t = torch.fft.fft2(field)[:m, :m]
                if periodic:
                    t = t / t.abs().clamp(min=1e-30)
                else:
                    lim = constrained_phase(raw_from_phase(t.angle(), phase_range=self.phase_range),
                                            phase_range=self.phase_range)
                    t = torch.polar(torch.ones_like(lim), lim)
            phase = t.angle().to(torch.float64)
        return raw_from_phase(phase, phase_range=self.phase_range).to(torch.float32)

    # -- the mask ------------------------------------------------------------------------------
    def phase(self) -> torch.Tensor:
        """Mask phase (M, M) at the design wavelength, in the device's range and levels."""
        if self.phase_raw is None:
            m = self.geometry.slm_pixels
            return torch.zeros(m, m, device=self._phase_scale.device)
        return constrained_phase(self.phase_raw, phase_range=self.phase_range, bits=self.config.phase_bits)

    def amplitude(self) -> torch.Tensor:
        """Mask amplitude transmission (M, M) in [0, 1] (ones for a phase-only mask)."""
        if self.amplitude_raw is None:
            ref = self.phase_raw
            return torch.ones_like(ref)
        return bounded(self.amplitude_raw)

    def transmission(self) -> torch.Tensor:
        """Complex mask transmission per wavelength channel, (C, M, M)."""
        phi = self.phase()
        amp = self.amplitude()
        phase_c = phi[None] * self._phase_scale.to(phi.dtype)
        return torch.polar(amp[None].expand_as(phase_c), phase_c)

    def _operand(self) -> torch.Tensor:
        """What the sensor matrices act on, per channel: the half spectrum of the PSF (incoherent,
        (C, N, N/2 + 1)) or the mask transmission itself (coherent, (C, M, M))."""
        t = self.transmission()
        if self.config.coherent:
            return t
        g = self.geometry
        n = g.fft_size
        # inverse DFT of the zero-padded mask, rows first on the M non-zero rows only
        a = torch.fft.ifft(t, n=n, dim=-1, norm="forward")
        a = torch.fft.ifft(a, n=n, dim=-2, norm="forward")
        power = (a.real**2 + a.imag**2) / (n * g.slm_pixels) ** 2  # sums to mean |t|^2
        return torch.fft.rfft2(power)

    def _project(self, operand: torch.Tensor, ey: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
        ey, ex = ey.to(operand.dtype), ex.to(operand.dtype)
        out = ey @ operand @ ex.transpose(-1, -2)
        return out if self.config.coherent else out.real

    def _tiles(self, win: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        k = g.kernel_px
        c = win.shape[0]
        tiles = win.reshape(c, g.rows, k, g.cols, k).permute(1, 3, 0, 2, 4).reshape(g.rows * g.cols, c, k, k)
        return tiles[: g.tiles]

    def _with_error(self, psf: torch.Tensor, error: torch.Tensor | None) -> torch.Tensor:
        if error is None:
            return psf
        error = error.to(device=psf.device, dtype=psf.real.dtype)
        return psf * (error.sqrt() if self.config.coherent else error)

    def _window_tiles(self, operand: torch.Tensor) -> torch.Tensor:
        return self._with_error(self._tiles(self._project(operand, self._ey, self._ex)), self._psf_error)

    def _region(self, operand: torch.Tensor) -> torch.Tensor:
        return self._with_error(self._project(operand, self._ey_reg, self._ex_reg), self._psf_error_region)

    def psf_tiles(self) -> torch.Tensor:
        """Per-tile kernels (T, C, kh, kw): intensity PSF windows (incoherent, >= 0) or complex
        amplitude windows (coherent). Tile order: positive parts, then negative parts."""
        return self._window_tiles(self._operand())

    def perturb_kernels(self, sigma: float, generator: torch.Generator) -> "Frontend4f":
        """A frozen copy whose PSF values are scaled by ``max(0, 1 + sigma N(0, 1))``, sampled
        once (the core's ``kernel-error`` model: a fabricated device's kernel error delta)."""
        clone = self.frozen()
        g = self.geometry
        k = g.kernel_px

        def sample(shape: tuple[int, ...], old: torch.Tensor | None) -> torch.Tensor:
            err = (1 + sigma * torch.randn(shape, generator=generator)).clamp_min(0)
            err = err.to(self._phase_scale.device)
            return err if old is None else old * err

        clone._psf_error = sample((g.tiles, self.in_channels, k, k), self._psf_error)
        if self.config.crosstalk:
            shape = (self.in_channels, self._ey_reg.shape[1], self._ex_reg.shape[1])
            clone._psf_error_region = sample(shape, self._psf_error_region)
        return clone

    def quantise_phase(self, bits: int) -> "Frontend4f":
        """A frozen copy whose mask phase is rounded to 2**bits levels over its range (the core's
        ``phase-quantisation`` model: a modulator with fewer levels than the design)."""
        if self.phase_raw is None:  # an amplitude-only mask has no phase to quantise
            raise NotImplementedError(f"the 4f mask is {self.config.mask!r}: it has no phase levels")
        clone = self.frozen()
        clone.phase_raw.copy_(requantised_raw(self.phase_raw, phase_range=self.phase_range, bits=bits))
        return clone

    def kernels(self, *, include_gain: bool = False) -> torch.Tensor:
        """Effective signed kernels (K, C, kh, kw) in sensor pixels (true convolution, centred).

        Incoherent: ``forward(x) == gain * conv(x, kernels())`` (noise off, crosstalk off).
        Coherent: the intensity response to a single lit pixel, ``|h|^2`` windows.
        """
        tiles = self.psf_tiles()
        if self.config.coherent:
            tiles = tiles.real**2 + tiles.imag**2
        k = self.config.num_kernels
        out = tiles[:k] - tiles[k: 2 * k] if self.config.signed else tiles
        return out * self.gain if include_gain else out

    # -- forward ----------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        want = (self.in_channels, *self.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"4f frontend expects input (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(x.shape)}")

    def _crops(self, full: torch.Tensor) -> torch.Tensor:
        """Cut the T feature maps out of a full sensor image (B, H_s, W_s)."""
        g, n = self.geometry, self.geometry.input_px
        maps = []
        for t in range(g.tiles):
            cy, cx = g.tile_centre(t)
            y0, x0 = cy - self._reg_y0, cx - self._reg_x0
            maps.append(full[..., y0: y0 + n, x0: x0 + n])
        return torch.stack(maps, dim=1)

    def capture(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sensor crops of every tile (B, T, H, W), >= 0 before any subtraction, gain applied.

        The gain multiplies the kernels (not the much larger images); sensor noise, when on, is
        drawn per tile before the digital subtraction of signed pairs.
        """
        self._check_input(x)
        cfg = self.config
        operand = self._operand()
        if not cfg.coherent:
            if not cfg.crosstalk:
                psf = self._window_tiles(operand) * self.gain
                out = incoherent_conv(x, psf.to(x.dtype), mode="same", method="direct")
            else:
                region = self._region(operand) * self.gain
                full = incoherent_conv(x, region[None].to(x.dtype), mode="full", method="fft")[:, 0]
                out = self._crops(full)
        else:
            amp = _safe_sqrt(x)
            root_gain = math.sqrt(self.gain)
            if not cfg.crosstalk:
                h = self._window_tiles(operand) * root_gain
                out = sum(coherent_conv(amp[:, c: c + 1], h[:, c: c + 1], mode="same", method="direct").abs() ** 2
                          for c in range(self.in_channels))
            else:
                region = self._region(operand) * root_gain
                full = sum(coherent_conv(amp[:, c: c + 1], region[None, c: c + 1], mode="full", method="fft")[:, 0].abs() ** 2
                           for c in range(self.in_channels))
                out = self._crops(full)
        if cfg.noise or cfg.adc_bits:
            out = self.sensor(out * cfg.electrons_per_unit, generator=generator) / cfg.electrons_per_unit
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps (B, K, H, W): signed pairs subtracted after capture."""
        cfg = self.config
        if not (cfg.coherent or cfg.crosstalk or cfg.noise or cfg.adc_bits):
            # linear and noise-free: capturing the pairs and subtracting equals one convolution
            # with the signed kernels, at half the cost
            self._check_input(x)
            return incoherent_conv(x, self.kernels(include_gain=True).to(x.dtype), mode="same", method="direct")
        cap = self.capture(x)
        if cfg.signed:
            k = cfg.num_kernels
            return cap[:, :k] - cap[:, k: 2 * k]
        return cap

    # -- layout and export --------------------------------------------------------------------
    def layout(self) -> Layout:
        return self._layout

    @staticmethod
    def layout_for(config: Optics4fConfig) -> Layout:
        """Layout of ``config`` without building the model; UserError when nothing fits."""
        return layout_from_geometry(geometry(config), config)

    @styled
    def export(self, out_dir: Path) -> list[Path]:
        """Write mask.npy (complex transmission at the design wavelength), slm_levels.npy (device
        levels, when quantised), kernels.npy (K, C, kh, kw), layout.json and PNG previews."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cfg, g = self.config, self.geometry
        with torch.no_grad():
            phase = self.phase().detach().cpu().double()
            amp = self.amplitude().detach().cpu().double()
            mask = torch.polar(amp, phase).numpy().astype(np.complex64)
            kern = self.kernels().detach().cpu().numpy().astype(np.float32)
        paths = []
        p = out / "mask.npy"
        save_array(p, mask)
        paths.append(p)
        if self.phase_raw is not None and cfg.phase_bits:
            n = 2**cfg.phase_bits
            periodic = self.phase_range >= 2 * math.pi - 1e-9
            step = self.phase_range / n if periodic else self.phase_range / (n - 1)
            levels = np.mod(np.rint(phase.numpy() / step), n).astype(np.uint16 if n > 256 else np.uint8)
            p = out / "slm_levels.npy"
            save_array(p, levels)
            paths.append(p)
        p = out / "kernels.npy"
        save_array(p, kern)
        paths.append(p)
        p = out / "layout.json"
        atomic_write_text(p, json.dumps({"num_kernels": self._layout.num_kernels, "rows": self._layout.rows,
                                 "cols": self._layout.cols, "kernel_size_px": self._layout.kernel_size_px,
                                 "gain": self.gain, "details": dict(self._layout.details)}, indent=2))
        paths.append(p)

        size_mm = g.slm_pixels * g.slm_pitch_m * 1e3
        ext = [-size_mm / 2, size_mm / 2, -size_mm / 2, size_mm / 2]  # row i at y = (i - N/2) pitch: y up
        previews = [("mask_phase.png", np.mod(phase.numpy(), 2 * math.pi), "twilight", (0, 2 * math.pi),
                     f"mask phase at {g.design_wavelength_m * 1e9:.0f} nm (rad)")]
        if self.amplitude_raw is not None:
            previews.append(("mask_amplitude.png", amp.numpy(), "gray", (0, 1), "mask amplitude"))
        for name, img, cmap, lim, title in previews:
            fig = Figure(figsize=(5, 4.2))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            im = ax.imshow(img, cmap=cmap, vmin=lim[0], vmax=lim[1], extent=ext, origin="lower")
            ax.set_xlabel("x (mm)")
            ax.set_ylabel("y (mm)")
            ax.set_title(title)
            fig.colorbar(im, ax=ax)
            p = out / name
            save_figure(fig, p, dpi=100)
            paths.append(p)
        return paths

    def extra_repr(self) -> str:
        c, g = self.config, self.geometry
        return (f"mask={c.mask} {g.slm_pixels}x{g.slm_pixels} @ {c.slm_pitch_um} um, f={c.focal_length_mm} mm, "
                f"{c.num_kernels}{' signed' if c.signed else ''} kernels {c.kernel_size}x{c.kernel_size} in "
                f"{g.rows}x{g.cols} tiles, {'coherent' if c.coherent else 'incoherent'}, gain={self.gain:g}")

