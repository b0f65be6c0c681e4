"""Electronic teachers for classification: LeNet, an AlexNet-style net and a small ResNet.

They see the raw images (B, C, H, W) the optics see and are sized for small inputs
(28-64 px); the paper's teachers are LeNet (MNIST) and AlexNet (CIFAR-10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onnx_run.components import TeacherSpec
from onnx_run.tasks.settings import AlexNetConfig, LeNetConfig, ResNetConfig


class LeNet(nn.Module):
    def __init__(self, config: LeNetConfig, spec: TeacherSpec):
        super().__init__()
        c = config
        self.features = nn.Sequential(
            nn.Conv2d(spec.channels, c.conv1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c.conv1, c.conv2, 5), nn.ReLU(), nn.AdaptiveAvgPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c.conv2 * 25, c.fc1), nn.ReLU(),
            nn.Linear(c.fc1, c.fc2), nn.ReLU(), nn.Linear(c.fc2, spec.num_outputs),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class AlexNetSmall(nn.Module):
    def __init__(self, config: AlexNetConfig, spec: TeacherSpec):
        super().__init__()
        w = config.width
        self.features = nn.Sequential(
            nn.Conv2d(spec.channels, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(2 * w * 16, config.fc), nn.ReLU(),
            nn.Dropout(config.dropout), nn.Linear(config.fc, config.fc), nn.ReLU(),
            nn.Linear(config.fc, spec.num_outputs),
        )

        if config.init == "kaiming":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.short is None else self.short(x)))


class ResNetSmall(nn.Module):
    def __init__(self, config: ResNetConfig, spec: TeacherSpec):
        super().__init__()
        w = config.width
        layers: list[nn.Module] = [nn.Conv2d(spec.channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        cin = w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for b in range(config.blocks):
                layers.append(_Block(cin, cout, 2 if (b == 0 and stage > 0) else 1))
                cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, spec.num_outputs)

    def forward(self, x):
        return self.fc(self.features(x))


def check_classification(spec: TeacherSpec, name: str) -> None:
    from onnx_run.errors import UserError

    if spec.task_kind != "classification":
        raise UserError(f"teacher.name: {name!r} is a classification teacher; task is {spec.task_kind!r}")


def lenet(config: LeNetConfig, spec: TeacherSpec) -> nn.Module:
    check_classification(spec, "lenet")
    return LeNet(config, spec)


def alexnet(config: AlexNetConfig, spec: TeacherSpec) -> nn.Module:
    check_classification(spec, "alexnet")
    return AlexNetSmall(config, spec)


def resnet(config: ResNetConfig, spec: TeacherSpec) -> nn.Module:
    check_classification(spec, "resnet")
    return ResNetSmall(config, spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["AlexNetConfig", "LeNetConfig", "ResNetConfig", "alexnet", "count_parameters", "lenet", "resnet",
           "torch"]
