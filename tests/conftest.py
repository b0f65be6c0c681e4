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
    capabilities = frozenset({"perturb_kernels"})

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


@pytest.fixture
def tiny_training(tiny_optics):
    """A factory: config overrides -> (config, task, data splits, seeded model factory) on the tiny optics."""
    return _tiny_training_setup


def _tiny_training_setup(overrides: list[str]):
    from onnx_run.components import HybridModel
    from onnx_run.config import load_config

    cfg = load_config(None, overrides, {"optics": "tiny", "distill": "none"})
    task = cfg.task.build()
    splits = task.datasets(image_size=(16, 16), channels=1, seed=0)

    def model():
        torch.manual_seed(0)
        fe = cfg.optics.build()
        return HybridModel(fe, task.build_backend(fe.feature_shape(), 10))

    return cfg, task, splits, model


class KilledMidRun(Exception):
    """Stands in for a kill: raised by the task loss after a set number of steps."""


@pytest.fixture
def kill_after():
    """A factory: steps -> a task loss that raises KilledMidRun once that many steps have run."""
    from onnx_run.distill.losses import NoDistillation

    class KillAfter(NoDistillation):
        def __init__(self, steps):
            super().__init__(None)
            self.left = steps

        def __call__(self, ctx):
            self.left -= 1
            if self.left < 0:
                raise KilledMidRun()
            return super().__call__(ctx)

    KillAfter.Killed = KilledMidRun
    return KillAfter

