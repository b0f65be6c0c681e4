"""Export of a diffractive stack: what a fabricator (3D printer, lithographer, SLM driver) needs.

Per layer: the phase map (rad, at the design wavelength) and the relief height map (um, in the
configured material) as ``.npy`` (float32, N x N neurons, row 0 at the top, as seen by the
incoming light) and as PNG previews; the amplitude map for complex modulation. The physical
stack (wavelengths, pitch, distances, material, thickness range, readout regions) goes to
``stack.json`` and a human-readable ``stack.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from onnx_run.files import atomic_write_text, save_array, save_figure
from onnx_run.plotstyle import styled


if TYPE_CHECKING:
    from onnx_run_optics_diffractive.frontend import DiffractiveFrontend


def _png(path: Path, data: np.ndarray, cmap: str, vmin: float, vmax: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(path, data, cmap=cmap, vmin=vmin, vmax=vmax)
    return path


@styled
def _overview(path: Path, phases: np.ndarray, phase_range: float) -> Path:
    """All phase masks side by side, one figure for reports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = phases.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n + 0.6, 2.4), dpi=110, squeeze=False)
    for l, ax in enumerate(axes[0]):
        im = ax.imshow(phases[l], cmap="twilight", vmin=0, vmax=phase_range)
        ax.set_title(f"layer {l + 1}", fontsize=9)
        ax.axis("off")
    fig.colorbar(im, ax=list(axes[0]), fraction=0.02, label="phase (rad)")
    save_figure(fig, path)
    plt.close(fig)
    return path


def stack_summary(frontend: "DiffractiveFrontend") -> dict[str, Any]:
    """The physical stack as plain numbers (mm, um, nm)."""
    g, cfg = frontend.geometry, frontend.config
    with torch.no_grad():
        heights = frontend.heights_m().detach().double().cpu() * 1e6
        phases = frontend.phases().detach().double().cpu()
        amps = frontend.amplitudes()
    base = cfg.base_thickness_um
    layers = []
    for l in range(g.num_layers):
        h = heights[l]
        row = {"layer": l + 1, "height_min_um": float(h.min()), "height_max_um": float(h.max()),
               "height_mean_um": float(h.mean()), "phase_mean_rad": float(phases[l].mean()),
               "distinct_phase_levels": int(torch.unique(phases[l].float()).numel())}
        pose = frontend.pose[l].tolist()
        if any(pose):
            row["pose"] = {"shift_y_um": pose[0] * 1e6, "shift_x_um": pose[1] * 1e6,
                           "rotation_deg": math.degrees(pose[2]), "tilt_about_x_deg": math.degrees(pose[3]),
                           "tilt_about_y_deg": math.degrees(pose[4])}
        if amps is not None:
            a = amps[l].detach()
            row["amplitude_min"], row["amplitude_max"] = float(a.min()), float(a.max())
        layers.append(row)
    gaps = frontend.gaps_m()
    return {
        "preset": cfg.preset,
        "wavelength_nm": g.wavelength_m * 1e9,
        "channel_wavelengths_nm": [lam * 1e9 for lam in g.wavelengths_m],
        "frequency_thz": 299_792_458.0 / g.wavelength_m * 1e-12,
        "modulation": cfg.modulation,
        "layers": g.num_layers,
        "neurons_per_side": g.num_neurons,
        "neuron_pitch_um": g.neuron_pitch_m * 1e6,
        "layer_size_mm": g.window_m * 1e3,
        "samples_per_neuron": g.samples,
        "distances_mm": [d * 1e3 for d in gaps],
        "stack_length_mm": sum(gaps) * 1e3,
        "input_object_mm": g.object_neurons * g.neuron_pitch_m * 1e3,
        "input_image_px": cfg.input_size_px,
        "material_index": g.material_index,
        "extinction_coefficient": cfg.extinction_coefficient,
        "height_2pi_um": g.height_2pi_m * 1e6,
        "phase_range_rad": g.phase_range,
        "phase_bits": g.phase_bits,
        "base_thickness_um": base,
        "relief_min_um": float(heights.min()),
        "relief_max_um": float(heights.max()),
        "thickness_min_um": base + float(heights.min()),
        "thickness_max_um": base + float(heights.max()),
        "readout": {
            "regions": cfg.num_kernels, "pixels_per_region": cfg.kernel_size,
            "sensor_pitch_um": g.sensor_pitch_m * 1e6, "region_mm": g.region_side_m * 1e3,
            "region_spacing_mm": g.region_spacing_m * 1e3, "row_counts": list(g.row_counts),
            "centres_mm": [[y * 1e3, x * 1e3] for y, x in g.region_centres_m],
            "gain": frontend.gain,
        },
        "per_layer": layers,
    }


def _markdown(s: dict[str, Any]) -> str:
    lines = [
        "# Diffractive stack", "",
        f"- wavelength: {s['wavelength_nm']:.6g} nm ({s['frequency_thz']:.4g} THz); channels: "
        + ", ".join(f"{w:.6g} nm" for w in s["channel_wavelengths_nm"]),
        f"- {s['layers']} {s['modulation']} layers of {s['neurons_per_side']} x {s['neurons_per_side']} neurons, "
        f"pitch {s['neuron_pitch_um']:.6g} um, layer {s['layer_size_mm']:.6g} mm square",
        "- distances (input -> layer 1 -> ... -> sensor): " + ", ".join(f"{d:.6g}" for d in s["distances_mm"])
        + f" mm; stack length {s['stack_length_mm']:.6g} mm",
        f"- input object: {s['input_image_px']} x {s['input_image_px']} px on {s['input_object_mm']:.6g} mm",
        f"- material: n = {s['material_index']:.6g}, kappa = {s['extinction_coefficient']:.4g}; "
        f"2 pi relief = {s['height_2pi_um']:.6g} um",
        f"- relief {s['relief_min_um']:.6g} .. {s['relief_max_um']:.6g} um on a {s['base_thickness_um']:.6g} um base: "
        f"thickness {s['thickness_min_um']:.6g} .. {s['thickness_max_um']:.6g} um",
        f"- phase: range {s['phase_range_rad']:.4g} rad, "
        + (f"{s['phase_bits']} bits" if s["phase_bits"] else "continuous"),
        f"- readout: {s['readout']['regions']} regions of {s['readout']['pixels_per_region']} x "
        f"{s['readout']['pixels_per_region']} pixels ({s['readout']['region_mm']:.6g} mm, pitch "
        f"{s['readout']['sensor_pitch_um']:.6g} um), rows {s['readout']['row_counts']}",
        "", "| layer | height min (um) | height max (um) | mean (um) | distinct phase levels |",
        "|---|---|---|---|---|",
    ]
    for row in s["per_layer"]:
        lines.append(f"| {row['layer']} | {row['height_min_um']:.4g} | {row['height_max_um']:.4g} | "
                     f"{row['height_mean_um']:.4g} | {row['distinct_phase_levels']} |")
    lines += ["", "Files: `layerK_phase_rad.npy`, `layerK_height_um.npy` (float32, N x N neurons, row 0 on "
              "top as seen by the incoming light) and PNG previews."]
    return "\n".join(lines) + "\n"


def export_stack(frontend: "DiffractiveFrontend", out_dir) -> list[Path]:
    """Write per-layer maps, previews and the stack summary; return the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = frontend.geometry
    files: list[Path] = []
    with torch.no_grad():
        phases = frontend.phases().detach().float().cpu().numpy()
        heights = (frontend.heights_m().detach().double().cpu().numpy() * 1e6).astype(np.float32)
        amps = frontend.amplitudes()
        amps = None if amps is None else amps.detach().float().cpu().numpy()
    h_max = max(float(heights.max()), g.height_2pi_m * 1e6 * g.phase_range / (2 * math.pi))
    for l in range(g.num_layers):
        stem = f"layer{l + 1}"
        for name, data in ((f"{stem}_phase_rad.npy", phases[l]), (f"{stem}_height_um.npy", heights[l])):
            save_array(out / name, data.astype(np.float32))
            files.append(out / name)
        files.append(_png(out / f"{stem}_phase.png", phases[l], "twilight", 0.0, g.phase_range))
        files.append(_png(out / f"{stem}_height.png", heights[l], "viridis", min(0.0, float(heights.min())), h_max))
        if amps is not None:
            save_array(out / f"{stem}_amplitude.npy", amps[l])
            files.append(out / f"{stem}_amplitude.npy")
            files.append(_png(out / f"{stem}_amplitude.png", amps[l], "gray", 0.0, 1.0))
    files.append(_overview(out / "stack_phases.png", phases, g.phase_range))
    summary = stack_summary(frontend)
    atomic_write_text((out / "stack.json"), json.dumps(summary, indent=2) + "\n")
    atomic_write_text((out / "stack.md"), _markdown(summary))
    files += [out / "stack.json", out / "stack.md"]
    return files
