"""The uncompensated drop of a trained run's devices, per error model and in total.

For each error model of the run's ``fabricate.errors`` alone (at ``--severity``, default the
run's), and for all of them together, every student seed x ``fabricate.devices`` device is
made with the pipeline's device seeds and its trained backend tested on the test split as
captured through it (no compensation). The drop is against the realised, error-free design
of the same seed. Nothing is written to the run directory.

    python benchmarks/compensation/drop_per_error.py RUN_DIR [--severity S]

Needs a run whose students and realisation are done (e.g. the configs beside this file).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from onnx_run.fabrication.device import scale_error_specs
from onnx_run.pipeline import Pipeline
from onnx_run.train.loop import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--severity", type=float, default=None, help="default: the run's fabricate.severity")
    args = parser.parse_args()
    pipe = Pipeline.from_run_dir(args.run_dir)
    severity = pipe.cfg.fabricate.severity if args.severity is None else args.severity
    errors = scale_error_specs(pipe.cfg.fabricate.errors, severity)
    metric = pipe.task.primary_metric
    realised = {seed: json.loads((pipe.realised_dir(seed) / "summary.json").read_text())[f"test_{metric}"]
                for seed in pipe.seeds()}
    labels = pipe.splits.test.tensors[1]
    print(f"{args.run_dir}: severity {severity:g}, {len(pipe.config_devices())} devices; realised design "
          f"{statistics.mean(realised.values()) * 100:.2f} % (test {metric}, mean over seeds)\n")
    print(f"| error model (severity {severity:g}) | test {metric} (%) | drop (points) |")
    print("|---|---|---|")
    for label, specs in [(spec["name"], [spec]) for spec in errors] + [("all together", errors)]:
        scores, drops = [], []
        for info in pipe.config_devices():
            model, device = pipe.build_device({**info, "errors": specs})
            features = pipe.captured(device, "test", int(info["device_seed"]))[1]
            score = pipe.task.metrics(predict(model.backend, features), labels)[metric]
            scores.append(score * 100)
            drops.append((realised[info["student_seed"]] - score) * 100)
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"| {label} | {statistics.mean(scores):.2f} ± {sd:.2f} | {statistics.mean(drops):.2f} |")


if __name__ == "__main__":
    main()
