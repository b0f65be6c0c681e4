"""The diffractive frontend: L thin layers of neurons, free space between them, a sensor.

Light model (docs/diffractive.md has the reasoning):

* Input: a coherent, monochromatic plane wave through an amplitude mask / SLM showing the image,
  amplitude = sqrt(intensity); the image (``input_size_px``) is area-resampled onto the central
  ``object_size_neurons`` of the input plane; outside it the mask is opaque.
* Layers: thin transmissions ``A exp(i phi)`` per neuron (phase-only unless ``modulation =
  "complex"``); a layer sits in an opaque mount, so light outside its N x N window is lost.
* Gaps: band-limited angular spectrum on a zero-padded window (transfer functions and validity
  warnings from :mod:`onnx_run.physics`).
* Readout: intensity integrated over K square regions of ``kernel_size`` x ``kernel_size``
  sensor pixels on the output plane, summed over wavelengths (a monochrome sensor), times a
  fixed gain so that features are O(1).
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from onnx_run.components import Layout, OpticalFrontend
from onnx_run.physics import (Grid, apply_transfer_function, constrained_phase, phase_levels, pixel_overlap,
                              transfer_function)
from onnx_run.physics.parametrize import bounded, raw_from_bounded, raw_from_phase, requantised_raw

from onnx_run_optics_diffractive.config import DiffractiveConfig, Geometry, resolve

#: pose columns of a layer: lateral shift (m), rotation about the axis (rad), tilts (rad)
POSE = ("shift_y_m", "shift_x_m", "rotation_rad", "tilt_about_x_rad", "tilt_about_y_rad")
#: sub-samples per simulation cell and axis when a displaced layer is resampled
WARP_SUBSAMPLES = 4


def _overlap(n_out: int, p_out: float, n_in: int, p_in: float, rel_centre_m: float) -> np.ndarray:
    """Overlap lengths (n_out, n_in) of two pixel rows whose geometric centres are
    ``rel_centre_m`` apart (input centre minus output centre), via the physics library's
    ``pixel_overlap`` (which centres sample n at (n - N // 2) * pitch)."""
    g_out = -0.5 * p_out if n_out % 2 == 0 else 0.0
    g_in = -0.5 * p_in if n_in % 2 == 0 else 0.0
    return pixel_overlap(n_out, p_out, n_in, p_in, offset_m=rel_centre_m + g_out - g_in)


def layout_for(config: DiffractiveConfig) -> Layout:
    """How many readout regions of what size the output plane of this stack holds.

    Raises a one-line UserError (with the smallest layer that would fit) when they do not fit.
    """
    g = resolve(config)
    return _layout(config, g)


def _layout(config: DiffractiveConfig, g: Geometry) -> Layout:
    k = config.num_kernels
    return Layout(k, len(g.row_counts), max(g.row_counts), config.kernel_size, {
        "wavelength_nm": [round(lam * 1e9, 4) for lam in g.wavelengths_m],
        "layers": g.num_layers, "neurons": f"{g.num_neurons} x {g.num_neurons}",
        "neuron_pitch_um": round(g.neuron_pitch_m * 1e6, 6),
        "layer_size_mm": round(g.window_m * 1e3, 6),
        "distances_mm": [round(d * 1e3, 6) for d in g.distances_m],
        "stack_length_mm": round(sum(g.distances_m) * 1e3, 6),
        "object_size_mm": round(g.object_neurons * g.neuron_pitch_m * 1e3, 6),
        "grid": "-".join(str(c) for c in g.row_counts) + " per row",
        "region_mm": round(g.region_side_m * 1e3, 6), "region_spacing_mm": round(g.region_spacing_m * 1e3, 6),
        "sensor_pitch_um": round(g.sensor_pitch_m * 1e6, 6),
        "region_centres_mm": [[round(y * 1e3, 6), round(x * 1e3, 6)] for y, x in g.region_centres_m],
    })


class DiffractiveFrontend(OpticalFrontend):
    """A D2NN-style stack of diffractive layers read out by K sensor regions (see module doc)."""

    capabilities = frozenset({"perturb_kernels", "quantise_phase"})

    def __init__(self, config: DiffractiveConfig):
        super().__init__(config)
        g = resolve(config)
        self.geometry = g
        self.in_channels = config.channels
        self.input_size = (config.input_size_px, config.input_size_px)
        self.grid = Grid((g.sim_size, g.sim_size), g.sim_pitch_m, g.wavelengths_m)
        layers, n = g.num_layers, g.num_neurons
        if config.init == "random":
            phase0 = torch.rand(layers, n, n, dtype=torch.float64) * g.phase_range
        else:
            phase0 = torch.zeros(layers, n, n, dtype=torch.float64)
        self.phase_raw = nn.Parameter(raw_from_phase(phase0, phase_range=g.phase_range).float())
        if config.modulation == "complex":
            amp0 = torch.full((layers, n, n), 0.5 * (1 + max(config.amplitude_min, 0.9)))
            self.amplitude_raw = nn.Parameter(raw_from_bounded(amp0, config.amplitude_min, 1.0))
        else:
            self.amplitude_raw = None
        # fabrication state: zero for a design; error models fill it (persistent, so that the
        # state of a realised or fabricated stack loads into a freshly built one)
        self.register_buffer("height_error_m", torch.zeros(layers, n, n))
        self.register_buffer("distance_error_m", torch.zeros(layers + 1, dtype=torch.float64))
        self.register_buffer("pose", torch.zeros(layers, len(POSE), dtype=torch.float64))
        #: strips of the staircase model of a tilted layer (set by the tilt error model)
        self.tilt_strips = 8
        self._host_state: tuple[tuple, tuple[list[float], list[list[float]]]] | None = None
        self._build_fixed()

    # -- fixed matrices ------------------------------------------------------------------------
    def _build_fixed(self) -> None:
        g, cfg = self.geometry, self.config
        ns, dx = g.sim_size, g.sim_pitch_m
        p = cfg.input_size_px
        obj_m = g.object_neurons * g.neuron_pitch_m
        r_in = _overlap(ns, dx, p, obj_m / p, 0.0) / dx  # fraction of each sim cell per image pixel
        self.register_buffer("input_matrix", torch.as_tensor(r_in, dtype=torch.float32), persistent=False)
        ks, ps = cfg.kernel_size, g.sensor_pitch_m
        ry = [_overlap(ks, ps, ns, dx, -cy) / dx for cy, _ in g.region_centres_m]
        rx = [_overlap(ks, ps, ns, dx, -cx) / dx for _, cx in g.region_centres_m]
        self.register_buffer("region_y", torch.as_tensor(np.stack(ry), dtype=torch.float32), persistent=False)
        self.register_buffer("region_x", torch.as_tensor(np.stack(rx), dtype=torch.float32), persistent=False)
        # fixed gain: a feature of 1 is the power a sensor pixel gets when a full-white input's
        # light (all channels) is spread evenly over the whole output window
        object_cells = float(r_in.sum()) ** 2  # sim cells lit by a full-white object
        window_pixels = (g.window_m / ps) ** 2
        self.gain = cfg.output_gain * window_pixels / (cfg.channels * object_cells)
        self._warp_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    # -- contract ------------------------------------------------------------------------------
    def layout(self) -> Layout:
        return _layout(self.config, self.geometry)

    @staticmethod
    def layout_for(config: DiffractiveConfig) -> Layout:
        return layout_for(config)

    # -- the design ------------------------------------------------------------------------------
    def phases(self) -> torch.Tensor:
        """Designed phase of every neuron at the design wavelength (L, N, N), in [0, range),
        quantised (straight-through) when ``phase_bits`` > 0."""
        g = self.geometry
        return constrained_phase(self.phase_raw, phase_range=g.phase_range, bits=g.phase_bits)

    def amplitudes(self) -> torch.Tensor | None:
        if self.amplitude_raw is None:
            return None
        return bounded(self.amplitude_raw, self.config.amplitude_min, 1.0)

    def heights_m(self) -> torch.Tensor:
        """Relief height of every neuron, ``h = phi lambda / (2 pi (n - 1))``, plus any height error."""
        g = self.geometry
        return self.phases() * (g.height_2pi_m / (2 * math.pi)) + self.height_error_m

    def transmissions(self) -> torch.Tensor:
        """Complex transmission of every neuron per wavelength, (L, C, N, N).

        A height error adds ``2 pi (n - 1) dh / lambda``; each wavelength sees the height's
        phase scaled by ``lambda_design / lambda`` (no material dispersion); absorption
        ``exp(-2 pi kappa h / lambda)`` when the material has an extinction coefficient.
        """
        g = self.geometry
        phi = self.phases() + self.height_error_m * (2 * math.pi / g.height_2pi_m)
        scale = torch.as_tensor([g.wavelength_m / lam for lam in g.wavelengths_m], dtype=phi.dtype,
                                device=phi.device).view(1, -1, 1, 1)
        phi_c = phi.unsqueeze(1) * scale
        amp = self.amplitudes()
        amp = torch.ones_like(phi_c) if amp is None else amp.unsqueeze(1).expand_as(phi_c)
        kappa = self.config.extinction_coefficient
        if kappa > 0:
            h = (phi * (g.height_2pi_m / (2 * math.pi))).clamp_min(0).unsqueeze(1)
            amp = amp * torch.exp(-2 * math.pi * kappa * h * scale / g.wavelength_m)
        return torch.polar(amp, phi_c)

    # -- physics ---------------------------------------------------------------------------------
    def _transfer(self, distance_m: float, device: torch.device) -> torch.Tensor:
        cfg = self.config
        tf = transfer_function(self.grid, distance_m, method="angular_spectrum", pad_factor=cfg.pad_factor,
                               band_limit=cfg.band_limit, device=device, dtype=torch.complex64)
        return tf.reshape(-1, *tf.shape[-2:]) if tf.dim() > 2 else tf

    def propagate(self, field: torch.Tensor, distance_m: float) -> torch.Tensor:
        """Angular-spectrum propagation of (..., C, H, W) fields: the physics library's cached,
        band-limited, validity-checked transfer function, zero padding after the data, crop."""
        return apply_transfer_function(field, self._transfer(distance_m, field.device))

    def fabrication_state(self) -> tuple[list[float], list[list[float]]]:
        """(gap errors in m, layer poses) as Python numbers: the forward pass builds transfer
        functions and resampling indices from them. Read from the buffers once per change
        (in-place edits, loads and moves make new keys), not once per forward: on a GPU each
        read waits for the device."""
        if not self._host_state_current():
            self._host_state = (self._state_key(), (self.distance_error_m.tolist(), self.pose.tolist()))
        assert self._host_state is not None
        return self._host_state[1]

    def _state_key(self) -> tuple:
        d, p = self.distance_error_m, self.pose
        return (weakref.ref(d), d._version, weakref.ref(p), p._version)

    def _host_state_current(self) -> bool:
        if self._host_state is None:
            return False
        d_ref, d_version, p_ref, p_version = self._host_state[0]
        d, p = self.distance_error_m, self.pose  # the same tensors (identity), not edited since
        return d_ref() is d and p_ref() is p and d._version == d_version and p._version == p_version

    def _apply(self, fn, recurse=True):
        # a move keeps the fabrication state read before it (a move to 'meta' drops the values)
        state = self.fabrication_state() if self.pose.device.type != "meta" else None
        out = super()._apply(fn, recurse)
        if state is not None:
            self._host_state = (self._state_key(), state)
        return out

    def gaps_m(self) -> list[float]:
        errors, _ = self.fabrication_state()
        return [d + e for d, e in zip(self.geometry.distances_m, errors)]

    def input_field(self, x: torch.Tensor) -> torch.Tensor:
        """Complex field (B, C, Ns, Ns) just after the input mask: sqrt(intensity) resampled."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"expected input (B, {self.in_channels}, {self.input_size[0]}, {self.input_size[1]}), "
                             f"got {tuple(x.shape)}")
        amp = x.clamp_min(0).sqrt().to(self.input_matrix.dtype)
        field = self.input_matrix @ amp @ self.input_matrix.transpose(0, 1)
        return field.to(torch.complex64)

    def layer_transmissions(self) -> torch.Tensor:
        """Transmissions on the simulation grid, (L, C, Ns, Ns), with layer poses applied."""
        t = self.transmissions()
        _, poses = self.fabrication_state()
        out = []
        for l in range(t.shape[0]):
            if any(poses[l]):
                out.append(self._warp(t[l], l))
            elif self.geometry.samples > 1:
                s = self.geometry.samples
                out.append(t[l].repeat_interleave(s, -2).repeat_interleave(s, -1))
            else:
                out.append(t[l])
        return torch.stack(out)

    def _warp_indices(self, l: int) -> torch.Tensor:
        """For each simulation cell, the neuron under each of its sub-samples (N*N: outside)."""
        g = self.geometry
        pose = self.fabrication_state()[1][l]
        key = ("warp", l, tuple(pose), self.pose.device)  # per device: no copy to it per forward
        if key in self._warp_cache:
            return self._warp_cache[key][0]
        dy, dx, rot, tx, ty = pose
        ns, p, n = g.sim_size, g.sim_pitch_m, g.num_neurons
        s = WARP_SUBSAMPLES
        sub = (np.arange(s) + 0.5) / s - 0.5
        c = ((np.arange(ns) - (ns - 1) / 2)[:, None] + sub[None, :]) * p  # (ns, s) sub-sample positions
        yy = c[:, :, None, None] - dy  # (ns, s, 1, 1)
        xx = c[None, None, :, :] - dx  # (1, 1, ns, s)
        yy, xx = np.broadcast_arrays(yy, xx)
        # undo the rotation about the axis, then the foreshortening of a tilted layer
        cr, sr = math.cos(rot), math.sin(rot)
        u = (cr * yy + sr * xx) / math.cos(tx)
        w = (-sr * yy + cr * xx) / math.cos(ty)
        iy = np.floor(u / g.neuron_pitch_m + n / 2).astype(np.int64)
        ix = np.floor(w / g.neuron_pitch_m + n / 2).astype(np.int64)
        inside = (iy >= 0) & (iy < n) & (ix >= 0) & (ix < n)
        idx = np.where(inside, iy * n + ix, n * n)
        idx = torch.as_tensor(idx.transpose(0, 2, 1, 3).reshape(ns, ns, s * s)).to(self.pose.device)
        self._warp_cache[key] = (idx,)
        return idx

    def _warp(self, t: torch.Tensor, l: int) -> torch.Tensor:
        """Transmission (C, N, N) of a displaced / rotated / foreshortened layer on the sim grid:
        the area mean of the pixelated layer over each cell, opaque mount outside it."""
        idx = self._warp_indices(l)
        flat = torch.cat([t.flatten(-2), torch.zeros_like(t[..., :1, 0])], dim=-1)  # (C, N*N + 1)
        return flat[:, idx].mean(-1)

    def _tilt_strips(self, l: int) -> tuple[torch.Tensor, list[float]] | None:
        """Masks (S, Ns, Ns) and axial offsets of the staircase model of a tilted layer."""
        tx, ty = self.fabrication_state()[1][l][3:5]
        if tx == 0 and ty == 0:
            return None
        key = ("tilt", l, tx, ty, self.tilt_strips, self.pose.device)
        if key not in self._warp_cache:
            g = self.geometry
            c = (np.arange(g.sim_size) - (g.sim_size - 1) / 2) * g.sim_pitch_m
            dz = c[:, None] * math.sin(tx) + c[None, :] * math.sin(ty)
            edges = np.linspace(dz.min(), dz.max(), self.tilt_strips + 1)
            which = np.clip(np.searchsorted(edges, dz, side="right") - 1, 0, self.tilt_strips - 1)
            masks, offsets = [], []
            for s in range(self.tilt_strips):
                m = which == s
                if m.any():
                    masks.append(m)
                    offsets.append(float(dz[m].mean()))
            self._warp_cache[key] = (torch.as_tensor(np.stack(masks)).to(self.pose.device), offsets)
        masks, offsets = self._warp_cache[key]
        return masks, offsets

    def apply_layer(self, field: torch.Tensor, t: torch.Tensor, l: int) -> torch.Tensor:
        """Field just after layer ``l``. A tilted layer is a staircase of S strips, strip s
        sitting dz_s off its plane: sum_s P(-dz_s)[mask_s t P(dz_s) field]."""
        strips = self._tilt_strips(l)
        if strips is None:
            return field * t
        masks, offsets = strips
        out = torch.zeros_like(field)
        for m, dz in zip(masks, offsets):
            local = self.propagate(field, dz) * (t * m.to(t.dtype))
            out = out + self.propagate(local, -dz)
        return out

    def output_field(self, x: torch.Tensor) -> torch.Tensor:
        """Complex field (B, C, Ns, Ns) on the sensor plane."""
        gaps = self.gaps_m()
        field = self.propagate(self.input_field(x), gaps[0])
        ts = self.layer_transmissions()
        for l in range(ts.shape[0]):
            field = self.propagate(self.apply_layer(field, ts[l], l), gaps[l + 1])
        return field

    def read_regions(self, intensity: torch.Tensor) -> torch.Tensor:
        """Power on each sensor pixel of each region: (B, Ns, Ns) -> (B, K, ks, ks) (cell units)."""
        rows = torch.einsum("kin,bnm->bkim", self.region_y, intensity)
        return torch.einsum("bkim,kjm->bkij", rows, self.region_x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        field = self.output_field(x)
        intensity = (field.real.square() + field.imag.square()).sum(1)  # monochrome sensor
        return self.read_regions(intensity) * self.gain

    def kernels(self) -> torch.Tensor:
        """Point-source responses (K, C, ks, ks): intensity in each readout region for an on-axis
        point source (one simulation cell of unit amplitude at the input plane), per wavelength,
        in feature units. For figures: a coherent stack is neither shift-invariant nor linear
        in intensity, so features are *not* the input convolved with these."""
        g = self.geometry
        c = self.in_channels
        field = torch.zeros(1, c, g.sim_size, g.sim_size, dtype=torch.complex64, device=self.pose.device)
        field[..., g.sim_size // 2, g.sim_size // 2] = 1
        gaps = self.gaps_m()
        with torch.no_grad():
            field = self.propagate(field, gaps[0])
            ts = self.layer_transmissions()
            for l in range(ts.shape[0]):
                field = self.propagate(self.apply_layer(field, ts[l], l), gaps[l + 1])
            inten = field.real.square() + field.imag.square()  # (1, C, Ns, Ns)
            per = self.read_regions(inten[0])  # (C, K, ks, ks)
        return (per * self.gain).permute(1, 0, 2, 3).contiguous()

    # -- energy bookkeeping -------------------------------------------------------------------------
    @torch.no_grad()
    def power_budget(self, x: torch.Tensor) -> dict[str, Any]:
        """Where the input power goes, summed over the batch (simulation-cell units).

        Per gap: ``filtered`` (evanescent or cut by the band limit: Parseval on the padded
        spectrum, sum |U(f)|^2 (1 - |H(f)|^2) / (Hp Wp)) and ``escaped`` (propagating light that
        left the N x N window); per layer ``absorbed``; at the end ``readout`` (inside the K
        regions) and ``outside_regions``. ``input`` = sum of everything else + ``output``.
        """
        def power(u: torch.Tensor) -> float:
            return float((u.real.square() + u.imag.square()).sum())

        gaps = self.gaps_m()
        field = self.input_field(x)
        budget: dict[str, Any] = {"input": power(field), "filtered": [], "escaped": [], "absorbed": []}
        ts = self.layer_transmissions()
        for i, z in enumerate(gaps):
            tf = self._transfer(z, field.device)
            hp, wp = tf.shape[-2:]
            spec = torch.fft.fft2(field, s=(hp, wp))
            weight = (1 - (tf.real.square() + tf.imag.square())).clamp_min(0)
            budget["filtered"].append(float((spec.real.square() + spec.imag.square()).mul(weight).sum()) / (hp * wp))
            full = torch.fft.ifft2(spec * tf)
            field = full[..., : field.shape[-2], : field.shape[-1]]
            budget["escaped"].append(power(full) - power(field))
            if i < len(ts):
                before = power(field)
                field = self.apply_layer(field, ts[i], i)
                budget["absorbed"].append(before - power(field))
        inten = (field.real.square() + field.imag.square()).sum(1)
        budget["output"] = power(field)
        budget["readout"] = float(self.read_regions(inten).sum())
        budget["outside_regions"] = budget["output"] - budget["readout"]
        return budget

    # -- life cycle ---------------------------------------------------------------------------------
    def _realised_config(self) -> DiffractiveConfig:
        return attrs.evolve(self.config, phase_bits=self.geometry.realise_bits,
                            realise_phase_bits=self.geometry.realise_bits)

    def realise(self, *, progress: bool = True) -> tuple["DiffractiveFrontend", dict[str, Any]]:
        """The phase masks are the design: round them to ``realise_phase_bits`` levels if set
        (the realised stack then quantises exactly), and report heights for fabrication."""
        g = self.geometry
        bits = g.realise_bits
        with torch.no_grad():
            phi = self.phases().double()
            if bits > 0:
                levels = phase_levels(g.phase_range, bits).to(phi)
                phi_q = levels[(phi.unsqueeze(-1) - levels).abs().argmin(-1)]
                if g.phase_range >= 2 * math.pi - 1e-9:  # periodic: the top level wraps to 0
                    wrap = (phi - g.phase_range).abs() < (phi - phi_q).abs()
                    phi_q = torch.where(wrap, torch.zeros_like(phi_q), phi_q)
            else:
                phi_q = phi
        realised = self._fresh(self._realised_config())
        state = self.state_dict()
        realised.load_state_dict(state)
        realised.tilt_strips = self.tilt_strips
        with torch.no_grad():
            realised.phase_raw.copy_(raw_from_phase(phi_q, phase_range=g.phase_range).to(realised.phase_raw))
            change = (realised.phases().double() - phi).abs()
            change = torch.minimum(change, g.phase_range - change) if g.phase_range >= 2 * math.pi - 1e-9 else change
            heights = realised.heights_m().double() * 1e6
        report = {
            "exact": bool(float(change.max()) < 1e-5),
            "phase_bits": bits, "phase_levels": 2**bits if bits else None,
            "max_phase_change_rad": float(change.max()), "rms_phase_change_rad": float(change.square().mean().sqrt()),
            "height_min_um": float(heights.min()), "height_max_um": float(heights.max()),
            "height_2pi_um": g.height_2pi_m * 1e6, "material_index": g.material_index,
            "wavelength_nm": g.wavelength_m * 1e9, "layers": g.num_layers,
            "neurons": g.num_neurons, "neuron_pitch_um": g.neuron_pitch_m * 1e6,
        }
        return realised, report

    def _fresh(self, config: DiffractiveConfig) -> "DiffractiveFrontend":
        """A new stack on this one's device; its random init must not move the global RNG."""
        with torch.random.fork_rng(devices=[]):
            return DiffractiveFrontend(config).to(self.phase_raw.device)

    def load_realised(self, state: dict[str, Any]) -> "DiffractiveFrontend":
        realised = self._fresh(self._realised_config())
        realised.load_state_dict(state)
        return realised

    def perturbed(self, *, height_error_m: torch.Tensor | None = None, distance_error_m: torch.Tensor | None = None,
                  pose: torch.Tensor | None = None, tilt_strips: int | None = None) -> "DiffractiveFrontend":
        """A frozen copy with errors added to the fabrication state (errors compound)."""
        clone = copy.deepcopy(self)
        clone._warp_cache = {}
        with torch.no_grad():
            if height_error_m is not None:
                clone.height_error_m += height_error_m.to(clone.height_error_m)
            if distance_error_m is not None:
                clone.distance_error_m += distance_error_m.to(clone.distance_error_m)
            if pose is not None:
                clone.pose += pose.to(clone.pose)
        if tilt_strips is not None:
            clone.tilt_strips = tilt_strips
        for p in clone.parameters():
            p.requires_grad_(False)
        return clone

    def quantise_phase(self, bits: int) -> "DiffractiveFrontend":
        """A frozen copy whose layer phases are rounded to 2**bits levels over their range (the
        core's ``phase-quantisation`` model: a relief etched in fewer steps than designed)."""
        clone = self.perturbed()
        clone.phase_raw.copy_(requantised_raw(self.phase_raw, phase_range=self.geometry.phase_range, bits=bits))
        return clone

    def perturb_kernels(self, sigma: float, generator: torch.Generator) -> "DiffractiveFrontend":
        """The core's ``kernel-error`` on a stack: each neuron's relief height scaled by
        (1 + sigma N(0, 1)), i.e. a phase error proportional to the designed phase."""
        with torch.no_grad():
            h = self.heights_m().detach().cpu()
            noise = torch.randn(h.shape, generator=generator)
        return self.perturbed(height_error_m=sigma * noise * h)
