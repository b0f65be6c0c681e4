"""Settings of the segmentation task (the ``[task]`` table when ``name = "segmentation"``)."""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from attrs import validators as v

#: dataset name -> one-line description (``onnx-run plugins`` / docs)
SEGMENTATION_DATASETS: dict[str, str] = {
    "shapes": "embedded: textured objects of random shapes over real scikit-image textures, exact masks",
    "carvana": "Kaggle Carvana: data_dir/train/<id>.jpg + data_dir/train_masks/<id>_mask.gif "
               "(or data_dir/images + data_dir/masks)",
    "folder": "your own: data_dir/images/<name>.png|jpg + data_dir/masks/<name>.png (nonzero = foreground)",
}

#: what a preset fills in for the settings left unset (None)
PRESETS: dict[str, dict[str, Any]] = {
    # trains in minutes on 2 CPU cores
    "small": {"num_kernels": 8, "decoder_widths": [16, 32, 64], "kernel_groups": []},
    # the paper's Carvana system: 56 optical 3x3 kernels in groups 8/16/32 feeding a three-level
    # up-convolution decoder of ~1 M parameters (paper: 1.06 M)
    "paper": {"num_kernels": 56, "decoder_widths": [48, 96, 192], "kernel_groups": [8, 16, 32]},
}


def _data_dir(instance: "SegmentationConfig", attribute: Any, value: str) -> None:
    if instance.dataset in ("carvana", "folder") and not value:
        raise ValueError(f"'{attribute.name}' must name the folder holding the {instance.dataset!r} files "
                         f"(dataset {instance.dataset!r}: {SEGMENTATION_DATASETS[instance.dataset]})")


def _positive_list(instance: Any, attribute: Any, value: list[int] | None) -> None:
    if value is None:
        return
    if any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in value):
        raise ValueError(f"'{attribute.name}' must be a list of positive integers, got {value!r}")
    if attribute.name == "decoder_widths" and not 1 <= len(value) <= 5:
        raise ValueError(f"'{attribute.name}' must have 1 to 5 levels, got {value!r}")


def _groups(instance: "SegmentationConfig", attribute: Any, value: list[int] | None) -> None:
    _positive_list(instance, attribute, value)
    groups = instance.resolved("kernel_groups")
    if not groups:
        return
    k, widths = instance.resolved("num_kernels"), instance.resolved("decoder_widths")
    if sum(groups) != k or len(groups) != len(widths):
        raise ValueError(
            f"'{attribute.name}' must have one group per decoder level ({len(widths)}) summing to num_kernels "
            f"({k}), got {groups!r}; use [] for no grouping"
        )


def _odd(instance: Any, attribute: Any, value: int) -> None:
    if value % 2 == 0:
        raise ValueError(f"'{attribute.name}' must be odd (kernels are centred on a pixel), got {value}")


@attrs.define(kw_only=True)
class SegmentationConfig:
    """Dataset, suggested optics, decoder and loss of the segmentation task.

    ``image_size_px`` defaults to 32: the 4f frontend's default field of view holds the 16
    tiles of 8 signed 3x3 kernels only up to 40 px inputs (64 px allows 2 kernels), and 32 px
    keeps a CPU run to minutes. ``preset`` fills the settings left unset: ``small`` (8
    kernels, decoder widths 16/32/64; minutes on a CPU) or ``paper`` (56 kernels 3x3 in groups 8/16/32, a ~1 M-parameter
    decoder). ``image_size_px``, ``channels``, ``num_kernels`` and ``kernel_size`` are suggested
    to the optics (applied where the optics config has the key and the user did not set it).
    ``ntk_projection_dim`` P: per-pixel logits are projected to P values for the NTK (0 = no
    projection: every logit is an NTK output, exact but C*H*W / P times the cost). Default 4:
    the student's kernel costs P backward passes per sample (NTKD at 2.5x a plain step with 8
    samples, against 12x at P = 16 with 16), and the teacher-kernel cache holds P x
    teacher-parameters floats per training image (docs/segmentation.md).
    ``decoder_norm``: GroupNorm after every decoder convolution (per sample, so NTK-safe);
    without it 2 of 5 baseline seeds ended at the all-background solution.
    """

    dataset: str = attrs.field(default="shapes", validator=v.in_(list(SEGMENTATION_DATASETS)))
    data_dir: str = attrs.field(default="", validator=_data_dir)
    image_size_px: int = attrs.field(default=32, validator=[v.ge(8), v.le(1024)])
    channels: int = attrs.field(default=3, validator=v.in_([1, 3]))
    preset: str = attrs.field(default="small", validator=v.in_(list(PRESETS)))
    num_kernels: int | None = attrs.field(default=None, validator=v.optional([v.ge(1), v.le(4096)]))
    kernel_size: int = attrs.field(default=3, validator=[v.ge(1), v.le(63), _odd])
    decoder_widths: list[int] | None = attrs.field(default=None, validator=_positive_list)
    kernel_groups: list[int] | None = attrs.field(default=None, validator=_groups)
    input_norm: str = attrs.field(default="instance", validator=v.in_(["instance", "none"]))
    decoder_norm: str = attrs.field(default="group", validator=v.in_(["group", "none"]))
    num_images: int = attrs.field(default=1000, validator=[v.ge(10), v.le(200_000)])
    max_images: int = attrs.field(default=0, validator=v.ge(0))  # carvana/folder: 0 = all
    val_fraction: float = attrs.field(default=0.1, validator=[v.gt(0), v.lt(0.5)])
    test_fraction: float = attrs.field(default=0.2, validator=[v.gt(0), v.lt(0.5)])
    dice_weight: float = attrs.field(default=0.0, validator=v.ge(0))
    ntk_projection_dim: int = attrs.field(default=4, validator=[v.ge(0), v.le(65536)])
    ntk_projection_seed: int = attrs.field(default=0, validator=v.ge(0))

    #: this config carries the task's suggestions (below): resolving a run never builds the task
    task_kind: ClassVar[str] = "segmentation"

    def default_teacher(self) -> str:
        return "unet"

    def optics_defaults(self) -> dict[str, Any]:
        c = self
        return {"input_size_px": c.image_size_px, "num_kernels": c.resolved("num_kernels"),
                "kernel_size": c.kernel_size, "channels": c.channels}

    def core_defaults(self) -> dict[str, dict[str, Any]]:
        """Decoder lr 0.003, optics lr 0.05: the recipe ``onnx-run compare`` chose on validation
        for the metasurface on ``shapes`` (6-point grid, 3 search seeds; docs/segmentation.md).
        The core's 0.002 / 0.02 left 2 of 5 seeds at the all-background solution without the
        decoder's GroupNorm. The compensation after fabrication distils with the students'
        settings (``finetune.distill = {}``): on the design teacher's validation grid (beta 0.3 /
        10 / 3 constant, mse_normalized 3) the students' beta 0.3 was best, and beta 30 (the
        kernel term's choice on classification) left NTKD under the task loss on all 3 devices
        and no better than no compensation on 2 (docs/fabrication.md)."""
        return {"train": {"lr": 0.003, "optics_lr": 0.05}, "finetune": {"distill": {}}}

    def distill_defaults(self) -> dict[str, dict[str, Any]]:
        """NTKD: the student's exact (structured) kernel on 8 samples of each batch, over P = 4
        projected outputs (``ntk_projection_dim``): 2.5x a plain step, where 16 samples at P = 16
        cost 12x; 4 random finite-difference directions cost as little but were noisy enough to
        lose 10 points of validation mIoU (benchmarks/bench_segmentation_step.py,
        docs/segmentation.md). Beta 0.3, constant. KD keeps T = 2 on the teacher's own targets.
        ``onnx-run compare`` searches both on validation (it chose beta 0.3 cosine and T = 1)."""
        return {"ntkd": {"max_samples": 8, "beta": 0.3, "beta_schedule": "constant"},
                "kd": {"temperature": 2.0, "folds": 0}}

    @classmethod
    def run_presets(cls, settings: Any) -> dict[str, dict[str, Any]]:
        """Run presets (``onnx-run --preset NAME``): ``paper`` selects this task's ``paper``
        preset (56 kernels 3x3 in groups 8/16/32, a ~1 M decoder); the dataset, image size and
        channels stay as chosen."""
        return {"paper": {"preset": "paper"}}

    def resolved(self, key: str) -> Any:
        """A setting, or the preset's value where it is unset (None)."""
        value = getattr(self, key)
        return PRESETS[self.preset][key] if value is None else value


def _widths(instance, attribute, value) -> None:
    if not value or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of positive channel counts, got {value!r}")
    if len(value) > 6:
        raise ValueError(f"'{attribute.name}' must have at most 6 levels, got {len(value)}")


@attrs.define(kw_only=True)
class UNetConfig:
    """U-Net channel widths per level (``widths[i]`` at 1/2^i of the input size).

    ``batchnorm``: BatchNorm after each conv (faster training; it is in eval mode whenever the
    teacher's NTK is taken, so samples stay independent).
    """

    widths: list[int] = attrs.field(factory=lambda: [16, 32, 64], validator=_widths)
    batchnorm: bool = True

    @classmethod
    def run_presets(cls, settings):
        """``paper``: a full-width U-Net (64/128/256/512 channels, as Ronneberger et al.'s first
        four levels) for the paper's 95 % mIoU teacher instead of the CPU-sized default."""
        return {"paper": {"widths": [64, 128, 256, 512]}}
