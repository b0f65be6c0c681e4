"""Mask figures: predicted masks over the images, one row per sample, one column per model."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from onnx_run.files import save_figure
from onnx_run.plotstyle import styled


#: overlay colours (RGB in [0, 1])
_TRUTH = np.array([0.1, 0.9, 0.2])
_PRED = np.array([1.0, 0.2, 0.1])


def as_masks(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Masks (N, H, W) from masks or from logits (N, C, H, W) (argmax over classes)."""
    t = torch.as_tensor(np.asarray(values)) if not isinstance(values, torch.Tensor) else values.detach().cpu()
    if t.dim() == 4:
        t = t.argmax(1)
    if t.dim() != 3:
        raise ValueError(f"expected masks (N, H, W) or logits (N, C, H, W), got shape {tuple(t.shape)}")
    return t.long()


def _rgb(image: torch.Tensor) -> np.ndarray:
    a = image.detach().cpu().float().clamp(0, 1).numpy()
    return np.repeat(a[0][..., None], 3, axis=2) if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)


def _overlay(rgb: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = rgb.copy()
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * colour
    return out


def _fg_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


@styled
def save_mask_figure(path: str | Path, images: torch.Tensor, masks_true: torch.Tensor,
                     predictions: Mapping[str, torch.Tensor], n: int = 6) -> Path:
    """Write a PNG grid: rows = the first ``n`` samples; columns = image, truth, then each model.

    ``images`` (N, C, H, W) intensities, ``masks_true`` (N, H, W); each prediction is masks
    (N, H, W) or logits (N, C, H, W). Masks are drawn over the image (truth green, predictions
    red, foreground only; the truth's outline in white on every prediction) with the sample's
    foreground IoU in each prediction's title.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    path = Path(path)
    truth = as_masks(masks_true)
    preds = {name: as_masks(p) for name, p in predictions.items()}
    n = int(min(n, images.shape[0], truth.shape[0], *(p.shape[0] for p in preds.values())))
    if n < 1:
        raise ValueError("save_mask_figure needs at least one sample")
    cols = 2 + len(preds)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n + 0.3), squeeze=False)
    for i in range(n):
        rgb = _rgb(images[i])
        t = truth[i].numpy() > 0
        panels = [("image", rgb, None), ("truth", _overlay(rgb, t, _TRUTH), None)]
        for name, p in preds.items():
            m = p[i].numpy() > 0
            panels.append((name, _overlay(rgb, m, _PRED), _fg_iou(m, t)))
        for j, (name, pic, iou) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(pic, interpolation="nearest")
            if iou is not None and t.any() and not t.all():  # the truth's outline, for comparison
                ax.contour(t.astype(float), levels=[0.5], colors="white", linewidths=0.7)
            ax.set_xticks([])
            ax.set_yticks([])
            title = name if i == 0 else ""
            if iou is not None:
                title = f"{title}\nIoU {iou:.2f}" if title else f"IoU {iou:.2f}"
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path
