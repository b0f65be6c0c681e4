"""Small stacks that run in milliseconds: 750 nm-scale physics at a 0.6 lambda pitch."""

from __future__ import annotations

import warnings

import pytest
import torch

from onnx_run_optics_diffractive import DiffractiveConfig, DiffractiveFrontend


def small_config(**kw) -> DiffractiveConfig:
    """24 x 24 neurons of 400 um at 0.75 mm, 6 mm gaps (inside the alias-free range)."""
    base = dict(num_neurons=24, num_layers=2, spacing_mm=6.0, input_size_px=12, num_kernels=4, kernel_size=3,
                init="random")
    base.update(kw)
    return DiffractiveConfig(**base)


@pytest.fixture
def make_stack():
    def make(seed: int = 0, **kw) -> DiffractiveFrontend:
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return DiffractiveFrontend(small_config(**kw))

    return make


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 1, 12, 12, generator=g)
