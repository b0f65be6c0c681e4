"""Shared fixtures: a tiny in-process optics plugin and an isolated teacher cache."""

from __future__ import annotations

import pytest
import torch

from onnx_run.plugins import register_plugin, reset_plugin_manager, unregister_plugin
from onnx_run.testing import tiny_optics_plugin


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Each test gets its own teacher cache and a fresh plugin manager."""
    monkeypatch.setenv("ONNX_RUN_CACHE", str(tmp_path_factory.mktemp("cache")))
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def tiny_optics():
    register_plugin(tiny_optics_plugin(), name="tiny-optics")
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

