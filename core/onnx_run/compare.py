"""Distillation methods compared under one protocol (``onnx-run compare``).

The protocol, the same for every method in ``students.methods``:

1. search: a grid over the method's own settings (``compare.space``, else the loss's
   ``search_space``), every grid the same size (the same search budget). Each point is trained
   with the search seeds (run.seed + 100 + i, never a final seed), optionally on fewer images
   or epochs (``compare.search_*``), and scored by its mean validation metric. Test data is
   never looked at;
2. final: the best point of each method, trained with the ``run.seeds`` final seeds on the full
   budget (train.*), tested once;
3. report: mean ± std per method, and per-seed paired differences (the same seed gives the same
   initial optics and backend, data split and batch order to every method) with a Student-t
   95 % confidence interval.

A plain grid rather than Optuna: with 4-6 trials per method a sampler has nothing to learn
from, a grid gives every method exactly the same budget, is reproducible without a study
database, and resumes for free (each trial is an ordinary training run directory).
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any, Callable

import attrs

from onnx_run.config import RunConfig, resolve, set_dotted
from onnx_run.errors import UserError
from onnx_run.files import atomic_write_text, write_json
from onnx_run.pipeline import Pipeline, default_run_dir, run_dir_config
from onnx_run.report.tables import ci_text, paired

#: search seeds are offset from the final ones so that no final seed is tuned on
SEARCH_SEED_OFFSET = 100


def compare_run_dir(cfg: RunConfig) -> Path:
    base = default_run_dir(cfg)
    return base.with_name(base.name + "-compare")


def space_of(cfg: RunConfig, method: str) -> dict[str, list[Any]]:
    """``compare.space.<method>``, else the loss's own ``search_space``."""
    from onnx_run.plugins import get_component

    space = cfg.compare.space.get(method)
    if space is None:
        space = getattr(get_component("distillation_losses", method).factory, "search_space", {}) or {}
    return {k: list(v) for k, v in space.items()}


def grid_of(cfg: RunConfig, method: str) -> list[dict[str, Any]]:
    """The points of ``method``'s grid, each ``{"section.key": value}``, in a fixed order."""
    space = space_of(cfg, method)
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def point_config(cfg: RunConfig, point: dict[str, Any], method: str) -> RunConfig:
    """The run config with one grid point applied (a bad key or value: one line naming it)."""
    raw = cfg.to_dict()
    raw["students"] = {"methods": [method]}
    for key, value in point.items():
        set_dotted(raw, key, value)
    try:
        return resolve(raw)
    except UserError as exc:
        raise UserError(f"compare.space.{method}: {exc}") from None


def describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items()) or "defaults"


def check_budgets(grids: dict[str, list[dict[str, Any]]]) -> None:
    sizes = {m: len(g) for m, g in grids.items()}
    if len(set(sizes.values())) > 1:
        raise UserError("compare.space: every method needs a grid of the same size (the same search budget); "
                        f"got {', '.join(f'{m} {n}' for m, n in sizes.items())}; set compare.space.<method>")


def search_settings(cfg: RunConfig):
    """train.* for the search: fewer epochs / images when compare.search_* ask for it."""
    c = cfg.compare
    changes = {}
    if c.search_epochs:
        changes["epochs"] = c.search_epochs
    if c.search_max_train:
        changes["max_train"] = c.search_max_train
    return attrs.evolve(cfg.train, **changes)


class Comparison:
    """One comparison run directory: search trials, final students, tables and a figure."""

    def __init__(self, cfg: RunConfig, run_dir: Path | None = None, *, echo: Callable[[str], None] = print):
        from onnx_run.plugins import get_component

        methods = list(cfg.students.methods)
        recipe = cfg.compare.recipe
        if recipe:
            get_component("distillation_losses", recipe, key="compare.recipe")  # a misspelt name: one line
        for name in cfg.compare.space:  # a grid for a method not compared now is kept; a misspelt one is not
            get_component("distillation_losses", name, key=f"compare.space.{name}")
        # the recipe's method is searched first: the others train with what it chose
        self.methods = ([recipe] if recipe in methods else []) + [m for m in methods if m != recipe]
        self.recipe_method = recipe if recipe in methods else None
        self.recipe: dict[str, Any] = {}
        # the grids written into the run's config: a resume searches what the run searched
        cfg.sections["compare"] = attrs.evolve(cfg.compare, space={m: space_of(cfg, m) for m in self.methods})
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else compare_run_dir(cfg)
        self.echo = echo
        self.grids = {m: grid_of(cfg, m) for m in self.methods}
        # every point resolves before anything is written or trained (a misspelt key is named
        # before a grid size is compared)
        self.point_cfgs = {m: [point_config(cfg, p, m) for p in g] for m, g in self.grids.items()}
        check_budgets(self.grids)
        self.pipe = Pipeline(cfg, self.run_dir)
        self.primary = self.pipe.task.primary_metric
        for configs in self.point_cfgs.values():
            for c in configs:
                self.pipe.variant(c)  # a point that changes the data or teacher: refused now

    @classmethod
    def from_run_dir(cls, run_dir: Path, **kwargs: Any) -> "Comparison":
        return cls(run_dir_config(run_dir), Path(run_dir), **kwargs)

    # -- the protocol ---------------------------------------------------------------------
    def search_seeds(self) -> list[int]:
        first = self.cfg.run.seed + SEARCH_SEED_OFFSET
        return [first + i for i in range(self.cfg.compare.search_seeds)]

    def run(self, *, search_only: bool = False) -> dict[str, Any]:
        """The protocol; ``search_only`` stops after the search (a study of settings on the
        validation split: nothing is tested)."""
        self.pipe.prepare()
        teacher = self.pipe.stage_teacher()
        write_json(self.run_dir / "teacher.json", teacher)
        n_points = len(next(iter(self.grids.values())))
        self.echo(f"teacher {teacher['name']}: test {self.primary} {teacher[f'test_{self.primary}'] * 100:.2f} %; "
                  f"search: {n_points} points x {len(self.search_seeds())} seeds per method; "
                  f"final: {self.cfg.run.seeds} seeds")
        search = self.search()
        if search_only:
            atomic_write_text(self.run_dir / "search.md", render_search(search, self.primary))
            return {"search": search}
        final = self.final(search)
        return self.report(search, final)

    def settings_of(self, method: str, point: dict[str, Any]) -> dict[str, Any]:
        """What a point trains with: the shared recipe under the point's own settings."""
        return {**(self.recipe if method != self.recipe_method else {}), **point}

    def point_dir(self, method: str, i: int, point: dict[str, Any]) -> Path:
        """search/<method>/point<i>-<digest of the settings>: a point trained under another recipe
        (a changed grid, a resumed run) never reuses the wrong training."""
        import hashlib

        key = json.dumps(self.settings_of(method, point), sort_keys=True, default=str)
        return self.run_dir / "search" / method / f"point{i}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"

    def set_recipe(self, search: list[dict[str, Any]]) -> None:
        """The recipe method's chosen train.* settings, applied to every other method's points."""
        if self.recipe_method is None:
            return
        best = self.chosen(search, self.recipe_method)
        self.recipe = {k: v for k, v in best["settings"].items() if k.startswith("train.")}
        for m in self.methods:
            if m != self.recipe_method:
                self.point_cfgs[m] = [point_config(self.cfg, self.settings_of(m, p), m) for p in self.grids[m]]
        if self.recipe:
            self.echo(f"training recipe (chosen by {self.recipe_method}'s search, shared by every method): "
                      f"{describe(self.recipe)}")

    def search(self) -> list[dict[str, Any]]:
        rows = []
        for method in self.methods:
            if method != self.recipe_method and self.recipe_method is not None and not self.recipe:
                self.set_recipe(rows)
            for i, (point, pcfg) in enumerate(zip(self.grids[method], self.point_cfgs[method])):
                pipe, settings = self.pipe.variant(pcfg), search_settings(pcfg)
                vals, walls = [], []
                for seed in self.search_seeds():
                    out = self.point_dir(method, i, point) / f"seed{seed}"
                    summary = pipe.train_student(method, seed, out, settings=settings,
                                                 desc=f"search {method} {i + 1}/{len(self.grids[method])} seed {seed}")
                    vals.append(summary[f"val_{self.primary}"])
                    walls.append(summary["wall_time_s"])
                row = {"method": method, "point": i, "settings": point,
                       "recipe": self.recipe if method != self.recipe_method else {}, f"val_{self.primary}_all": vals,
                       f"val_{self.primary}_mean": statistics.fmean(vals), "wall_time_s_median": statistics.median(walls)}
                self.echo(f"search {method} [{describe(point)}]: val {self.primary} "
                          f"{row[f'val_{self.primary}_mean'] * 100:.2f} %")
                rows.append(row)
                write_json(self.run_dir / "search.json", rows)
        return rows

    def chosen(self, search: list[dict[str, Any]], method: str) -> dict[str, Any]:
        """The best point of ``method`` on validation (the first of equals: grids list the
        lighter settings first)."""
        rows = [r for r in search if r["method"] == method]
        return max(rows, key=lambda r: (r[f"val_{self.primary}_mean"], -r["point"]))

    def final(self, search: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for method in self.methods:
            best = self.chosen(search, method)
            pcfg = self.point_cfgs[method][best["point"]]
            pipe = self.pipe.variant(pcfg)
            summaries = []
            for seed in self.pipe.seeds():
                out = self.run_dir / "final" / method / f"seed{seed}"
                summaries.append(pipe.train_student(method, seed, out, desc=f"final {method} seed {seed}"))
            test = [s[f"test_{self.primary}"] for s in summaries]
            row = {"method": method, "settings": best["settings"], "point": best["point"],
                   "seeds": [s["seed"] for s in summaries], f"test_{self.primary}_all": test,
                   f"val_{self.primary}_all": [s[f"val_{self.primary}"] for s in summaries],
                   f"test_{self.primary}_mean": statistics.fmean(test),
                   f"test_{self.primary}_std": statistics.stdev(test) if len(test) > 1 else 0.0,
                   "wall_time_s_median": statistics.median(s["wall_time_s"] for s in summaries)}
            self.echo(f"final {method} [{describe(best['settings'])}]: test {self.primary} "
                      f"{_pm(test)} over {len(test)} seeds")
            rows.append(row)
            write_json(self.run_dir / "final.json", rows)
        return rows

    # -- report -----------------------------------------------------------------------------
    def report(self, search: list[dict[str, Any]], final: list[dict[str, Any]]) -> dict[str, Any]:
        from onnx_run.report.figures import comparison_figure

        key = f"test_{self.primary}_all"
        by = {r["method"]: r for r in final}
        pairs = []
        for a, b in itertools.combinations(self.methods[::-1], 2):  # later methods against earlier ones
            pairs.append({"a": a, "b": b, **paired(by[a][key], by[b][key])})
        teacher = json.loads((self.run_dir / "teacher.json").read_text())
        c = self.cfg
        protocol = {
            "optics": c.optics.name, "task": c.task.name, "dataset": self.pipe.dataset,
            "train": {"epochs": c.train.epochs, "max_train": c.train.max_train, "batch_size": c.train.batch_size},
            "search": {"seeds": self.search_seeds(), "epochs": search_settings(c).epochs,
                       "max_train": search_settings(c).max_train, "points_per_method": len(self.grids[self.methods[0]])},
            "recipe_method": self.recipe_method, "recipe": self.recipe,
            "final_seeds": self.pipe.seeds(), "split_sizes": {"train": len(self.pipe.splits.train),
                                                              "val": len(self.pipe.splits.val),
                                                              "test": len(self.pipe.splits.test)},
        }
        result = {"primary_metric": self.primary, "protocol": protocol, "teacher": teacher, "search": search,
                  "final": final, "paired": pairs}
        write_json(self.run_dir / "compare.json", result)
        (self.run_dir / "figures").mkdir(exist_ok=True)
        fig = comparison_figure(result, self.run_dir / "figures" / "compare.png")
        atomic_write_text(self.run_dir / "compare.md", render_markdown(result, fig.relative_to(self.run_dir)))
        return result


def _pm(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean * 100:.2f} ± {std * 100:.2f} %"


def render_markdown(result: dict[str, Any], figure: Path) -> str:
    p = result["protocol"]
    m = result["primary_metric"]
    t = result["teacher"]
    s = p["search"]
    lines = [
        f"# Comparison: {p['optics']} optics, {p['task']} on {p['dataset']}", "",
        f"Teacher `{t['name']}`: test {m} {t[f'test_{m}'] * 100:.2f} % ({t.get('parameters', '?')} parameters)."
        + (f" **Warning: {t['warning']}.**" if t.get("warning") else ""),
        f"Split sizes: train {p['split_sizes']['train']}, val {p['split_sizes']['val']}, "
        f"test {p['split_sizes']['test']}.",
        f"Protocol: every method gets {s['points_per_method']} grid points, each trained with search seeds "
        f"{s['seeds']} for {s['epochs']} epochs on "
        f"{s['max_train'] or 'all'} training images and scored on the validation split; the best point "
        f"of each method is trained with seeds {p['final_seeds']} for {p['train']['epochs']} epochs on "
        f"{p['train']['max_train'] or 'all'} training images (batch {p['train']['batch_size']}) and tested once.",
        (f"Training recipe chosen by `{p['recipe_method']}`'s search and shared by every method: "
         f"{describe(p['recipe'])}." if p.get("recipe") else "Every method trains with the run's own train.* settings."),
        "",
        f"## Test {m} (%), chosen settings", "",
        "| method | chosen settings (on val) | test " + m + " (%) | per seed | wall time / run (median, s) |",
        "|---|---|---|---|---|",
    ]
    for r in result["final"]:
        per_seed = " / ".join(f"{x * 100:.2f}" for x in r[f"test_{m}_all"])
        lines.append(f"| {r['method']} | {describe(r['settings'])} | {_pm(r[f'test_{m}_all'])[:-2]} | {per_seed} | "
                     f"{r['wall_time_s_median']:.1f} |")
    lines += ["", f"## Paired differences (test {m}, points; same seed = same init, split and batches)", "",
              "| difference | mean ± std | 95 % CI (Student t) | seeds won |", "|---|---|---|---|"]
    for d in result["paired"]:
        lines.append(f"| {d['a']} - {d['b']} | {d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} | "
                     f"{ci_text(d)} | {d['wins']}/{d['n']} |")
    lines += [""] + render_search(result["search"], m).splitlines()
    lines += ["", "How to read this: a difference whose interval excludes 0 is one the seeds support; with "
              "5 seeds the interval is wide, so 'seeds won' says how consistent it is.", "",
              f"![comparison]({figure})", ""]
    return "\n".join(lines)


def render_search(search: list[dict[str, Any]], metric: str) -> str:
    """The search table: every grid point with its validation score (per seed and mean)."""
    lines = [f"## Search (validation {metric}, %, mean over search seeds)", "",
             f"| method | settings | val {metric} (mean) | per search seed | wall time / run (median, s) |",
             "|---|---|---|---|---|"]
    for r in search:
        per_seed = " / ".join(f"{x * 100:.2f}" for x in r[f"val_{metric}_all"])
        wall = r.get("wall_time_s_median")
        lines.append(f"| {r['method']} | {describe(r['settings'])} | {r[f'val_{metric}_mean'] * 100:.2f} | {per_seed} | "
                     f"{'' if wall is None else f'{wall:.1f}'} |")
    return "\n".join(lines) + "\n"


__all__ = ["Comparison", "compare_run_dir", "grid_of", "paired"]
