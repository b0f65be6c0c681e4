"""Accuracy of a trained diffractive student under hardware realism (prints a Markdown table).

For the trained student of a run directory: test accuracy of the ideal stack, of the stack
realised at several phase bit depths (backend unchanged, no retraining), and of fabricated
devices under each of the plugin's error models at a few magnitudes (mean over 3 device seeds,
no compensation). Not a test: it prints figures.

    .venv/bin/python plugins/optics_diffractive/benchmarks/bench_diffractive_realism.py RUN_DIR
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import attrs
import torch

from onnx_run.components import HybridModel
from onnx_run.fabrication.device import build_error_models, fabricate
from onnx_run.pipeline import Pipeline
from onnx_run.train.checkpoint import load_checkpoint
from onnx_run.train.loop import evaluate

SWEEPS = [
    ("diffractive-misalignment", "shift_neurons", [0.1, 0.25, 0.5, 1.0], {"rotation_deg": 0.0}),
    ("diffractive-misalignment", "rotation_deg", [0.1, 0.5, 1.0], {"shift_neurons": 0.0}),
    ("diffractive-axial", "sigma_fraction", [0.005, 0.01, 0.03], {}),
    ("diffractive-tilt", "sigma_deg", [0.25, 0.5, 1.0], {}),
    ("diffractive-height", "sigma_fraction", [0.02, 0.05, 0.1], {"scale_sigma": 0.0}),
    ("diffractive-height", "scale_sigma", [0.02, 0.05, 0.1], {"sigma_fraction": 0.0}),
]


def main(run_dir: str, method: str | None = None, devices: int = 3) -> None:
    warnings.simplefilter("ignore")
    pipe = Pipeline.from_run_dir(Path(run_dir))
    method = method or pipe.fabricated_student()
    seed = pipe.seeds()[0]
    model = pipe.build_student(seed)
    model.load_state_dict(load_checkpoint(pipe.student_dir(method, seed) / "best.pt")["model"])
    model.eval()
    test = pipe.splits.test
    acc = lambda front: evaluate(HybridModel(front, model.backend), pipe.task, test,  # noqa: E731
                                 device=torch.device("cpu"))["accuracy"]
    front = model.frontend
    print(f"# Realism sweep: {run_dir} (student {method}, seed {seed})\n")
    print(f"ideal (trained) stack: test accuracy {100 * acc(front):.2f} %\n")
    print("| realised phase bits | test accuracy (%) | max phase change (rad) |\n|---|---|---|")
    for bits in (0, 8, 4, 3, 2, 1):
        cfg = attrs.evolve(front.config, realise_phase_bits=bits)
        clone = type(front)(cfg)
        clone.load_state_dict(front.state_dict())
        real, report = clone.realise(progress=False)
        print(f"| {bits or 'continuous'} | {100 * acc(real):.2f} | {report['max_phase_change_rad']:.3f} |")
    realised, _ = front.realise(progress=False)
    print("\n| error model | setting | value | test accuracy (%, mean of "
          f"{devices} devices) | min | s per device |\n|---|---|---|---|---|---|")
    for name, key, values, fixed in SWEEPS:
        for value in values:
            models = build_error_models([{"name": name, key: value, **fixed}])
            t0 = time.perf_counter()
            accs = [acc(fabricate(realised, models, seed=1000 + i).frontend) for i in range(devices)]
            dt = (time.perf_counter() - t0) / devices
            print(f"| {name} | {key} | {value:g} | {100 * sum(accs) / len(accs):.2f} | {100 * min(accs):.2f} | "
                  f"{dt:.1f} |", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:2], *(sys.argv[2:3] or []))
