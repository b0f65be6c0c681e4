"""Accuracy reachable by a design, before training: NTK kernel ridge regression with the kernel
of the student as it starts to learn.

The student is the one the run trains (its own backend widths, ``width_multiplier`` 1), built
from its own seed and trained on the task loss alone for ``warmup_steps`` steps (default: 5 % of
the run's own training steps, at most 500) of the run's own recipe (optics and backend
together: batch size, lrs, optimiser). Its empirical NTK with respect
to the backend's parameters at that point, the "after kernel", is what the estimate regresses
with. Why the warm-up: at initialisation the optics are random and the backend's kernel is
that of random features, which trained students beat by several points, most where training
moves the optics (the diffractive stack); a few hundred steps align the optics and the
kernel with the task, and after them the kernel changes slowly (Fort et al. 2020, "Deep
learning versus kernel learning"), so regression with it tracks what the full training reaches.
``warmup_steps = 0`` gives the random-optics estimate of the paper's figures.

Kernel ridge regression on centred one-hot targets, y = K(X*, X)(K(X, X) + lambda I)^-1 Y, over
every training image: up to ``EXACT_LIMIT`` images with the exact kernel, beyond that with a
seeded random-feature sketch of the same tangent features (R = ``directions`` per output,
relative error ~ 1/sqrt(R)) solved in its primal form, which costs one pass over the data and a
(O R) x (O R) eigendecomposition. The data size matters: on Fashion-MNIST the regression on
1 000 images sits 7 points under the same kernel on all 54 000. The ridge lambda = r x
mean(diag K) is chosen on the validation split; the predictions of ``inits`` students (seeds)
are averaged, and the estimate is the test metric of that average.

Outputs per pixel (a task with a ``pixel_readout``: segmentation) are regressed pixel by pixel
with the NTK of the backend's last, per-pixel linear layer, exact and small: a kernel between
whole outputs can only predict a mask as a weighted sum of training masks.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from onnx_run.components import HybridModel
from onnx_run.config import RunConfig
from onnx_run.progress import bar as progress_bar
from onnx_run.train.loop import make_optimizer, predict, seed_everything

DEFAULT_RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)

#: bootstrap resamples of the test images behind an estimate's standard error
BOOTSTRAP_DRAWS = 100

#: images (train + val + test) up to which each student's kernel is the exact n x n NTK
EXACT_LIMIT = 4096

#: warmup_steps -1: ``warmup_percent`` (default 5, a task may ask for more) of the run's own
#: training steps (epochs x batches per epoch), at most WARMUP_MAX_STEPS: the kernel moves most
#: early on, so a longer run needs no longer warm-up (Fashion-MNIST, metasurface, a 100-epoch
#: run: 169 / 422 / 2 110 steps give 87.71 / 87.54 / 87.77 %), and the estimate's cost does not
#: grow with the run's epochs
WARMUP_MAX_STEPS = 500

#: points of the learning curve (n, n/2, n/4, ...) when the regression is extrapolated
CURVE_POINTS = 4

ESTIMATE_DEFAULTS = {"inits": 2, "width_multiplier": 1, "max_train": 1_000_000, "max_eval": 10_000,
                     "warmup_steps": -1, "warmup_percent": 5, "directions": 256}

#: the value of an ``[estimate]`` key that means "automatic" (0 unless listed: for the warm-up,
#: 0 is a choice, the random-optics estimate)
AUTOMATIC = {"warmup_steps": -1}

#: the pipeline's estimate curve (1, 2, 4, ... kernels below the design): one student a point
CURVE_DEFAULTS = {"inits": 1}


def run_steps(settings: Any, n_train: int) -> int:
    """Optimiser steps of the run's own training on ``n_train`` images (train.max_train applied)."""
    n = min(n_train, settings.max_train) if settings.max_train else n_train
    return int(settings.epochs) * math.ceil(n / int(settings.batch_size))


def automatic_warmup(settings: Any, n_train: int, percent: int) -> int:
    """The default warm-up: ``percent`` % of the run's steps, at most WARMUP_MAX_STEPS."""
    return min(round(percent / 100 * run_steps(settings, n_train)), WARMUP_MAX_STEPS)


def _targets(y: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """Centred one-hot targets shaped like the task's outputs, flattened per sample."""
    onehot = F.one_hot(y.long(), num_outputs).to(torch.float64)
    if onehot.dim() > 2:  # dense (N, H, W, C) -> (N, C, H, W)
        onehot = onehot.movedim(-1, 1)
    return (onehot - 1.0 / num_outputs).flatten(1)


def _subset(ds, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ds.tensors[0], ds.tensors[1]
    if n and x.shape[0] > n:
        # not sorted: prefixes of the subset are random subsets too (the learning curve)
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[idx], y[idx]
    return x, y


def warm_up(model: HybridModel, task: Any, x: torch.Tensor, y: torch.Tensor, settings: Any, *, steps: int,
            seed: int, device: torch.device | str = "cpu") -> None:
    """``steps`` steps of the task loss on random batches, with the run's optimiser and lrs
    (optics and backend), no schedule and no teacher: the start of the run's own training.
    Leaves the model in eval mode, ready for its kernel."""
    if steps <= 0:
        model.eval()
        return
    opt = make_optimizer(model, settings, None)
    gen = torch.Generator().manual_seed(seed)
    batch = min(int(settings.batch_size), x.shape[0])
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        loss = task.loss(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def tangent_features(model: HybridModel, x: torch.Tensor, *, reduce, directions: int, seed: int,
                     chunk: int = 512, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, O R) float32 features phi with phi_i . phi_j ~ the backend's trace NTK (a seeded
    sketch, see ntk.factors.FactorSketch), one pass over ``x`` in chunks, on ``device``."""
    from onnx_run.ntk.factors import FactorSketch
    from onnx_run.ntk.structured import kernel_factors

    params = {n: p.detach() for n, p in model.backend.named_parameters() if p.requires_grad}
    sketch = FactorSketch(directions, torch.Generator().manual_seed(seed))
    out: torch.Tensor | None = None  # filled in place: a concatenation would copy it once more
    for lo in range(0, x.shape[0], chunk):
        feats = model.frontend(x[lo:lo + chunk].to(device))
        fac = kernel_factors(model.backend, feats, params, reduce, structured=True, cost_rows=chunk,
                             cost_pairs=chunk * chunk)
        block = sketch(fac).float()
        if out is None:
            out = torch.empty((x.shape[0], block.shape[1]), dtype=block.dtype, device=block.device)
        out[lo:lo + block.shape[0]] = block
    assert out is not None, "no images"
    return out


def _feature_gram(phi: Tensor) -> Tensor:
    """Phi^T Phi (D, D) in float64 from rows ``phi`` (n, D). On the CPU, float32 rows go to
    BLAS syrk, which forms only one triangle of the symmetric product: half the
    multiply-adds of a matmul, and over every training image this product is the largest
    single cost of the accuracy estimate."""
    if phi.device.type == "cpu" and phi.dtype == torch.float32 and phi.shape[0] > 0:
        from scipy.linalg import blas

        upper = torch.from_numpy(blas.ssyrk(1.0, phi.contiguous().numpy().T, trans=0)).double()
        return upper.triu() + upper.triu(1).T
    return (phi.T @ phi).double()


def _curve_predictions(kernel: torch.Tensor | None, phi: torch.Tensor | None, sizes: list[int], ntr: int,
                       y_train: torch.Tensor, ridges) -> dict[int, dict[float, torch.Tensor]]:
    """Kernel ridge predictions on the evaluation rows (those after the ``ntr`` training rows)
    from the first n training images, for each n in ``sizes`` and every relative ridge
    (lambda = r mean(diag K_n)). From the exact kernel (n x n solves), or from tangent
    features ``phi`` (n, D): D x D primal solves once n > D, with the Gram accumulated over
    the growing prefixes, so the whole learning curve costs one pass over the rows."""
    from onnx_run.ntk.regression import feature_ridge_regression, kernel_ridge_regression

    y = y_train.double()
    out: dict[int, dict[float, torch.Tensor]] = {}
    if phi is None:
        assert kernel is not None
        return {n: {float(r): kernel_ridge_regression(kernel[:n, :n], kernel[ntr:, :n], y[:n], ridge=r)
                    for r in ridges} for n in sizes}
    evals = phi[ntr:].double()  # once, not once a ridge
    gram = torch.zeros((phi.shape[1], phi.shape[1]), dtype=torch.float64)
    rhs = torch.zeros((phi.shape[1], y.shape[1]), dtype=torch.float64)
    done = 0
    for n in sizes:
        block = phi[done:n]
        gram += _feature_gram(block)  # float32 products, float64 solves
        rhs += (block.T @ y[done:n].to(block.dtype)).double()
        done = n
        if n <= phi.shape[1]:  # fewer images than features: the n x n dual is the smaller system
            k = phi[:n].double() @ torch.cat([phi[:n], evals]).double().T
            out[n] = {float(r): kernel_ridge_regression(k[:, :n], k[:, n:].T, y[:n], ridge=r) for r in ridges}
        else:
            out[n] = {float(r): feature_ridge_regression(gram, rhs, evals, n=n, ridge=r) for r in ridges}
    return out


def _pixel_rows(model: HybridModel, task: Any, x: torch.Tensor, device: torch.device | str) -> torch.Tensor | None:
    """(B H W, D + 1) float32: at every output pixel what the backend's per-pixel readout reads,
    and a 1 for its bias, whose dot products are that layer's NTK between pixels (up to the
    factor O of the trace over outputs, which the relative ridge absorbs); None where the task
    has no per-pixel readout."""
    with torch.no_grad():
        h = task.pixel_readout(model.backend, model.frontend(x.to(device)))
    if h is None:
        return None
    h = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)
    return h.movedim(1, -1).reshape(-1, h.shape[1]).float().cpu()


def _own_score(model: HybridModel, task: Any, x: torch.Tensor, y: torch.Tensor, device: torch.device | str,
               chunk: int = 512) -> float:
    """The student's own test score, read from its outputs without any regression: the
    baseline the kernel regression has to beat to be worth its cost."""
    return task.metrics(predict(model, x, batch_size=chunk, device=device), y)[task.primary_metric]


def readout_predictions(model: HybridModel, task: Any, x_train: torch.Tensor, y_train: torch.Tensor,
                        x_eval: torch.Tensor, *, sizes: list[int], ridges, num_outputs: int, chunk: int = 64,
                        device: torch.device | str = "cpu") -> dict[int, dict[float, torch.Tensor]] | None:
    """Pixel-by-pixel ridge regression with the NTK of the backend's per-pixel readout (the
    task's :meth:`~onnx_run.components.Task.pixel_readout`): every pixel of the first n training
    images a row, for each n in ``sizes`` and every relative ridge. The Gram is accumulated
    over the training images in chunks (they are never held), the evaluation pixels are kept.
    Predictions come back per image, laid out as ``_targets`` lays out its rows: (m, O H W).
    None where the task has no per-pixel readout."""
    from onnx_run.ntk.regression import feature_ridge_weights

    if _pixel_rows(model, task, x_train[:1], device) is None:
        return None
    gram = rhs = None
    solved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    done = 0
    for n in sizes:
        for lo in range(done, n, chunk):
            phi = _pixel_rows(model, task, x_train[lo:min(lo + chunk, n)], device)
            y = F.one_hot(y_train[lo:min(lo + chunk, n)].long(), num_outputs).reshape(-1, num_outputs)
            g, r = _feature_gram(phi), (phi.T @ (y.float() - 1.0 / num_outputs)).double()
            gram, rhs = (g, r) if gram is None else (gram + g, rhs + r)
        done = n
        solved[n] = (gram.clone(), rhs.clone())
    evals = [_pixel_rows(model, task, x_eval[lo:lo + chunk], device) for lo in range(0, x_eval.shape[0], chunk)]
    pixels = evals[0].shape[0] // min(chunk, x_eval.shape[0])

    def on_eval_pixels(weights: torch.Tensor) -> torch.Tensor:  # (m, O H W), O-major like _targets
        pred = torch.cat([(e.double() @ weights).float() for e in evals])
        return pred.reshape(x_eval.shape[0], pixels, num_outputs).transpose(1, 2).reshape(x_eval.shape[0], -1)

    return {n: {float(r): on_eval_pixels(feature_ridge_weights(g, b, n=n * pixels, ridge=r)) for r in ridges}
            for n, (g, b) in solved.items()}


def learning_curve_fit(sizes: list[int], scores: list[float], at: int) -> float:
    """The score at ``at`` training images, extrapolated from the learning curve: the error
    1 - score modelled as a + b n^-c (a, b >= 0, 0 < c <= 2), least squares over ``sizes``,
    and the fitted gain from the largest size to ``at`` added to the score measured there
    (a curve that does not rise gains nothing); at most 1."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    n = np.asarray(sizes, dtype=float)
    err = 1.0 - np.asarray(scores, dtype=float)
    if len(n) < 3 or at <= n[-1]:
        return float(scores[-1])

    def model(x, a, b, c):
        return a + b * (x / n[-1]) ** (-c)  # n scaled by the largest size: b is the error there, less a

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # few points: no covariance, which is not used
            (a, b, c), _ = curve_fit(model, n, err, p0=(err[-1] / 2, err[-1] / 2, 0.5),
                                     bounds=([0.0, 0.0, 1e-3], [1.0, 1.0, 2.0]), maxfev=20000)
    except RuntimeError:  # no fit: keep what was measured
        return float(scores[-1])
    return float(min(1.0, scores[-1] + model(n[-1], a, b, c) - model(at, a, b, c)))


def estimate_sizes(cfg: RunConfig, task: Any, *, curve: bool = False, **given: int | None) -> dict[str, int]:
    """The estimate's sizes, lowest first: ESTIMATE_DEFAULTS, the task's ``estimate_settings()``
    (with ``curve``, then its ``"curve"`` sizes: the pipeline's estimate curve), the config's
    ``[estimate]`` (0 = automatic; ``warmup_steps`` -1 = automatic: ``warmup_percent`` of the
    run's steps, at most WARMUP_MAX_STEPS; 0 = none), then ``given`` (command options; None = not given)."""
    suggested = task.estimate_settings()
    sizes = {**ESTIMATE_DEFAULTS, **{k: v for k, v in suggested.items() if k in ESTIMATE_DEFAULTS}}
    if curve:
        sizes.update(CURVE_DEFAULTS)
        sizes.update(suggested.get("curve", {}))
    for k in ESTIMATE_DEFAULTS:
        value = getattr(cfg.estimate, k)
        if value != AUTOMATIC.get(k, 0):
            sizes[k] = value
    sizes.update({k: v for k, v in given.items() if v is not None})
    return {k: int(v) for k, v in sizes.items()}


def estimate_design(cfg: RunConfig, *, curve: bool = False, progress: bool = True, ridges=DEFAULT_RIDGES,
                    splits: Any = None, max_memory_gb: float = 4.0, device: torch.device | str = "cpu",
                    **given: int | None) -> dict[str, Any]:
    """Layout and accuracy estimate of the configured optics + task; sizes as
    :func:`estimate_sizes` resolves them from ``given`` (inits, width_multiplier, max_train,
    max_eval, warmup_steps, directions; ``curve``: a point of the pipeline's estimate curve).
    Warm-up and kernels run on ``device``; the ridge regression on the CPU."""
    from onnx_run.ntk.teacher_cache import bounded_kernel

    t0 = time.perf_counter()
    seed = cfg.run.seed
    task = cfg.task.build()
    sizes = estimate_sizes(cfg, task, curve=curve, **given)
    seed_everything(seed)
    probe = cfg.optics.build()
    layout = probe.layout()
    feature_shape = probe.feature_shape()
    if splits is None:
        splits = task.datasets(image_size=tuple(probe.input_size), channels=probe.in_channels, seed=seed)
    num_outputs = task.num_outputs(splits)
    n_run = len(splits.train) if not cfg.train.max_train else min(len(splits.train), cfg.train.max_train)
    xtr, ytr = _subset(splits.train, min(sizes["max_train"], n_run), seed)
    xva, yva = _subset(splits.val, sizes["max_eval"], seed + 1)
    xte, yte = _subset(splits.test, sizes["max_eval"], seed + 2)
    x_all = torch.cat([xtr, xva, xte])
    ntr, nva = xtr.shape[0], xva.shape[0]
    if sizes["warmup_steps"] < 0:
        sizes["warmup_steps"] = automatic_warmup(cfg.train, len(splits.train), sizes["warmup_percent"])
    # the learning curve: prefixes of the (shuffled) training subset, extrapolated to the run's
    # own training-set size when the regression sees fewer images than the run trains on
    curve_sizes = [ntr] if ntr >= n_run else sorted({max(ntr // 2**j, min(ntr, 50)) for j in range(CURVE_POINTS)})
    exact = x_all.shape[0] <= EXACT_LIMIT
    kernel = ""
    y_tr = _targets(ytr, num_outputs)
    primary = task.primary_metric
    out_shape = (num_outputs, *ytr.shape[1:])

    def score(pred: torch.Tensor, y: torch.Tensor) -> float:
        return task.metrics(pred.reshape(pred.shape[0], *out_shape).float(), y)[primary]

    per_init: list[dict[int, dict[float, torch.Tensor]]] = []
    warmed: list[float] = []  # each warmed-up student's own test score: what the kernel adds to it
    warm_seconds = kernel_seconds = 0.0
    for i in progress_bar(range(sizes["inits"]), desc="estimate: students", enabled=progress):
        seed_everything(seed + i)
        model = HybridModel(cfg.optics.build(),
                            task.backend_for_estimate(feature_shape, num_outputs, sizes["width_multiplier"]))
        model = model.to(device)
        tw = time.perf_counter()
        warm_up(model, task, xtr, ytr, cfg.train, steps=sizes["warmup_steps"], seed=seed + i, device=device)
        warm_seconds += time.perf_counter() - tw
        warmed.append(_own_score(model, task, xte, yte, device))
        tk = time.perf_counter()
        pixelwise = readout_predictions(model, task, xtr, ytr, x_all[ntr:], sizes=curve_sizes,
                                        ridges=ridges, num_outputs=num_outputs, device=device)
        if pixelwise is not None:
            kernel = "readout per pixel"
            kernel_seconds += time.perf_counter() - tk
            per_init.append(pixelwise)
        elif exact:
            kernel = "exact"
            backend = [n for n, p in model.backend.named_parameters() if p.requires_grad]
            with torch.no_grad():
                feats = model.frontend(x_all.to(device))
            k, _mode = bounded_kernel(model.backend, feats, reduce=task.ntk_reduce, params=backend,
                                      max_memory_gb=max_memory_gb, directions=sizes["directions"], seed=seed + i)
            kernel_seconds += time.perf_counter() - tk
            per_init.append(_curve_predictions(k.detach().cpu(), None, curve_sizes, ntr, y_tr, ridges))
        else:
            kernel = f"sketch R={sizes['directions']}"
            phi = tangent_features(model, x_all, reduce=task.ntk_reduce, directions=sizes["directions"],
                                   seed=seed + i, device=device).cpu()
            kernel_seconds += time.perf_counter() - tk
            per_init.append(_curve_predictions(None, phi, curve_sizes, ntr, y_tr, ridges))
        del model

    # the students' predictions averaged; at each curve size the ridge is chosen on validation
    ridge_at: dict[int, float] = {}
    curve: list[float] = []
    scores: dict[float, float] = {}
    for n in curve_sizes:
        mean = {r: sum(p[n][r] for p in per_init) / len(per_init) for r in per_init[0][n]}
        scores = {r: score(pred[:nva], yva) for r, pred in mean.items()}
        ridge_at[n] = max(scores, key=lambda r: scores[r])
        curve.append(score(mean[ridge_at[n]][nva:], yte))
    ridge = ridge_at[ntr]
    pred = sum(p[ntr][ridge] for p in per_init)[nva:] / len(per_init)
    test = task.metrics(pred.reshape(pred.shape[0], *out_shape).float(), yte)
    estimate = learning_curve_fit(curve_sizes, curve, n_run)
    # how far the number could move: the test images drawn (bootstrap), the students (each
    # one's own regression and curve), and the extrapolation (the fit without its smallest size)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(yte), size=(BOOTSTRAP_DRAWS, len(yte)))
    boot = [score(pred[d], yte[d]) for d in torch.from_numpy(draws)]
    by_init = [learning_curve_fit(curve_sizes, [score(p[n][ridge_at[n]][nva:], yte) for n in curve_sizes], n_run)
               for p in per_init] if len(per_init) > 1 else []
    se = float(np.std(boot, ddof=1))
    spread = float(np.std(by_init, ddof=1)) if len(by_init) > 1 else 0.0
    extrapolation = abs(estimate - learning_curve_fit(curve_sizes[1:], curve[1:], n_run)) if len(curve) > 3 else 0.0
    return {
        "optics": cfg.optics.name, "task": cfg.task.name,
        "dataset": getattr(cfg.task.config, "dataset", ""),
        "num_kernels": layout.num_kernels, "layout": {"rows": layout.rows, "cols": layout.cols,
                                                      "kernel_size_px": layout.kernel_size_px,
                                                      **dict(layout.details)},
        "feature_shape": list(feature_shape), "metric": primary,
        # what the design costs beyond its optics: sensor values read per image, digital parameters
        "sensor_values": math.prod(feature_shape),
        "backend_params": sum(p.numel() for p in task.build_backend(feature_shape, num_outputs).parameters()),
        "estimate": estimate, "estimate_se": se, "estimate_by_init": by_init,
        # a 95 % band: the test images drawn and the students' spread (of a mean over inits),
        # plus how far the extrapolation moves without its smallest point
        "estimate_band": 1.96 * math.sqrt(se**2 + spread**2 / len(per_init)) + extrapolation,
        "measured": test[primary], "warmed_students": warmed, "learning_curve": {"n_train": curve_sizes, primary: curve},
        "extrapolated_to": n_run if n_run > ntr else None,
        "val": scores[ridge], "ridge": ridge, "ridge_scores": {str(r): s for r, s in scores.items()},
        "kernel": kernel,
        "n_train": ntr, "n_val": nva, "n_test": xte.shape[0], **sizes,
        # where the time goes: warm-up, kernels (or tangent features), and the rest (data, optics,
        # regressions, scores)
        "warmup_seconds": round(warm_seconds, 2), "kernel_seconds": round(kernel_seconds, 2),
        "seconds": round(time.perf_counter() - t0, 2),
    }
