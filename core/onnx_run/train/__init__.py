"""Training: the loop, checkpoints and resume, teachers and their cache."""

from onnx_run.train.loop import RunInfo, TrainingDiverged, evaluate, predict, resolve_device, seed_everything, train_model

__all__ = ["RunInfo", "TrainingDiverged", "evaluate", "predict", "resolve_device", "seed_everything", "train_model"]
