"""All-optical classification (Lin et al. 2018): one detector region per class, no hidden layer.

The class scores are the optical powers collected by the K = classes readout regions; a
digital division by their sum makes them insensitive to the source power, and a per-detector
gain (a responsivity calibration, K numbers, initialised to 1) is the only thing that can
still be tuned after fabrication. The decision is the brightest (calibrated) detector. It is a
task rather than an optics option because in the core the task builds the backend.
"""

from __future__ import annotations

import torch
from torch import nn

from onnx_run.errors import UserError
from onnx_run.tasks.classification import ClassificationTask
from onnx_run_optics_diffractive.alloptical_settings import AllOpticalConfig  # noqa: F401 - the task's config

class DetectorBackend(nn.Module):
    """(B, K, h, w) region maps -> (B, K) class logits: total power per region, normalised."""

    def __init__(self, num_outputs: int, temperature: float, learn_gains: bool = True):
        super().__init__()
        self.temperature = temperature
        self.log_gain = nn.Parameter(torch.zeros(num_outputs), requires_grad=learn_gains)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        power = features.flatten(2).sum(-1)
        share = power / power.sum(1, keepdim=True).clamp_min(1e-12)
        return self.temperature * share * self.log_gain.exp()


class AllOpticalTask(ClassificationTask):
    """Classification read by one optical detector per class (see module docstring)."""

    def build_backend(self, feature_shape, num_outputs):
        k = feature_shape[0]
        if k != num_outputs:
            raise UserError(f"task all-optical: the optics read {k} regions but the dataset has {num_outputs} "
                            f"classes; set optics.num_kernels = {num_outputs}")
        return DetectorBackend(num_outputs, self.config.temperature, self.config.learn_gains)

    def backend_for_estimate(self, feature_shape, num_outputs, width_multiplier):
        return self.build_backend(feature_shape, num_outputs)
