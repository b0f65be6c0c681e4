"""Kernel ridge regression with an NTK: the accuracy estimate before training.

y_test = K(X_test, X_train) (K(X_train, X_train) + lambda I)^-1 Y_train.

``ridge`` is relative: lambda = ridge * mean(diag(K_train)). NTK magnitudes vary by orders of
magnitude between architectures and input scalings, so an absolute lambda grid would have to be
retuned for each; a relative one means the same grid (e.g. 1e-6 ... 1) works everywhere. The
solve is done in float64 (Cholesky, with a symmetric eigen-solve fallback) because NTK Gram
matrices are often very ill-conditioned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _as_2d(y: Tensor) -> tuple[Tensor, bool]:
    if y.dim() == 1:
        return y.unsqueeze(1), True
    if y.dim() == 2:
        return y, False
    raise ValueError(f"targets must be (n,) or (n, k), got shape {tuple(y.shape)}")


def _check_shapes(k_train: Tensor, k_test_train: Tensor, y_train: Tensor) -> None:
    n = k_train.shape[0]
    if k_train.dim() != 2 or k_train.shape[1] != n:
        raise ValueError(f"k_train must be square (n, n), got {tuple(k_train.shape)}")
    if k_test_train.dim() != 2 or k_test_train.shape[1] != n:
        raise ValueError(f"k_test_train must be (m, {n}), got {tuple(k_test_train.shape)}")
    if y_train.shape[0] != n:
        raise ValueError(f"y_train has {y_train.shape[0]} rows, k_train is {n} x {n}")


def absolute_ridge(k_train: Tensor, ridge: float) -> float:
    """lambda = ridge * mean(diag(K_train)), the value actually added to the diagonal."""
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    scale = k_train.diagonal().double().mean().item()
    if not scale > 0:
        raise ValueError(f"mean(diag(k_train)) = {scale}: a kernel Gram matrix must have a positive diagonal")
    return ridge * scale


def _solve_regularised(gram: Tensor, rhs: Tensor, lam: float) -> Tensor:
    """(gram + lam I)^-1 rhs in float64: Cholesky, or the eigenbasis where round-off leaves the
    matrix not positive definite at this ridge."""
    g = gram.double()
    g = 0.5 * (g + g.T)  # exact symmetry for Cholesky; NTKs from float32 Grams are off by round-off
    a = g + lam * torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(rhs, chol)
    evals, evecs = torch.linalg.eigh(a)
    evals = evals.clamp_min(torch.finfo(evals.dtype).eps * evals.abs().max())
    return evecs @ ((evecs.T @ rhs) / evals.unsqueeze(1))


def feature_ridge_regression(gram: Tensor, rhs: Tensor, phi_test: Tensor, *, n: int, ridge: float) -> Tensor:
    """The same regression in the primal, for a kernel K = Phi Phi^T given by its features
    Phi (n, D): predictions phi_test (Phi^T Phi + lambda I)^-1 Phi^T Y, from ``gram`` =
    Phi^T Phi (D, D) and ``rhs`` = Phi^T Y; lambda = ridge * mean(diag K) = ridge *
    trace(gram) / n. Worth it when n > D: a D x D solve instead of n x n."""
    y, squeeze = _as_2d(rhs)
    pred = phi_test.double() @ feature_ridge_weights(gram, y, n=n, ridge=ridge)
    return pred.squeeze(1) if squeeze else pred


def feature_ridge_weights(gram: Tensor, rhs: Tensor, *, n: int, ridge: float) -> Tensor:
    """The primal solution (Phi^T Phi + lambda I)^-1 Phi^T Y (D, k) in float64, lambda as in
    :func:`feature_ridge_regression`: for predicting many test rows a chunk at a time."""
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    lam = ridge * gram.diagonal().double().sum().item() / n
    return _solve_regularised(gram, _as_2d(rhs)[0].double(), lam)


def kernel_ridge_regression(k_train: Tensor, k_test_train: Tensor, y_train: Tensor, *, ridge: float) -> Tensor:
    """Predictions (m,) or (m, k) for the test points, in y_train's float dtype (float64 for
    integer targets); ridge is relative to mean(diag(k_train))."""
    _check_shapes(k_train, k_test_train, y_train)
    y, squeeze = _as_2d(y_train)
    lam = absolute_ridge(k_train, ridge)
    alpha = _solve_regularised(k_train, y.double(), lam)
    pred = k_test_train.double() @ alpha
    out_dtype = y_train.dtype if y_train.is_floating_point() else torch.float64
    pred = pred.to(out_dtype)
    return pred.squeeze(1) if squeeze else pred


def select_ridge(
    k_train: Tensor,
    y_train: Tensor,
    k_val_train: Tensor,
    y_val: Tensor,
    ridges: Sequence[float],
    score: Callable[[Tensor, Tensor], float | Tensor],
) -> tuple[float, dict[float, float]]:
    """Grid search of the relative ridge on a validation split.

    ``score(pred_val, y_val)`` is higher-is-better (e.g. accuracy of argmax, or negative MSE).
    One eigendecomposition of K_train serves every ridge. Returns the best ridge (the first
    among ties) and {ridge: score}.
    """
    if len(ridges) == 0:
        raise ValueError("ridges is empty: give the grid of relative ridges to try")
    _check_shapes(k_train, k_val_train, y_train)
    y, squeeze = _as_2d(y_train)
    scale = absolute_ridge(k_train, 1.0)
    k = k_train.detach().double()
    evals, evecs = torch.linalg.eigh(0.5 * (k + k.T))
    proj = evecs.T @ y.double()
    kv = k_val_train.detach().double() @ evecs
    scores: dict[float, float] = {}
    for r in ridges:
        lam = absolute_ridge(k_train, r)
        denom = (evals + lam).clamp_min(torch.finfo(torch.float64).eps * scale)
        pred = kv @ (proj / denom.unsqueeze(1))
        if squeeze:
            pred = pred.squeeze(1)
        s = score(pred, y_val)
        scores[float(r)] = float(s.item() if isinstance(s, Tensor) else s)
    best = max(scores, key=lambda r: scores[r])
    return best, scores
