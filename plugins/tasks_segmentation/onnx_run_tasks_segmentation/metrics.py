"""Segmentation losses and metrics.

Convention (the one Carvana/U-Net papers report as mIoU): IoU of each class is computed from
pixel counts summed over the *whole* evaluation set (not averaged per image), and mIoU is the
mean over the classes, background included. A class absent from both truth and prediction
(union 0) is left out of the mean. Dice is the foreground (class 1) Dice over the whole set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Pixel counts (num_classes, num_classes), rows = truth, columns = prediction (int64)."""
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(cm: Tensor) -> dict[str, float]:
    """mIoU (mean over classes with a non-empty union), foreground Dice, pixel accuracy, per-class IoU."""
    cm = cm.double()
    tp = cm.diagonal()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    union = tp + fp + fn
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    miou = float(iou[present].mean()) if bool(present.any()) else float("nan")
    fg = 1 if cm.shape[0] > 1 else 0
    dice_den = 2 * tp[fg] + fp[fg] + fn[fg]
    dice = float(2 * tp[fg] / dice_den) if dice_den > 0 else 1.0  # nothing to find, nothing found
    total = float(cm.sum())
    out = {"miou": miou, "dice": dice, "pixel_accuracy": float(tp.sum()) / total if total else float("nan")}
    for c in range(cm.shape[0]):
        out[f"iou_{c}"] = float(iou[c])
    return out


def segmentation_scores(pred: Tensor, target: Tensor, num_classes: int) -> dict[str, float]:
    """Scores of hard predictions (N, H, W) against masks (N, H, W) over the whole set."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from mask shape {tuple(target.shape)}")
    return scores_from_confusion(confusion_matrix(pred, target, num_classes))


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """1 - soft Dice of the foreground probabilities (binary) or mean over classes (multi-class).

    Batch-level (sums over the batch), matching the whole-set Dice we report; ``eps``
    smooths batches without foreground.
    """
    prob = logits.softmax(1)
    onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    den = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (den + eps)
    return 1 - (dice[1] if logits.shape[1] == 2 else dice.mean())


def threshold_baseline(x: Tensor, y: Tensor, *, levels: int = 256) -> dict[str, float | str]:
    """Best mIoU of a single global intensity threshold chosen on (x, y) itself (an oracle).

    Tries every channel of ``x`` (N, C, H, W) and their mean (luminance-like), both
    polarities (foreground brighter or darker) and ``levels`` thresholds; binary masks only.
    It is optimistic (the threshold is fitted on the evaluation set), so a dataset on which
    it is low cannot be solved by intensity alone.
    """
    yb = y.reshape(-1).bool()
    candidates = {f"channel{c}": x[:, c] for c in range(x.shape[1])}
    if x.shape[1] > 1:
        candidates["mean"] = x.mean(1)
    best: dict[str, float | str] = {"miou": -1.0}
    edges = torch.linspace(0, 1, levels + 1, dtype=torch.float64)
    for name, img in candidates.items():
        v = img.reshape(-1).double().clamp(0, 1)
        b = torch.clamp((v * levels).long(), max=levels - 1)
        fg_hist = torch.bincount(b[yb], minlength=levels).double()
        bg_hist = torch.bincount(b[~yb], minlength=levels).double()
        # predict foreground where bin >= t (bright) or bin < t (dark), t = 0..levels
        fg_above = torch.cat([fg_hist.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)])
        bg_above = torch.cat([bg_hist.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)])
        n_fg, n_bg = fg_hist.sum(), bg_hist.sum()
        for polarity, tp, fp in (("bright", fg_above, bg_above), ("dark", n_fg - fg_above, n_bg - bg_above)):
            fn = n_fg - tp
            tn = n_bg - fp
            iou_fg = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp_min(1), torch.ones_like(tp))
            iou_bg = torch.where(tn + fn + fp > 0, tn / (tn + fn + fp).clamp_min(1), torch.ones_like(tn))
            miou = (iou_fg + iou_bg) / 2
            i = int(miou.argmax())
            if float(miou[i]) > float(best["miou"]):
                best = {"miou": float(miou[i]), "threshold": float(edges[i]), "channel": name,
                        "polarity": polarity}
    return best


def all_background_miou(y: Tensor) -> float:
    """mIoU of predicting background everywhere: (background fraction + 0) / 2."""
    return float((1 - y.float().mean()) / 2)


__all__ = ["all_background_miou", "confusion_matrix", "scores_from_confusion", "segmentation_scores",
           "soft_dice_loss", "threshold_baseline"]
