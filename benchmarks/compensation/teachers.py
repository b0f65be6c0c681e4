"""Compensation after fabrication: whom to distil from, and with which loss.

For every device of a trained run (``fabricate.devices`` per student seed), the backend is
fine-tuned on the run's captured fraction with:
  e2e           the task loss alone, lr tuned (the run's own ``finetune/``, read, not redone);
  e2e-tuned     the task loss, with the fine-tuning's epochs, batch size and weight decay tuned
                on the same budget as the distillation losses' settings;
  kd / ntkd     from the run's teacher (the run's own ``finetune/`` fine-tunings, read);
  kd@design     Hinton KD from the student as designed (``finetune.teacher = "design"``);
  ntkd@design   the paper's NTKD (task loss + kernel term) from the design;
  ntkd+kd@design  NTKD with the output term (``distill.ntkd.kd_weight``) from the design;
  kd@design+recipe, ntkd@design+recipe  the chosen design settings with the fine-tuning recipe
                the task loss chose (e2e-tuned), one setting fixed beforehand;
  ntkd@design-tuned  the paper's NTKD with beta and the fine-tuning recipe searched together;
  e2e+ntkd-recipe  a control: the task loss at the recipe ntkd@design-tuned chose.
Each tuned method has a grid of settings (the first ``--points`` of it: the same budget for
each; round 1 is the first 4, round 2 the next 4, where round 1 pointed), every setting
fine-tuned at each lr of the run's ``finetune.lr_grid``; the setting with the best mean
validation score over the first student seed's devices is chosen, then run on every device.
Test is read only for the chosen settings. Fine-tunings are kept in
``RUN_DIR/fabricated/<device>/finetune-teachers/`` (a rerun reads them).

    python benchmarks/compensation/teachers.py RUN_DIR [--methods kd@design,ntkd@design] [--points 8]

Needs a run whose fabricate and compensate stages are done (the configs beside this file).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path
from typing import Any

import attrs

from onnx_run.fabrication.finetune import finetune_backend
from onnx_run.pipeline import Pipeline
from onnx_run.report.tables import ci_text, paired

#: method -> (loss, its settings: round 1, then round 2 where round 1 pointed); the first is the
#: default. ``e2e-tuned`` is the task loss with the fine-tuning's own settings on the same budget.
RECIPE: dict[str, Any] = {"epochs": 30, "weight_decay": 5e-4}
GRIDS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "e2e-tuned": ("e2e", [{}, {"epochs": 30}, {"batch_size": 32}, {"weight_decay": 5e-4},
                          {"epochs": 30, "batch_size": 32}, {"epochs": 60}, {"weight_decay": 5e-3},
                          {"epochs": 30, "weight_decay": 5e-4}]),
    "kd@design": ("kd", [{"temperature": 1.0, "alpha": 0.5}, {"temperature": 4.0, "alpha": 0.5},
                         {"temperature": 1.0, "alpha": 0.9}, {"temperature": 4.0, "alpha": 0.9},
                         {"temperature": 8.0, "alpha": 0.9}, {"temperature": 4.0, "alpha": 1.0},
                         {"temperature": 8.0, "alpha": 1.0}, {"temperature": 2.0, "alpha": 0.9}]),
    "ntkd@design": ("ntkd", [{}, {"beta": 10.0, "beta_schedule": "constant"},
                             {"beta": 3.0, "beta_schedule": "constant"},
                             {"discrepancy": "mse_normalized", "beta": 3.0, "beta_schedule": "constant"},
                             {"beta": 30.0, "beta_schedule": "constant"},
                             {"beta": 100.0, "beta_schedule": "constant"},
                             {"beta": 300.0, "beta_schedule": "constant"},
                             {"discrepancy": "mse_normalized", "beta": 30.0, "beta_schedule": "constant"}]),
    "ntkd+kd@design": ("ntkd", [{**kd, **g} for kd in [{"alpha": 0.5, "kd_weight": 0.5, "kd_temperature": 4.0}]
                                for g in [{}, {"beta": 10.0, "beta_schedule": "constant"},
                                          {"beta": 3.0, "beta_schedule": "constant"},
                                          {"discrepancy": "mse_normalized", "beta": 3.0, "beta_schedule": "constant"},
                                          {"beta": 30.0, "beta_schedule": "constant"},
                                          {"beta": 100.0, "beta_schedule": "constant"},
                                          {"beta": 300.0, "beta_schedule": "constant"},
                                          {"discrepancy": "mse_normalized", "beta": 30.0, "beta_schedule": "constant"}]]),
    # a control: the task loss at the recipe ntkd@design-tuned chose (not in e2e-tuned's grid)
    "e2e+ntkd-recipe": ("e2e", [{"epochs": 60, "weight_decay": 5e-4}]),
    # the paper's NTKD with its beta and the fine-tuning recipe searched together, on the same
    # budget as e2e-tuned: the recipe points start from what the task loss chose
    "ntkd@design-tuned": ("ntkd", [{"beta": 30.0, "beta_schedule": "constant", **RECIPE},
                                   {"beta": 30.0, "beta_schedule": "constant"},
                                   {"beta": 100.0, "beta_schedule": "constant", **RECIPE},
                                   {"beta": 10.0, "beta_schedule": "constant", **RECIPE},
                                   {"beta": 300.0, "beta_schedule": "constant", **RECIPE},
                                   {"beta": 30.0, "beta_schedule": "constant", "epochs": 30},
                                   {"beta": 30.0, "beta_schedule": "constant", "epochs": 60, "weight_decay": 5e-4},
                                   {"discrepancy": "mse_normalized", "beta": 30.0, "beta_schedule": "constant",
                                    **RECIPE}]),
    # the chosen design settings with the task loss's chosen fine-tuning recipe (e2e-tuned on
    # both optics), fixed beforehand: one setting, no search of its own
    "kd@design+recipe": ("kd", [{"temperature": 4.0, "alpha": 0.9, **RECIPE}]),
    "ntkd@design+recipe": ("ntkd", [{"beta": 30.0, "beta_schedule": "constant", **RECIPE}]),
}


def label(settings: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()) or "default"


class Device:
    """One device's fine-tuning inputs (``Pipeline.compensation_context``, from the design), built
    on the first fine-tuning that is not stored yet."""

    def __init__(self, pipe: Pipeline, info: dict[str, Any]):
        self.pipe, self.info = pipe, info
        self.out = pipe.device_dir(info["name"]) / "finetune-teachers"

    @functools.cached_property
    def context(self) -> dict[str, Any]:
        return self.pipe.compensation_context(self.info, attrs.evolve(self.pipe.cfg.finetune, teacher="design"))

    def tune(self, method: str, loss: str, settings: dict[str, Any]) -> dict[str, Any]:
        """The lr search of one setting (or read back)."""
        pipe = self.pipe
        folder = self.out / method / label(settings)
        # every method here distils from the design (or from nobody): the same loss and settings
        # under another method's name is the same fine-tuning, read back
        for same in [folder] + [self.out / m / label(settings) for m, (lo, _) in GRIDS.items() if lo == loss]:
            if (same / "summary.json").exists():
                return json.loads((same / "summary.json").read_text())
        choices = pipe.compensation_losses("design")
        # a setting names fine-tuning keys (epochs, batch_size, weight_decay) and the loss's own
        recipe_keys = {f.name for f in attrs.fields(type(pipe.cfg.finetune))}
        ft = attrs.evolve(pipe.cfg.finetune, **{k: v for k, v in settings.items() if k in recipe_keys})
        loss_settings = {k: v for k, v in settings.items() if k not in recipe_keys}
        if loss_settings:
            choices[loss] = attrs.evolve(choices[loss], config=attrs.evolve(choices[loss].config, **loss_settings))

        def run(ft: Any, run_dir: Path) -> dict[str, Any]:
            return finetune_backend(task=pipe.task, splits=pipe.splits, method=loss, settings=ft, run_dir=run_dir,
                                    seed=int(self.info["student_seed"]), device=pipe.device, loss_choices=choices,
                                    progress=False, precision=pipe.precision, **self.context)
        return pipe._lr_search(run, ft, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--methods", default=",".join(m for m in GRIDS if "recipe" not in m),
                        help=f"of {', '.join(GRIDS)}")
    parser.add_argument("--points", type=int, default=4, choices=range(1, 9),
                        help="the first POINTS settings of each grid (the same for every method; a grid "
                             "shorter than that is run whole)")
    args = parser.parse_args()
    pipe = Pipeline.from_run_dir(args.run_dir)
    pipe.progress = False
    # each grid is over the losses' own settings ([distill.<name>]), not the run's finetune.distill
    pipe.cfg.sections["finetune"] = attrs.evolve(pipe.cfg.finetune, distill={})
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in GRIDS]
    if unknown:
        parser.error(f"--methods: unknown {', '.join(unknown)}; allowed: {', '.join(GRIDS)}")
    metric = pipe.task.primary_metric
    infos = pipe.config_devices()
    first = [i for i in infos if i["student_seed"] == infos[0]["student_seed"]]
    held: dict[str, Device] = {}

    def device(info: dict[str, Any]) -> Device:  # one device's captures in memory at a time
        if info["name"] not in held:
            held.clear()
            held[info["name"]] = Device(pipe, info)
        return held[info["name"]]

    scores: dict[str, dict[str, float]] = {}
    for info in infos:  # the run's own fine-tunings
        for method in ("none", "e2e", "kd", "ntkd"):
            path = pipe.device_dir(info["name"]) / "finetune" / method / "summary.json"
            if path.exists():
                scores.setdefault(method, {})[info["name"]] = json.loads(path.read_text())[f"test_{metric}"] * 100
    print(f"{args.run_dir}: {len(infos)} devices; settings chosen on the validation images of "
          f"{', '.join(i['name'] for i in first)}\n")
    print(f"| method | setting | mean validation {metric} (%) |")
    print("|---|---|---|")
    for method in methods:
        loss, grid = GRIDS[method]
        grid = grid[:args.points]
        runs = {(i["name"], label(s)): device(i).tune(method, loss, s)[f"val_{metric}"] for i in first for s in grid}
        val = {label(s): statistics.mean(runs[i["name"], label(s)] for i in first) * 100 for s in grid}
        for settings in grid:
            print(f"| {method} | {label(settings)} | {val[label(settings)]:.2f} |", flush=True)
        chosen = max(grid, key=lambda s: val[label(s)])  # the first of equals: the default
        for info in infos:
            scores.setdefault(f"{method} ({label(chosen)})", {})[info["name"]] = \
                device(info).tune(method, loss, chosen)[f"test_{metric}"] * 100
    print(f"\n| compensation | test {metric} (%), mean ± std | devices |")
    print("|---|---|---|")
    for name, by_device in scores.items():
        vals = list(by_device.values())
        print(f"| {name} | {statistics.mean(vals):.2f} ± {statistics.stdev(vals) if len(vals) > 1 else 0:.2f} "
              f"| {len(vals)} |")
    print("\n| paired over devices | points, mean ± std | 95 % CI | devices won |")
    print("|---|---|---|---|")
    chosen_name = {n.split(" ")[0]: n for n in scores}
    pairs = [(n, base) for base in ("e2e", chosen_name.get("e2e-tuned")) if base
             for n in scores if n not in ("none", "e2e") and n != base]
    pairs += [(chosen_name[a], chosen_name[b]) for a, b in [("kd@design", "kd"), ("ntkd@design", "ntkd"),
                                                           ("ntkd+kd@design", "kd@design"),
                                                           ("ntkd@design+recipe", "ntkd@design"),
                                                           ("ntkd@design-tuned", "ntkd@design"),
                                                           ("ntkd@design-tuned", "e2e+ntkd-recipe"),
                                                           ("kd@design+recipe", "kd@design")]
              if a in chosen_name and b in chosen_name]
    for name, against in pairs:
        if against in scores:
            common = sorted(set(scores[name]) & set(scores[against]))
            d = paired([scores[name][k] / 100 for k in common], [scores[against][k] / 100 for k in common])
            print(f"| {name} - {against} | {d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} | {ci_text(d)} "
                  f"| {d['wins']}/{d['n']} |")


if __name__ == "__main__":
    main()
