"""Shared fixtures: a tiny in-process optics plugin and an isolated teacher cache."""

from __future__ import annotations

import copy

import attrs
import pytest
import torch
import torch.nn.functional as F
from attrs import validators as v

import onnx_run
from onnx_run.components import Layout, OpticalFrontend
from onnx_run.plugins import register_plugin, reset_plugin_manager, unregister_plugin


@attrs.define(kw_only=True)
class TinyOpticsConfig:
    """A learnable non-negative conv: the smallest thing that behaves like incoherent optics."""

    num_kernels: int = attrs.field(default=4, validator=v.ge(1))
    kernel_size: int = attrs.field(default=5, validator=v.ge(1))
    input_size_px: int = attrs.field(default=16, validator=v.ge(4))
    channels: int = attrs.field(default=1, validator=v.in_([1, 3]))


class TinyOptics(OpticalFrontend):
    def __init__(self, config: TinyOpticsConfig):
        super().__init__(config)
        self.in_channels = config.channels
        self.input_size = (config.input_size_px, config.input_size_px)
        self.weight = torch.nn.Parameter(0.3 * torch.randn(config.num_kernels, config.channels,
                                                           config.kernel_size, config.kernel_size))

    def layout(self):
        return Layout(self.config.num_kernels, 1, self.config.num_kernels, self.config.kernel_size)

    def kernels(self):
        return self.weight.detach()

    def forward(self, x):
        return F.conv2d(x, self.weight.square(), padding=self.config.kernel_size // 2)

    def perturb_kernels(self, relative_sigma, generator):
        clone = copy.deepcopy(self)
        with torch.no_grad():
            clone.weight.mul_(1 + relative_sigma * torch.randn(clone.weight.shape, generator=generator))
        return clone


class TinyOpticsPlugin:
    __name__ = "tiny-optics"

    @onnx_run.hookimpl
    def register_optics(self, register):
        register("tiny", TinyOptics, config=TinyOpticsConfig, description="tiny test optics")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Each test gets its own teacher cache and a fresh plugin manager."""
    monkeypatch.setenv("ONNX_RUN_CACHE", str(tmp_path_factory.mktemp("cache")))
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def tiny_optics():
    register_plugin(TinyOpticsPlugin(), name="tiny-optics")
    yield "tiny"
    try:
        unregister_plugin("tiny-optics")
    except ValueError:
        pass

