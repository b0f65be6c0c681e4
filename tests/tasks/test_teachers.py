"""The built-in teacher networks."""

from __future__ import annotations

import pytest
import torch

from onnx_run.components import TeacherSpec
from onnx_run.tasks.teachers import AlexNetConfig, alexnet


def _logit_std(init: str) -> float:
    torch.manual_seed(0)
    model = alexnet(AlexNetConfig(init=init, dropout=0.0), TeacherSpec("classification", 3, (32, 32), 8))
    with torch.no_grad():
        return float(model(torch.rand(64, 3, 32, 32)).std())


def test_alexnet_starts_with_a_signal_that_reaches_the_logits():
    """He init keeps the activations' scale through eight ReLU layers; PyTorch's default
    (1/sqrt(3) of He per layer) leaves logits tens of times smaller, where 2 of 3 shapes-rgb
    seeds never left chance."""
    he, torch_default = _logit_std("kaiming"), _logit_std("torch")
    assert he > 20 * torch_default
    model = alexnet(AlexNetConfig(), TeacherSpec("classification", 3, (32, 32), 8))
    first = model.features[0].weight
    fan_in = first.shape[1] * first.shape[2] * first.shape[3]
    assert float(first.detach().std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_alexnet_init_is_a_checked_setting():
    with pytest.raises(ValueError, match="init"):
        AlexNetConfig(init="xavier")
