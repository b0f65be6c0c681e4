"""Accuracy reachable by a design, before training: NTK kernel ridge regression.

What we compute: the empirical NTK of the hybrid network (the optics frontend with random
kernels + a widened digital backend) on train/val/test images, averaged over several random
initialisations. The kernel is taken w.r.t. the backend's parameters: the optics are the
paper's "random (untrained) optical kernels", a fixed random feature map per initialisation,
so the estimate is that of random optics + an infinitely wide backend (the paper's 97.7 %
reference on MNIST is of this kind). Trained optics can only do better, which is why the
estimate is a capacity diagnostic, not a prediction of the trained accuracy. For a network in the NTK parametrisation the empirical kernel concentrates on
its infinite-width limit as the hidden widths grow, and its expectation over initialisations
is that limit's kernel for the readout layers; averaging over inits of a widened backend is
therefore a Monte-Carlo estimate of the wide-limit kernel of "this optics + this backend
architecture". Kernel ridge regression with it, y = K(X*, X)(K(X, X) + lambda I)^-1 Y on
centred one-hot targets, is the prediction of the infinitely wide network trained to
convergence with squared loss (Jacot et al. 2018; Arora et al. 2019). The ridge is chosen on
the validation split; the estimate is the test metric of that prediction.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from onnx_run.components import HybridModel
from onnx_run.config import RunConfig
from onnx_run.progress import bar as progress_bar
from onnx_run.train.loop import seed_everything

DEFAULT_RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _targets(y: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """Centred one-hot targets shaped like the task's outputs, flattened per sample."""
    onehot = F.one_hot(y.long(), num_outputs).to(torch.float64)
    if onehot.dim() > 2:  # dense (N, H, W, C) -> (N, C, H, W)
        onehot = onehot.movedim(-1, 1)
    return (onehot - 1.0 / num_outputs).flatten(1)


def _subset(ds, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ds.tensors[0], ds.tensors[1]
    if n and x.shape[0] > n:
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
        x, y = x[idx], y[idx]
    return x, y


def average_ntk(build: Callable[[int], HybridModel], x: torch.Tensor, *, reduce, inits: int, seed: int,
                progress: bool = True, max_memory_gb: float = 2.0, directions: int = 256,
                device: torch.device | str = "cpu", each: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Mean empirical NTK (float64, on ``device``) over ``inits`` random initialisations; the
    models are built on the CPU (seeded as everywhere else) and run on ``device``. ``each``: a
    list that receives every init's kernel (on the CPU), for the spread over inits.

    Each init's kernel is exact when its per-sample gradient factors fit ``max_memory_gb``, else
    a seeded random-feature sketch with ``directions`` directions (dense tasks: a decoder's
    factors are O x its parameter count per sample); see ntk.teacher_cache.bounded_kernel.
    """
    from onnx_run.ntk.teacher_cache import bounded_kernel

    total = None
    for i in progress_bar(range(inits), desc="NTK over inits", enabled=progress):
        model = build(seed + i).to(device).eval()
        backend = [n[len("backend."):] for n, p in model.named_parameters()
                   if n.startswith("backend.") and p.requires_grad]
        with torch.no_grad():
            feats = model.frontend(x.to(device))  # random optics: a fixed random feature map, computed once
        k, _mode = bounded_kernel(model.backend, feats, reduce=reduce, params=backend, max_memory_gb=max_memory_gb,
                                  directions=directions, seed=seed + i)
        k = k.detach().to(torch.float64)
        if each is not None:
            each.append(k.cpu())
        total = k if total is None else total + k
    assert total is not None
    return total / inits


#: bootstrap resamples of the test images behind an estimate's standard error
BOOTSTRAP_DRAWS = 100

ESTIMATE_DEFAULTS = {"inits": 3, "width_multiplier": 4, "max_train": 1000, "max_eval": 400}


def estimate_sizes(cfg: RunConfig, task: Any, *, curve: bool = False, **given: int | None) -> dict[str, int]:
    """The estimate's sizes, lowest first: ESTIMATE_DEFAULTS, the task's ``estimate_settings()``
    (with ``curve``, then its ``"curve"`` sizes: the pipeline's estimate curve), the config's
    ``[estimate]`` (0 = automatic), then ``given`` (command options; None = not given)."""
    suggested = task.estimate_settings()
    sizes = {**ESTIMATE_DEFAULTS, **{k: v for k, v in suggested.items() if k in ESTIMATE_DEFAULTS}}
    if curve:
        sizes.update(suggested.get("curve", {}))
    sizes.update({k: getattr(cfg.estimate, k) for k in ESTIMATE_DEFAULTS if getattr(cfg.estimate, k)})
    sizes.update({k: v for k, v in given.items() if v is not None})
    return {k: int(v) for k, v in sizes.items()}


def estimate_design(cfg: RunConfig, *, inits: int | None = None, width_multiplier: int | None = None,
                    max_train: int | None = None, max_eval: int | None = None, curve: bool = False,
                    progress: bool = True, ridges=DEFAULT_RIDGES, splits: Any = None,
                    max_memory_gb: float = 4.0, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Layout and NTK-regression accuracy estimate of the configured optics + task; sizes as
    :func:`estimate_sizes` resolves them (``curve``: a point of the pipeline's estimate curve).
    The kernels are computed on ``device``; the ridge regression (n x n, n ~ 10^3) on the CPU."""
    from onnx_run.ntk import kernel_ridge_regression, select_ridge

    t0 = time.perf_counter()
    seed = cfg.run.seed
    task = cfg.task.build()
    sizes = estimate_sizes(cfg, task, curve=curve, inits=inits, width_multiplier=width_multiplier,
                           max_train=max_train, max_eval=max_eval)
    inits, width_multiplier = sizes["inits"], sizes["width_multiplier"]
    max_train, max_eval = sizes["max_train"], sizes["max_eval"]
    seed_everything(seed)
    probe = cfg.optics.build()
    layout = probe.layout()
    feature_shape = probe.feature_shape()
    if splits is None:
        splits = task.datasets(image_size=tuple(probe.input_size), channels=probe.in_channels, seed=seed)
    num_outputs = task.num_outputs(splits)
    xtr, ytr = _subset(splits.train, max_train, seed)
    xva, yva = _subset(splits.val, max_eval, seed + 1)
    xte, yte = _subset(splits.test, max_eval, seed + 2)
    x_all = torch.cat([xtr, xva, xte])
    ntr, nva = xtr.shape[0], xva.shape[0]

    def build(s: int) -> HybridModel:
        seed_everything(s)
        frontend = cfg.optics.build()
        backend = task.backend_for_estimate(feature_shape, num_outputs, width_multiplier)
        return HybridModel(frontend, backend)

    per_init: list[torch.Tensor] = []
    k = average_ntk(build, x_all, reduce=task.ntk_reduce, inits=inits, seed=seed, progress=progress,
                    max_memory_gb=max_memory_gb, device=device, each=per_init if inits > 1 else None).cpu()
    k_tr = k[:ntr, :ntr]
    k_va = k[ntr:ntr + nva, :ntr]
    k_te = k[ntr + nva:, :ntr]
    y_tr = _targets(ytr, num_outputs)
    primary = task.primary_metric
    out_shape = (num_outputs, *ytr.shape[1:])

    def as_outputs(pred: torch.Tensor) -> torch.Tensor:
        return pred.reshape(pred.shape[0], *out_shape).float()

    def score(pred: torch.Tensor, y: torch.Tensor) -> float:
        return task.metrics(as_outputs(pred), y)[primary]

    ridge, scores = select_ridge(k_tr, y_tr, k_va, yva, ridges, score)
    pred = kernel_ridge_regression(k_tr, k_te, y_tr, ridge=ridge)
    test = task.metrics(as_outputs(pred), yte)
    # how far the number could move: over the test images drawn (bootstrap), and over the
    # random inits (each init's kernel alone, the same ridge)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(yte), size=(BOOTSTRAP_DRAWS, len(yte)))
    boot = [score(pred[d], yte[d]) for d in torch.from_numpy(draws)]
    by_init = [score(kernel_ridge_regression(ki[:ntr, :ntr], ki[ntr + nva:, :ntr], y_tr, ridge=ridge), yte)
               for ki in per_init]
    return {
        "optics": cfg.optics.name, "task": cfg.task.name,
        "dataset": getattr(cfg.task.config, "dataset", ""),
        "num_kernels": layout.num_kernels, "layout": {"rows": layout.rows, "cols": layout.cols,
                                                      "kernel_size_px": layout.kernel_size_px,
                                                      **dict(layout.details)},
        "feature_shape": list(feature_shape), "metric": primary,
        "estimate": test[primary], "estimate_se": float(np.std(boot, ddof=1)), "estimate_by_init": by_init,
        "val": scores[ridge] if ridge in scores else None, "ridge": ridge,
        "ridge_scores": {str(r): s for r, s in scores.items()},
        "n_train": ntr, "n_val": nva, "n_test": xte.shape[0], "inits": inits, "width_multiplier": width_multiplier,
        "seconds": round(time.perf_counter() - t0, 2),
    }
