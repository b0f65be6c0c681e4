"""The electronic teacher: a small U-Net (Ronneberger et al. 2015), sized for 32-128 px inputs.

The paper's teacher is a U-Net (95.4 % mIoU on Carvana); ours keeps the shape (conv blocks,
2x2 max-pool down, 2x2 up-convolution up, skip concatenations) with fewer channels so that
it trains in minutes on a CPU. Odd sizes are handled by resizing the up-sampled map to its
skip's size, so any input size works and the logits always come out at the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onnx_run.components import TeacherSpec
from onnx_run.errors import UserError
from onnx_run_tasks_segmentation.config import UNetConfig


def conv_block(cin: int, cout: int, batchnorm: bool) -> nn.Sequential:
    """Two 3x3 convs with ReLU, padding 1 (size preserving)."""
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(b))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """(B, C, H, W) images -> (B, num_classes, H, W) logits."""

    def __init__(self, config: UNetConfig, spec: TeacherSpec):
        super().__init__()
        w = list(config.widths)
        self.down = nn.ModuleList()
        cin = spec.channels
        for width in w:
            self.down.append(conv_block(cin, width, config.batchnorm))
            cin = width
        self.up = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(len(w) - 1))
        self.merge = nn.ModuleList(conv_block(2 * w[i], w[i], config.batchnorm) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], spec.num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = self.up[i](x)
            skip = skips[i]
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.merge[i](torch.cat([x, skip], dim=1))
        return self.head(x)


def unet(config: UNetConfig, spec: TeacherSpec) -> nn.Module:
    """Teacher factory registered as ``unet``."""
    if spec.task_kind != "segmentation":
        raise UserError(f"teacher.name: 'unet' is a segmentation teacher; task is {spec.task_kind!r}")
    return UNet(config, spec)
