"""The frozen teacher's precomputed kernel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onnx_run.ntk import TeacherKernelCache, empirical_ntk


def teacher():
    torch.manual_seed(0)
    t = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 12),
        nn.ReLU(),
        nn.Linear(12, 5),
    )
    with torch.no_grad():
        t[1].running_mean.uniform_(-0.3, 0.3)
        t[1].running_var.uniform_(0.5, 2.0)
    return t.train().requires_grad_(False)  # left in train mode on purpose: the cache freezes it


def names(m):
    return [n for n, _ in m.named_parameters()]


@pytest.mark.parametrize("method", ["structured", "exact"])
def test_exact_mode_equals_empirical_ntk_on_the_batch(method):
    t = teacher()
    x = torch.randn(100, 1, 8, 8, dtype=torch.float64)
    t.double()
    cache = TeacherKernelCache(t, x, method=method, batch_size=40, progress=False)
    assert cache.mode == "exact" and len(cache) == 100 and not t.training
    idx = torch.tensor([99, 3, 77, 40, 39, 0, 3])  # repeats and chunk boundaries
    ref = empirical_ntk(t, x[idx], params=names(t), method="exact")
    assert torch.allclose(cache.kernel(idx), ref, rtol=1e-10, atol=1e-10 * ref.abs().max())
    assert torch.allclose(cache.kernel_for(x[idx]), ref, rtol=1e-10, atol=1e-10 * ref.abs().max())
    assert cache.full_kernel.shape == (100, 100)
    assert not cache.kernel(idx).requires_grad


def test_feature_mode_approximates_and_improves_with_directions():
    t = teacher()
    x = torch.randn(90, 1, 8, 8)
    idx = torch.randperm(90, generator=torch.Generator().manual_seed(1))[:32]
    ref = empirical_ntk(t.eval(), x[idx], params=names(t), method="structured")

    def error(r, seed=0):
        c = TeacherKernelCache(t, x, max_exact_n=50, directions=r, batch_size=32, seed=seed, progress=False)
        assert c.mode == "features" and c.directions == r
        return float((c.kernel(idx) - ref).norm() / ref.norm()), c

    e_small = sum(error(8, s)[0] for s in range(2)) / 2
    e_big, cache = error(512)
    assert e_big < 0.25
    assert e_big < 0.5 * e_small
    # fixed seed: the same batch gets the same target every time, and a permuted batch its permutation
    again = TeacherKernelCache(t, x, max_exact_n=50, directions=512, batch_size=45, seed=0, progress=False)
    assert torch.allclose(cache.kernel(idx), again.kernel(idx), rtol=1e-5, atol=1e-5 * ref.abs().max())
    perm = torch.tensor([2, 0, 1])
    assert torch.allclose(cache.kernel(idx[:3][perm]), cache.kernel(idx[:3])[perm][:, perm])
    with pytest.raises(ValueError, match="features"):
        cache.full_kernel


def test_invalid_use():
    t = teacher()
    x = torch.randn(20, 1, 8, 8)
    with pytest.raises(ValueError, match="method must be one of"):
        TeacherKernelCache(t, x, method="jvp", progress=False)
    cache = TeacherKernelCache(t, x, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        cache.kernel(torch.tensor([0, 20]))
    with pytest.raises(ValueError, match="integer"):
        cache.kernel(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="max_memory_gb"):
        TeacherKernelCache(t, x, method="exact", max_memory_gb=1e-6, progress=False)


def test_the_cache_is_exact_in_row_blocks_and_a_one_pass_kernel_sketches(monkeypatch):
    """A budget below the factors of all n samples still gives the teacher cache the exact
    kernel: built in row blocks, each held while the chunks after it stream past (the factors of
    all n never held at once); a one-pass kernel (the estimate's) sketches instead, and so does
    the cache when one sample's factors do not fit."""
    import onnx_run.ntk.teacher_cache as tc
    from onnx_run.ntk.teacher_cache import bounded_cache, bounded_kernel, factor_bytes_per_sample

    t = teacher().eval()
    x = torch.randn(60, 1, 8, 8)
    reference = empirical_ntk(t, x, params=names(t))
    k, mode = bounded_kernel(t, x, params=names(t), max_memory_gb=1.0)
    assert mode == "exact" and torch.allclose(k, reference, rtol=1e-4, atol=1e-5)
    per_sample = factor_bytes_per_sample(t, x, params=names(t), cost_rows=60, cost_pairs=60 * 60)
    held, real = [0], tc.kernel_factors

    def counting(model, xs, *args, **kwargs):
        held[0] += xs.shape[0]
        return real(model, xs, *args, **kwargs)

    monkeypatch.setattr(tc, "kernel_factors", counting)
    tight = 0.2 * per_sample * 60 / 2**30  # a fifth of what the factors of all 60 samples take
    blocked = bounded_cache(t, x, params=names(t), max_memory_gb=tight)
    assert blocked.mode == "exact" and torch.allclose(blocked.gram(), reference, rtol=1e-4, atol=1e-5)
    assert held[0] > 60 + 2  # some chunks were computed again (each block streams the ones after it)
    monkeypatch.setattr(tc, "kernel_factors", real)
    sketch, mode = bounded_kernel(t, x, params=names(t), max_memory_gb=tight, directions=1024, seed=0)
    again, _ = bounded_kernel(t, x, params=names(t), max_memory_gb=tight, directions=1024, seed=0)
    assert mode == "features" and torch.equal(sketch, again)  # one pass, seeded: reproducible
    assert float((sketch - reference).norm() / reference.norm()) < 0.1
    tiny = 0.4 * per_sample / 2**30  # not even one sample's factors: the cache sketches too
    assert bounded_cache(t, x, params=names(t), max_memory_gb=tiny, directions=256).mode == "features"


def test_bounded_cache_of_a_frozen_teacher_sketches_what_does_not_fit():
    from onnx_run.ntk.teacher_cache import bounded_cache, factor_bytes_per_sample

    t = teacher()  # frozen, train mode: the cache puts it in eval mode and takes all its parameters
    x = torch.randn(60, 1, 8, 8)
    exact = bounded_cache(t, x)
    assert exact.mode == "exact"
    per_sample = factor_bytes_per_sample(t.eval(), x, params=names(t), cost_rows=60, cost_pairs=3600)
    blocked = bounded_cache(t, x, max_memory_gb=0.2 * per_sample * 60 / 2**30)
    assert blocked.mode == "exact" and torch.allclose(blocked.gram(), exact.gram(), rtol=1e-4, atol=1e-5)
    sketch = bounded_cache(t, x, max_memory_gb=0.4 * per_sample / 2**30, directions=1024)
    idx = torch.arange(20)
    assert sketch.mode == "features"
    ref = exact.kernel(idx)
    assert float((sketch.kernel(idx) - ref).norm() / ref.norm()) < 0.1
