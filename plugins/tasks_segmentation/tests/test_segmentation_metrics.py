"""Metrics on hand-made masks: exact mIoU, Dice and pixel accuracy; losses; threshold baseline."""

from __future__ import annotations

import math

import pytest
import torch

from onnx_run_tasks_segmentation import SegmentationConfig, SegmentationTask
from onnx_run_tasks_segmentation.metrics import (
    all_background_miou,
    segmentation_scores,
    soft_dice_loss,
    threshold_baseline,
)


def logits_of(masks: torch.Tensor, classes: int = 2) -> torch.Tensor:
    """Confident logits whose argmax is ``masks``."""
    return 10.0 * torch.nn.functional.one_hot(masks, classes).movedim(-1, 1).float()


def test_iou_dice_accuracy_one_image():
    truth = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 0]]])
    s = segmentation_scores(pred, truth, 2)
    # background: TP 1, FP 1, FN 1 -> 1/3; foreground the same -> mIoU 1/3
    assert s["iou_0"] == pytest.approx(1 / 3) and s["iou_1"] == pytest.approx(1 / 3)
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["dice"] == pytest.approx(0.5)  # 2 TP / (2 TP + FP + FN) = 2 / 4
    assert s["pixel_accuracy"] == pytest.approx(0.5)


def test_iou_is_over_the_whole_set_not_per_image():
    truth = torch.tensor([[[1, 1], [1, 1]], [[0, 0], [0, 0]]])
    pred = torch.tensor([[[1, 1], [1, 1]], [[0, 1], [0, 0]]])
    s = segmentation_scores(pred, truth, 2)
    # foreground: TP 4, FP 1 -> 0.8; background: TP 3, FN 1 -> 0.75 (per-image averaging would differ)
    assert s["iou_1"] == pytest.approx(0.8) and s["iou_0"] == pytest.approx(0.75)
    assert s["miou"] == pytest.approx(0.775)
    assert s["dice"] == pytest.approx(8 / 9)
    assert s["pixel_accuracy"] == pytest.approx(7 / 8)


def test_class_absent_everywhere_is_left_out():
    truth = torch.zeros(2, 3, 3, dtype=torch.long)
    s = segmentation_scores(truth.clone(), truth, 2)
    assert s["miou"] == 1.0 and s["dice"] == 1.0 and math.isnan(s["iou_1"])
    wrong = truth.clone()
    wrong[0, 0, 0] = 1
    s = segmentation_scores(wrong, truth, 2)
    assert s["iou_1"] == 0.0 and s["iou_0"] == pytest.approx(17 / 18)
    assert s["miou"] == pytest.approx((17 / 18) / 2) and s["dice"] == 0.0


def test_task_metrics_from_logits():
    task = SegmentationTask(SegmentationConfig())
    truth = torch.tensor([[[0, 0, 1, 1]]])
    m = task.metrics(logits_of(torch.tensor([[[0, 1, 1, 0]]])), truth)
    assert set(m) == {"miou", "dice", "pixel_accuracy", "loss"}
    assert m["miou"] == pytest.approx(1 / 3) and m["dice"] == pytest.approx(0.5)
    perfect = task.metrics(logits_of(truth), truth)
    assert perfect["miou"] == 1.0 and perfect["loss"] < 1e-3
    assert m["loss"] > 1.0


def test_loss_is_pixel_cross_entropy_plus_optional_dice():
    torch.manual_seed(0)
    out = torch.randn(3, 2, 5, 6)
    y = torch.randint(0, 2, (3, 5, 6))
    ce = torch.nn.functional.cross_entropy(out, y)
    assert SegmentationTask(SegmentationConfig()).loss(out, y) == pytest.approx(float(ce))
    with_dice = SegmentationTask(SegmentationConfig(dice_weight=0.5)).loss(out, y)
    assert float(with_dice) == pytest.approx(float(ce + 0.5 * soft_dice_loss(out, y)))
    assert float(soft_dice_loss(logits_of(y) * 10, y)) < 1e-3
    assert float(soft_dice_loss(logits_of(1 - y) * 10, y)) > 0.95  # eps = 1 smoothing


def test_threshold_baseline_finds_bright_and_dark_objects():
    y = torch.zeros(4, 8, 8, dtype=torch.long)
    y[:, 2:5, 3:6] = 1
    bright = 0.2 + 0.6 * y[:, None].float()
    b = threshold_baseline(bright, y)
    assert b["miou"] == pytest.approx(1.0) and b["polarity"] == "bright" and 0.2 < b["threshold"] <= 0.8
    d = threshold_baseline(1 - bright, y)
    assert d["miou"] == pytest.approx(1.0) and d["polarity"] == "dark"
    # pure noise: nothing beats predicting background everywhere by much
    noise = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert threshold_baseline(noise, y)["miou"] < all_background_miou(y) + 0.1
