"""Configuration of a diffractive stack, its physical presets and the resolved geometry.

Physical keys default to ``None``, meaning "take it from the preset"; a key the user sets
always wins over the preset. :func:`resolve` turns a config into a :class:`Geometry` with
every number filled in and SI units, which is what the frontend, the layout rule, the error
models and the export use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
from attrs import validators as v

from onnx_run.errors import UserError

#: Physical presets. ``lin2018``: Lin et al., Science 2018 (0.4 THz, 400 um neurons, 30 mm
#: apart, 5 phase-only layers of 200 x 200), with N scaled from 200 to 80 neurons per side
#: (2.5x per axis, 6.25x fewer neurons) so that it trains on 2 CPU cores in minutes; the
#: index n = 1.7227 is that of a UV-cured 3D-printing resin at 0.4 THz as commonly quoted for the
#: THz D2NN (not in our reference file: measure your own material).
#: ``visible-slm``: a HeNe (632.8 nm) stack of phase-only LCoS SLM layers with 8 um pixels
#: and 8-bit phase; spacing chosen by the same rule that reproduces Lin's 30 mm (an edge
#: neuron's diffraction cone, half-angle asin(lambda / 2 pitch), reaches the opposite edge of
#: the layer: z = N pitch / tan(asin(lambda / 2 pitch)), 16 mm at N = 80); heights are those
#: of an equivalent etched fused-silica plate (n = 1.457 at 632.8 nm).
PRESETS: dict[str, dict[str, Any]] = {
    "lin2018": {
        "wavelength_nm": 750_000.0, "neuron_pitch_um": 400.0, "spacing_mm": 30.0, "num_neurons": 80,
        "num_layers": 5, "material_index": 1.7227, "phase_bits": 0,
    },
    "visible-slm": {
        "wavelength_nm": 632.8, "neuron_pitch_um": 8.0, "spacing_mm": 16.0, "num_neurons": 80,
        "num_layers": 5, "material_index": 1.457, "phase_bits": 8,
    },
}

#: the design wavelength is the "green" channel of a 3-channel input; R and B scale with it
RGB_SCALE = (640.0 / 532.0, 1.0, 450.0 / 532.0)


def _preset_name(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if value not in PRESETS:
        raise ValueError(f"'{attribute.name}' must be one of {', '.join(PRESETS)} (got {value!r})")


def _positive_list(_inst: Any, attribute: attrs.Attribute, value: list[float]) -> None:
    if any(not (x > 0 and math.isfinite(x)) for x in value):
        raise ValueError(f"'{attribute.name}' must hold positive numbers (got {value!r})")


_opt_pos = v.optional(v.gt(0))


@attrs.define(kw_only=True)
class DiffractiveConfig:
    """A stack of ``num_layers`` diffractive layers of ``num_neurons`` x ``num_neurons`` neurons.

    Task-suggested keys: ``input_size_px`` (side of the input image in pixels; it is area-
    resampled onto ``object_size_neurons`` neurons), ``num_kernels`` (K readout regions =
    feature maps), ``kernel_size`` (side of each readout region in sensor pixels), ``channels``
    (1: one wavelength; 3: three wavelengths, R/G/B scaled around ``wavelength_nm``, a
    monochrome sensor summing them).

    ``None`` means "from the preset" (physical keys) or a documented derived default.
    """

    preset: str = attrs.field(default="lin2018", validator=_preset_name)
    # -- input -------------------------------------------------------------------------------
    input_size_px: int = attrs.field(default=28, validator=[v.ge(2), v.le(1024)])
    channels: int = attrs.field(default=1, validator=v.in_([1, 3]))
    #: side of the input object (SLM / amplitude mask) in neurons; None: half the layer
    object_size_neurons: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    # -- stack ---------------------------------------------------------------------------------
    wavelength_nm: float | None = attrs.field(default=None, validator=_opt_pos)
    neuron_pitch_um: float | None = attrs.field(default=None, validator=_opt_pos)
    num_neurons: int | None = attrs.field(default=None, validator=v.optional([v.ge(4), v.le(2048)]))
    num_layers: int | None = attrs.field(default=None, validator=v.optional([v.ge(1), v.le(32)]))
    #: distance between consecutive layers
    spacing_mm: float | None = attrs.field(default=None, validator=_opt_pos)
    #: input object -> first layer; None: spacing_mm
    input_distance_mm: float | None = attrs.field(default=None, validator=_opt_pos)
    #: last layer -> sensor; None: spacing_mm
    output_distance_mm: float | None = attrs.field(default=None, validator=_opt_pos)
    #: explicit gaps (input->layer 1, ..., layer L->sensor), L + 1 values; overrides the three above
    distances_mm: list[float] = attrs.field(factory=list, validator=_positive_list)
    #: simulation samples per neuron and axis (1: the neuron grid is the simulation grid)
    samples_per_neuron: int = attrs.field(default=1, validator=[v.ge(1), v.le(8)])
    pad_factor: float = attrs.field(default=2.0, validator=[v.ge(1), v.le(8)])
    band_limit: bool = True
    # -- modulation ------------------------------------------------------------------------------
    #: "phase": phase-only neurons; "complex": phase + amplitude in [amplitude_min, 1]
    modulation: str = attrs.field(default="phase", validator=v.in_(["phase", "complex"]))
    amplitude_min: float = attrs.field(default=0.0, validator=[v.ge(0), v.lt(1)])
    #: phase range of a neuron in units of pi (2: full wrap; less: e.g. 1.8 for a limited SLM)
    phase_range_pi: float = attrs.field(default=2.0, validator=[v.gt(0), v.le(2)])
    #: bits of phase during training (straight-through quantisation); 0: continuous; None: preset
    phase_bits: int | None = attrs.field(default=None, validator=v.optional([v.ge(0), v.le(16)]))
    #: bits the realised (fabricated) phase is rounded to; None: phase_bits (0 = exact)
    realise_phase_bits: int | None = attrs.field(default=None, validator=v.optional([v.ge(0), v.le(16)]))
    #: "random": phases uniform in the range (a random diffuser); "zero": free space
    init: str = attrs.field(default="zero", validator=v.in_(["random", "zero"]))
    # -- material (height maps) -------------------------------------------------------------------
    material_index: float | None = attrs.field(default=None, validator=v.optional(v.gt(1)))
    #: extinction coefficient kappa of the material: amplitude exp(-2 pi kappa h / lambda); 0: lossless
    extinction_coefficient: float = attrs.field(default=0.0, validator=[v.ge(0), v.le(1)])
    #: uniform substrate under the relief (reported in the stack summary; a uniform phase)
    base_thickness_um: float = attrs.field(default=0.0, validator=v.ge(0))
    # -- readout ---------------------------------------------------------------------------------
    num_kernels: int = attrs.field(default=9, validator=[v.ge(1), v.le(256)])
    kernel_size: int = attrs.field(default=8, validator=[v.ge(1), v.le(512)])
    #: sensor pixel pitch; None: the neuron pitch
    sensor_pitch_um: float | None = attrs.field(default=None, validator=_opt_pos)
    #: gap between readout regions; None: one region side
    region_spacing_um: float | None = attrs.field(default=None, validator=v.optional(v.ge(0)))
    #: extra factor on the fixed geometric gain (see docs/diffractive.md)
    output_gain: float = attrs.field(default=1.0, validator=v.gt(0))

    @classmethod
    def core_defaults(cls, task_kind: str, settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The classification recipe ``onnx-run compare`` chose for the stack (6-point grid of
        lr x optics lr on validation, no distillation, 9 readout regions; docs/diffractive.md):
        the phases at lr 0.05 beat 0.01 at every backend lr but one, on digits and on
        Fashion-MNIST (5 000 images); backend lr 0.03 has the higher mean of the two (95.00 /
        79.42 % val against 95.56 / 78.27 % at 0.01). Against the earlier lr 0.01 / phases 0.02
        it gains 2.6 (digits) and 2.8 points (Fashion-MNIST), 5 seeds; the old phase rate left
        the students 1 to 5 points under the estimate of their design."""
        if task_kind != "classification":
            return {}
        return {"train": {"lr": 0.03, "optics_lr": 0.05}}

    @classmethod
    def run_presets(cls, settings: Any) -> dict[str, dict[str, Any]]:
        """Run presets (``onnx-run --preset NAME``), given the settings already chosen.

        ``paper``: the full Lin et al. 2018 stack, 5 phase-only layers of 200 x 200 neurons
        (the ``lin2018`` physical preset at Lin's size instead of the CPU-sized 80). With another
        physical preset chosen (``visible-slm``) it changes nothing: its geometry is its own.
        """
        if settings.get("preset", "lin2018") != "lin2018":
            return {"paper": {}}
        return {"paper": {"preset": "lin2018", "num_neurons": 200, "num_layers": 5}}

    def __attrs_post_init__(self) -> None:
        resolve(self)  # a geometry that cannot work fails when the config is read, not mid-run


@attrs.frozen
class Geometry:
    """Every number of a stack, resolved from config + preset (SI units)."""

    wavelength_m: float
    wavelengths_m: tuple[float, ...]
    neuron_pitch_m: float
    num_neurons: int
    num_layers: int
    samples: int
    sim_pitch_m: float
    sim_size: int
    distances_m: tuple[float, ...]
    object_neurons: int
    material_index: float
    phase_range: float
    phase_bits: int
    realise_bits: int
    sensor_pitch_m: float
    region_spacing_m: float
    region_side_m: float
    #: (y, x) centre of each readout region relative to the optical axis, metres
    region_centres_m: tuple[tuple[float, float], ...]
    row_counts: tuple[int, ...]

    @property
    def window_m(self) -> float:
        return self.num_neurons * self.neuron_pitch_m

    @property
    def height_2pi_m(self) -> float:
        """Relief height of a full 2 pi at the design wavelength: lambda / (n - 1)."""
        return self.wavelength_m / (self.material_index - 1)


def _balanced_rows(k: int) -> tuple[int, ...]:
    """K regions in round(sqrt(K)) rows, extra regions in the central rows (K = 10: 3, 4, 3
    as the detector layout of Lin 2018)."""
    rows = max(1, round(math.sqrt(k)))
    base, extra = divmod(k, rows)
    counts = [base] * rows
    centre = (rows - 1) / 2
    for r in sorted(range(rows), key=lambda r: (abs(r - centre), r))[:extra]:
        counts[r] += 1
    return tuple(counts)


def resolve(cfg: DiffractiveConfig) -> Geometry:
    """Fill in preset values and derived defaults; a geometry that cannot work is a UserError."""
    preset = PRESETS[cfg.preset]

    def pick(name: str) -> Any:
        value = getattr(cfg, name)
        return preset[name] if value is None else value

    lam = pick("wavelength_nm") * 1e-9
    if lam > 1e-2:
        raise UserError(f"'wavelength_nm' {lam * 1e9:g} nm is over 1 cm; is it in nm?")
    pitch = pick("neuron_pitch_um") * 1e-6
    n = int(pick("num_neurons"))
    layers = int(pick("num_layers"))
    spacing = pick("spacing_mm") * 1e-3
    if cfg.distances_mm:
        if len(cfg.distances_mm) != layers + 1:
            raise UserError(f"'distances_mm' needs {layers + 1} gaps (input -> layer 1, ..., layer {layers} "
                            f"-> sensor) for {layers} layers, got {len(cfg.distances_mm)}")
        distances = tuple(d * 1e-3 for d in cfg.distances_mm)
    else:
        d_in = (cfg.input_distance_mm * 1e-3) if cfg.input_distance_mm is not None else spacing
        d_out = (cfg.output_distance_mm * 1e-3) if cfg.output_distance_mm is not None else spacing
        distances = (d_in, *([spacing] * (layers - 1)), d_out)
    obj = cfg.object_size_neurons if cfg.object_size_neurons is not None else max(1, n // 2)
    if obj > n:
        raise UserError(f"'object_size_neurons' {obj} does not fit the {n} x {n} neuron layer; use at most {n}")
    wavelengths = (lam,) if cfg.channels == 1 else tuple(lam * s for s in RGB_SCALE)
    bits = int(pick("phase_bits"))
    realise_bits = cfg.realise_phase_bits if cfg.realise_phase_bits is not None else bits
    sensor_pitch = cfg.sensor_pitch_um * 1e-6 if cfg.sensor_pitch_um is not None else pitch
    side = cfg.kernel_size * sensor_pitch
    gap = cfg.region_spacing_um * 1e-6 if cfg.region_spacing_um is not None else side
    counts = _balanced_rows(cfg.num_kernels)
    _check_fit(cfg, counts, side, gap, pitch, n)
    centres = []
    rows = len(counts)
    for r, count in enumerate(counts):
        y = (r - (rows - 1) / 2) * (side + gap)
        for i in range(count):
            centres.append((y, (i - (count - 1) / 2) * (side + gap)))
    return Geometry(
        wavelength_m=lam, wavelengths_m=wavelengths, neuron_pitch_m=pitch, num_neurons=n, num_layers=layers,
        samples=cfg.samples_per_neuron, sim_pitch_m=pitch / cfg.samples_per_neuron,
        sim_size=n * cfg.samples_per_neuron, distances_m=distances, object_neurons=obj,
        material_index=float(pick("material_index")), phase_range=cfg.phase_range_pi * math.pi,
        phase_bits=bits, realise_bits=int(realise_bits), sensor_pitch_m=sensor_pitch, region_spacing_m=gap,
        region_side_m=side, region_centres_m=tuple(centres), row_counts=counts,
    )


def _check_fit(cfg: DiffractiveConfig, counts: tuple[int, ...], side: float, gap: float, pitch: float,
               n: int) -> None:
    """The K readout regions must fit the output window (the last layer's size)."""
    from onnx_run.estimate.layout import grid_counts

    window = n * pitch
    need = max(len(counts) * side + (len(counts) - 1) * gap, max(counts) * side + (max(counts) - 1) * gap)
    if need <= window * (1 + 1e-9):
        return
    rows, cols = grid_counts(window, window, side, gap)
    n_min = math.ceil(need / pitch - 1e-9)
    what = (f"{cfg.num_kernels} readout regions of {cfg.kernel_size} x {cfg.kernel_size} sensor pixels "
            f"({side * 1e3:.4g} mm, {gap * 1e3:.4g} mm apart, {need * 1e3:.4g} mm in all)")
    if rows * cols == 0:
        raise UserError(f"'num_neurons' {n} ({window * 1e3:.4g} mm) fits no readout region of {side * 1e3:.4g} mm; "
                        f"the smallest layer that fits one is {math.ceil(side / pitch - 1e-9)} neurons")
    raise UserError(f"'num_neurons' {n} ({window * 1e3:.4g} mm) is too small for {what}, it fits at most "
                    f"{rows * cols}; the smallest layer that fits them is {n_min} neurons, or lower num_kernels "
                    f"or kernel_size")
