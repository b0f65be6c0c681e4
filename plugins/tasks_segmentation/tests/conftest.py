"""Fixtures of the segmentation plugin's tests: a tiny learnable optics stand-in, small configs."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F

from onnx_run.components import Layout, OpticalFrontend


@attrs.define(kw_only=True)
class ConvOpticsConfig:
    num_kernels: int = 4
    kernel_size: int = 3
    input_size_px: int = 16
    channels: int = 3


class ConvOptics(OpticalFrontend):
    """A learnable incoherent conv: non-negative PSFs, intensities in, intensities out."""

    def __init__(self, config: ConvOpticsConfig):
        super().__init__(config)
        self.in_channels = config.channels
        self.input_size = (config.input_size_px, config.input_size_px)
        k = config.kernel_size
        self.psf = torch.nn.Parameter(0.5 * torch.rand(config.num_kernels, config.channels, k, k))

    def layout(self) -> Layout:
        return Layout(self.config.num_kernels, 1, self.config.num_kernels, self.config.kernel_size)

    def kernels(self) -> torch.Tensor:
        return self.psf.detach().square()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.psf.square(), padding=self.config.kernel_size // 2)


@pytest.fixture(autouse=True)
def one_thread():
    """These tests use tiny tensors, where OpenMP thread wake-ups cost more than the work
    (and explode on a busy machine); restore the thread count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def conv_optics():
    return ConvOptics


@pytest.fixture
def optics_config():
    return ConvOpticsConfig
