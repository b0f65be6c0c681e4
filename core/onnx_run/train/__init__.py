"""Training: the loop, checkpoints and resume, teachers and their cache."""

from onnx_run.components import RunInfo
from onnx_run.train.loop import (Output, Recipe, TrainData, Trainee, Training, TrainingDiverged, evaluate, predict,
                                 resolve_device, seed_everything, train_model)

__all__ = ["Output", "Recipe", "RunInfo", "TrainData", "Trainee", "Training", "TrainingDiverged", "evaluate",
           "predict", "resolve_device", "seed_everything", "train_model"]
