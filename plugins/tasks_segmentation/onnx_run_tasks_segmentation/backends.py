"""The digital backend of a segmentation student: an up-convolution decoder.

The optical frontend plays the part of a U-Net's encoder (one linear optical layer), so the
backend is a decoder only. The K sensor maps are average-pooled to ``len(widths)`` scales
(1, 1/2, 1/4, ...); each scale gets a conv block, and the decoder climbs back from the
coarsest scale with 2x2 up-convolutions (ConvTranspose2d, stride 2), concatenating the block
of the next finer scale, U-Net style. With ``kernel_groups`` (the paper's 8/16/32 grouping of
56 kernels) scale i receives only group i of the maps, i.e. the optics provide
separate features per decoder level; without it every scale sees all K maps.

The sensor maps may be smaller or larger than the image (H', W' != H, W): when the image is
at least twice the map size, extra up-convolution stages climb towards it, and the logits are
resized bilinearly to exactly ``output_size`` at the end.

No BatchNorm: the NTK of a student is taken in training mode, where BatchNorm would couple
the samples of a batch. ``input_norm="instance"`` (parameter-free, per sample and map)
is available for optics whose feature scale is far from 1.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int, kind: str) -> nn.Module:
    """GroupNorm (``kind = "group"``) or nothing: GroupNorm normalises each sample on its own, so
    unlike BatchNorm it keeps the samples of a batch independent, as the student's NTK needs."""
    if kind == "none":
        return nn.Identity()
    return nn.GroupNorm(_groups_of(channels), channels)


def _groups_of(channels: int) -> int:
    """Up to 8 groups, as many as divide the channels."""
    return max(g for g in range(1, 9) if channels % g == 0)


def _block(cin: int, cout: int, norm: str = "none") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), _norm(cout, norm), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), _norm(cout, norm), nn.ReLU())


class UpConvDecoder(nn.Module):
    """Optical feature maps (B, K, H', W') -> logits (B, num_classes, *output_size)."""

    def __init__(self, feature_shape: Sequence[int], num_classes: int, *, output_size: Sequence[int],
                 widths: Sequence[int] = (16, 32, 64), kernel_groups: Sequence[int] | None = None,
                 input_norm: str = "none", norm: str = "none"):
        super().__init__()
        k, h, w = (int(s) for s in feature_shape)
        widths = [int(x) for x in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {widths}")
        if kernel_groups:
            groups = [int(g) for g in kernel_groups]
            if len(groups) != len(widths) or sum(groups) != k or min(groups) < 1:
                raise ValueError(
                    f"kernel_groups {groups} must have one positive group per decoder level ({len(widths)}) "
                    f"and sum to the number of optical maps K = {k}"
                )
        else:
            groups = None
        if input_norm not in ("none", "instance"):
            raise ValueError(f"input_norm must be 'none' or 'instance', got {input_norm!r}")
        self.feature_shape = (k, h, w)
        self.output_size = (int(output_size[0]), int(output_size[1]))
        self.groups = groups
        self.input_norm = input_norm
        ins = groups if groups else [k] * len(widths)
        if norm not in ("none", "group"):
            raise ValueError(f"norm must be 'none' or 'group', got {norm!r}")
        self.levels = nn.ModuleList(_block(c, width, norm) for c, width in zip(ins, widths))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in range(len(widths) - 1))
        self.merge = nn.ModuleList(_block(2 * widths[i], widths[i], norm) for i in range(len(widths) - 1))
        # climb towards the image when the sensor maps are at least 2x smaller than it
        ratio = min(self.output_size[0] / h, self.output_size[1] / w)
        n_extra = max(0, int(math.floor(math.log2(ratio)))) if ratio >= 2 else 0
        self.extra = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[0], widths[0], 2, stride=2), nn.ReLU(),
                          nn.Conv2d(widths[0], widths[0], 3, padding=1), nn.ReLU())
            for _ in range(n_extra)
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # the head before the resize: it has fewer channels to resize than its input
        return self._to_output_size(self.head(self._trunk(features)))

    def readout_inputs(self, features: torch.Tensor) -> torch.Tensor:
        """What the 1x1 head reads at every output pixel (B, widths[0], *output_size): the logits
        are ``head`` of it. Bilinear resizing is linear with weights summing to one, so it
        commutes with the head (bias included)."""
        return self._to_output_size(self._trunk(features))

    def _to_output_size(self, y: torch.Tensor) -> torch.Tensor:
        if tuple(y.shape[-2:]) != self.output_size:
            y = F.interpolate(y, size=self.output_size, mode="bilinear", align_corners=False)
        return y

    def _trunk(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        if self.input_norm == "instance":
            x = F.instance_norm(x)
        parts = torch.split(x, self.groups, dim=1) if self.groups else [x] * len(self.levels)
        feats = []
        for i, (block, part) in enumerate(zip(self.levels, parts)):
            if i > 0:
                part = F.avg_pool2d(part, 2**i, ceil_mode=True)
            feats.append(block(part))
        y = feats[-1]
        for i in reversed(range(len(self.up))):
            y = torch.relu(self.up[i](y))
            if y.shape[-2:] != feats[i].shape[-2:]:
                y = F.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.merge[i](torch.cat([y, feats[i]], dim=1))
        for stage in self.extra:
            y = stage(y)
        return y
