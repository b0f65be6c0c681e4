"""Random-direction NTK estimators (forward-mode JVP, finite differences) against the exact kernel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onnx_run.ntk import empirical_ntk


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def model_and_batch():
    # an MLP: the estimators are model-agnostic, and float64 convolutions batched over
    # directions take a slow path on CPU
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    return m, torch.randn(6, 10)


def rel_error(k, ref):
    return float((k - ref).norm() / ref.norm())


@pytest.mark.parametrize("method", ["jvp", "fd"])
def test_estimator_error_falls_like_one_over_sqrt_r(method):
    m, x = model_and_batch()
    exact = empirical_ntk(m, x, method="exact")

    def mean_error(r):  # averaged over fixed seeds so the check is about the rate, not luck
        errs = [
            rel_error(empirical_ntk(m, x, method=method, directions=r, generator=torch.Generator().manual_seed(s)), exact)
            for s in range(6)
        ]
        return sum(errs) / len(errs)

    e4, e64 = mean_error(4), mean_error(64)
    # 1/sqrt(R) predicts e64 = e4 / 4; accept anything clearly below half
    assert e64 < 0.5 * e4, (e4, e64)
    assert e64 > 0.1 * e4, (e4, e64)  # not faster than Monte Carlo can be: it is an estimate
    assert e64 < 0.6


def test_estimators_are_unbiased_on_average():
    m, x = model_and_batch()
    exact = empirical_ntk(m, x, method="exact")
    mean = sum(
        empirical_ntk(m, x, method="jvp", directions=250, generator=torch.Generator().manual_seed(s)) for s in range(8)
    ) / 8  # 2000 directions in all
    assert rel_error(mean, exact) < 0.1


def test_generator_makes_estimates_reproducible():
    m, x = model_and_batch()
    for method in ("jvp", "fd"):
        a = empirical_ntk(m, x, method=method, directions=5, generator=torch.Generator().manual_seed(3))
        b = empirical_ntk(m, x, method=method, directions=5, generator=torch.Generator().manual_seed(3))
        c = empirical_ntk(m, x, method=method, directions=5, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b), method
        assert not torch.allclose(a, c), method


def test_finite_differences_approach_jvp_as_eps_shrinks():
    """Same directions (same seed): fd differs from the exact J z only by the O(eps) step error."""
    m, x = model_and_batch()
    jvp = empirical_ntk(m, x, method="jvp", directions=8, generator=torch.Generator().manual_seed(1))
    errs = [
        rel_error(empirical_ntk(m, x, method="fd", directions=8, eps=eps, generator=torch.Generator().manual_seed(1)), jvp)
        for eps in (1e-2, 1e-4)
    ]
    assert errs[1] < 1e-3
    assert errs[1] < 0.05 * errs[0]


def test_estimator_rejects_zero_directions():
    m, x = model_and_batch()
    with pytest.raises(ValueError, match="directions"):
        empirical_ntk(m, x, method="jvp", directions=0)
