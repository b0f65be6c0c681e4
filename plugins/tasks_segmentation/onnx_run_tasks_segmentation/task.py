"""The segmentation task: binary masks (background / foreground) predicted per pixel."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onnx_run.components import Task
from onnx_run.errors import UserError
from onnx_run_tasks_segmentation.backends import UpConvDecoder
from onnx_run_tasks_segmentation.config import SegmentationConfig
from onnx_run_tasks_segmentation.metrics import segmentation_scores, soft_dice_loss


def projection_matrix(num_values: int, dim: int, seed: int) -> torch.Tensor:
    """Fixed Gaussian projection R (num_values, dim) with entries N(0, 1/dim), float32 on CPU.

    E[R R^T] = I, so for per-sample Jacobians J_i (D x params) the projected trace kernel
    sum_p <(R^T J_i)_p, (R^T J_j)_p> = J_i^T R R^T J_j has expectation J_i^T J_j, the full
    per-pixel trace NTK: an unbiased estimate with relative error ~ sqrt(2 / dim). Drawn with
    numpy (not torch) so that it can be created inside torch.func.vmap, where random torch
    ops are refused; seeded by (seed, num_values) so teacher and student share it.
    """
    rng = np.random.default_rng([int(seed), int(num_values), int(dim)])
    r = rng.standard_normal((int(num_values), int(dim))) / np.sqrt(dim)
    return torch.from_numpy(r.astype(np.float32))


class SegmentationTask(Task):
    """Per-pixel classification into ``classes`` (background, foreground).

    Outputs are logits (B, C, H, W) at the input image size for every model (teacher and
    student); targets are int64 masks (B, H, W).
    """

    kind = "segmentation"
    primary_metric = "miou"

    def __init__(self, config: SegmentationConfig | None = None):
        super().__init__(config if config is not None else SegmentationConfig())
        self._image_size: tuple[int, int] | None = None
        self._projections: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}

    # -- data -----------------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        """Input (= output) size: that of the last datasets() call, else ``image_size_px``."""
        if self._image_size is not None:
            return self._image_size
        return (self.config.image_size_px, self.config.image_size_px)

    def datasets(self, *, image_size: tuple[int, int], channels: int, seed: int) -> Any:
        from onnx_run_tasks_segmentation.datasets import load_segmentation_dataset

        c = self.config
        self._image_size = (int(image_size[0]), int(image_size[1]))
        return load_segmentation_dataset(
            c.dataset, image_size=self._image_size, channels=channels, seed=seed, data_dir=c.data_dir,
            num_images=c.num_images, max_images=c.max_images, val_fraction=c.val_fraction,
            test_fraction=c.test_fraction,
        )

    def num_outputs(self, splits: Any) -> int:
        return len(splits.classes)

    # -- models ---------------------------------------------------------------------------------
    def build_backend(self, feature_shape: tuple[int, int, int], num_outputs: int, *,
                      output_size: tuple[int, int] | None = None, width_multiplier: int = 1) -> nn.Module:
        """Up-convolution decoder from the optical maps (K, H', W') to logits at the image size."""
        c = self.config
        groups = c.resolved("kernel_groups") or None
        if groups and sum(groups) != feature_shape[0]:
            raise UserError(
                f"task.kernel_groups: {groups} sums to {sum(groups)} but the optics give {feature_shape[0]} "
                f"feature maps; set optics.num_kernels = {sum(groups)} or task.kernel_groups = []"
            )
        widths = [w * int(width_multiplier) for w in c.resolved("decoder_widths")]
        return UpConvDecoder(feature_shape, num_outputs, output_size=output_size or self.image_size,
                             widths=widths, kernel_groups=groups, input_norm=c.input_norm,
                             norm=c.decoder_norm)

    def estimate_settings(self) -> dict[str, Any]:
        """The estimate regresses pixel by pixel with the NTK of the decoder's 1x1 head
        (:meth:`pixel_readout`: 17 features a pixel at the default widths), so every training
        image fits (a 1 000-image run: seconds). The evaluation pixels are kept, so val and test
        are capped at 1 000 images each. The warm-up is half the run, not 5 %: the decoder's
        features form later than a classifier's, and the estimate rises with the warm-up until
        about half the run, where it meets the trained students (docs/estimate.md,
        "Segmentation")."""
        return {"max_eval": 1000, "warmup_percent": 50}

    def backend_for_estimate(self, feature_shape: tuple[int, int, int], num_outputs: int,
                             width_multiplier: int) -> nn.Module:
        return self.build_backend(feature_shape, num_outputs, width_multiplier=width_multiplier)

    def pixel_readout(self, backend: nn.Module, features: torch.Tensor) -> torch.Tensor | None:
        """The decoder's last features, which its 1x1 head turns into logits pixel by pixel."""
        return backend.readout_inputs(features) if isinstance(backend, UpConvDecoder) else None

    # -- objective and metrics ----------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-pixel cross entropy (mean over pixels), plus ``dice_weight`` x soft Dice loss."""
        loss = F.cross_entropy(outputs, targets)
        if self.config.dice_weight > 0:
            loss = loss + self.config.dice_weight * soft_dice_loss(outputs, targets)
        return loss

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """mIoU (background and foreground IoU over the whole set, averaged), foreground Dice,
        pixel accuracy and the task loss."""
        scores = segmentation_scores(outputs.argmax(1), targets, outputs.shape[1])
        return {"miou": scores["miou"], "dice": scores["dice"], "pixel_accuracy": scores["pixel_accuracy"],
                "loss": float(self.loss(outputs.float(), targets))}

    # -- distillation ---------------------------------------------------------------------------
    def ntk_projection(self, num_values: int, *, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The fixed projection (num_values, P) used by :meth:`ntk_reduce` (cached)."""
        key = (int(num_values), str(device), dtype)
        if key not in self._projections:
            r = projection_matrix(num_values, self.config.ntk_projection_dim, self.config.ntk_projection_seed)
            self._projections[key] = r.to(device=device, dtype=dtype)
        return self._projections[key]

    def ntk_reduce(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) logits -> (B, P): a fixed Gaussian projection of all C*H*W logits.

        The projected kernel is an unbiased estimate of the per-pixel trace NTK (see
        ``projection_matrix``) at the cost of P outputs instead of C*H*W, about what a
        classification task with P classes costs. P = 0 keeps every logit.
        """
        flat = outputs.reshape(outputs.shape[0], -1)
        if self.config.ntk_projection_dim == 0:
            return flat
        return flat @ self.ntk_projection(flat.shape[1], device=flat.device, dtype=flat.dtype)

    def soft_targets(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B*H*W, C): every pixel is one KD sample (KL averaged over pixels)."""
        return outputs.movedim(1, -1).reshape(-1, outputs.shape[1])

    # -- figures --------------------------------------------------------------------------------
    def save_prediction_figure(self, path: str | Path, x: torch.Tensor, y: torch.Tensor,
                               preds_by_name: Mapping[str, torch.Tensor], n: int = 6) -> Path:
        """Masks of each model (logits or masks) over the images; see figures.save_mask_figure."""
        from onnx_run_tasks_segmentation.figures import save_mask_figure

        return save_mask_figure(path, x, y, preds_by_name, n=n)
