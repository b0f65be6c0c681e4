"""Kernel ridge regression and ridge selection."""

from __future__ import annotations

import pytest
import torch
from sklearn.kernel_ridge import KernelRidge

from onnx_run.ntk import empirical_ntk, kernel_ridge_regression, select_ridge

D = torch.float64


def test_recovers_a_linear_function_with_tiny_ridge():
    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(40, 6, generator=g, dtype=D), torch.randn(15, 6, generator=g, dtype=D)
    w = torch.randn(6, 2, generator=g, dtype=D)
    # linear kernel: the regression is least squares on x, which recovers w exactly (n > d)
    pred = kernel_ridge_regression(x_train @ x_train.T, x_test @ x_train.T, x_train @ w, ridge=1e-10)
    assert torch.allclose(pred, x_test @ w, atol=1e-6)
    # 1-D targets stay 1-D; float32 inputs come back float32
    p1 = kernel_ridge_regression((x_train @ x_train.T).float(), (x_test @ x_train.T).float(), (x_train @ w[:, 0]).float(), ridge=1e-5)
    assert p1.shape == (15,) and p1.dtype == torch.float32
    assert torch.allclose(p1.double(), x_test @ w[:, 0], atol=1e-2)


def rbf(a, b, gamma=0.3):
    return torch.exp(-gamma * torch.cdist(a, b) ** 2)


@pytest.mark.parametrize("ridge", [1e-3, 0.1, 2.0])
def test_matches_sklearn_precomputed_kernel_ridge(ridge):
    g = torch.Generator().manual_seed(1)
    x_train, x_test = torch.randn(30, 3, generator=g, dtype=D), torch.randn(10, 3, generator=g, dtype=D)
    y = torch.stack([torch.sin(x_train[:, 0]), x_train[:, 1] ** 2], 1)
    k, kt = rbf(x_train, x_train), rbf(x_test, x_train)
    ours = kernel_ridge_regression(k, kt, y, ridge=ridge)
    lam = ridge * k.diagonal().mean().item()  # documented: ridge is relative to mean(diag K)
    ref = KernelRidge(alpha=lam, kernel="precomputed").fit(k.numpy(), y.numpy()).predict(kt.numpy())
    assert torch.allclose(ours, torch.from_numpy(ref), atol=1e-8)
    # scaling the kernel does not change predictions: the ridge scales with it
    assert torch.allclose(kernel_ridge_regression(1e4 * k, 1e4 * kt, y, ridge=ridge), ours, atol=1e-8)


def test_select_ridge_finds_the_validation_optimum():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(80, 2, generator=g, dtype=D)
    y = torch.sin(2 * x[:, 0]) + 0.3 * torch.randn(80, generator=g, dtype=D)  # noisy: some ridge is needed
    tr, va = slice(0, 50), slice(50, 80)
    k_tr, k_va = rbf(x[tr], x[tr], 1.0), rbf(x[va], x[tr], 1.0)
    ridges = [1e-8, 1e-4, 1e-2, 1e-1, 1.0, 100.0]
    neg_mse = lambda pred, target: -((pred - target) ** 2).mean()  # noqa: E731
    best, scores = select_ridge(k_tr, y[tr], k_va, y[va], ridges, neg_mse)
    assert set(scores) == set(ridges)
    # the scores are those of kernel_ridge_regression (one eigendecomposition vs one solve per ridge)
    for r in ridges[1:]:
        direct = float(neg_mse(kernel_ridge_regression(k_tr, k_va, y[tr], ridge=r), y[va]))
        assert scores[r] == pytest.approx(direct, rel=1e-6)
    assert scores[best] == max(scores.values())
    assert best not in (1e-8, 100.0)  # interpolating the noise or flattening everything both lose


def test_ntk_regression_classifies_separable_data():
    """End to end: NTK of a small net, one-hot regression, argmax accuracy."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).double()
    x = torch.randn(120, 2, dtype=D)
    labels = (x[:, 0] * x[:, 1] > 0).long()  # XOR-like quadrants: not linearly separable
    k = empirical_ntk(net, x)
    onehot = torch.nn.functional.one_hot(labels, 2).double()
    acc = lambda pred, target: (pred.argmax(1) == target.argmax(1)).double().mean()  # noqa: E731
    best, scores = select_ridge(k[:60, :60], onehot[:60], k[60:90, :60], onehot[60:90], [1e-4, 1e-2, 1.0], acc)
    pred = kernel_ridge_regression(k[:60, :60], k[90:, :60], onehot[:60], ridge=best)
    assert float(acc(pred, onehot[90:])) >= 0.8


def test_bad_inputs():
    k = torch.eye(3, dtype=D)
    with pytest.raises(ValueError, match="k_test_train"):
        kernel_ridge_regression(k, torch.ones(2, 4, dtype=D), torch.ones(3, dtype=D), ridge=0.1)
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        kernel_ridge_regression(k, k, torch.ones(3, dtype=D), ridge=-1.0)
    with pytest.raises(ValueError, match="ridges is empty"):
        select_ridge(k, torch.ones(3, dtype=D), k, torch.ones(3, dtype=D), [], lambda p, t: 0.0)
