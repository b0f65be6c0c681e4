"""Digital backends: the small electronic networks behind the optics."""

from __future__ import annotations

from typing import Sequence

from torch import nn


class FCBackend(nn.Module):
    """Optional average pooling, then fully connected layers with ReLU.

    The paper's MNIST system uses 2 FC layers behind 8 optical kernels (0.05 M parameters in
    all), the CIFAR system 3 FC layers; ``hidden`` sets the widths of the hidden layers.
    """

    def __init__(self, feature_shape: Sequence[int], num_outputs: int, *, hidden: Sequence[int] = (32,),
                 pool: int = 2, batchnorm: bool = False):
        super().__init__()
        k, h, w = feature_shape
        layers: list[nn.Module] = []
        if pool > 1:
            layers.append(nn.AvgPool2d(pool))
            h, w = h // pool, w // pool
        if batchnorm:
            layers.append(nn.BatchNorm2d(k))
        layers.append(nn.Flatten())
        width = k * h * w
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, features):
        return self.net(features)
