"""The frozen teacher's NTK, computed once per dataset instead of once per training step.

The teacher never changes during distillation, so its kernel on any mini-batch is a sub-matrix
of one fixed n x n kernel over the training set. Two storage modes, chosen by n:

- n <= max_exact_n ("exact" mode): the exact n x n trace NTK, assembled chunk by chunk from the
  structured per-sample factors (no graph). ``kernel(idx)`` is K[idx][:, idx], exact and free.
  Memory: n^2 floats for K (64 MiB at n = 4096, float32) plus the factors while building.
- n > max_exact_n ("features" mode): n^2 would not fit, so each sample gets a fixed random
  projection of its exact per-sample gradients, phi_i (O * R,), with E[phi_i . phi_j] =
  Theta_ij, and ``kernel(idx)`` = Phi[idx] Phi[idx]^T: n * R * O floats, one matrix product per
  batch, relative error ~ 1/sqrt(R) (docs/ntk.md has measured figures). The gradients come
  from the same structured pass as the exact kernel (O back-propagations per chunk), projected
  per layer (Gaussian for explicit gradient blocks, rank-one s1 (x) s2 directions for Linear
  blocks, whose gradient d a^T is never formed). This is the estimator of R random parameter
  directions z (phi = J z / sqrt(R)), but costs one structured pass per chunk instead of R
  forward-mode passes. The projection is seeded and fixed, so a batch gets the same target
  each time it is drawn. For an exact kernel of a batch at a per-step cost, use
  ``kernel_for(x[idx])``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from onnx_run.progress import bar as progress_bar

from onnx_run.ntk.arguments import Reduce, check_samplewise, resolve_params
from onnx_run.ntk.factors import FactorSketch, KernelFactors, cross_kernel
from onnx_run.ntk.kernels import empirical_ntk
from onnx_run.ntk.structured import kernel_factors

_CACHE_METHODS = ("structured", "exact")


class TeacherKernelCache:
    """Teacher NTK over a fixed dataset ``x_all`` (n, ...), looked up by sample index.

    ``params``: the teacher parameters the kernel is taken w.r.t. (default: all of them, even
    though a frozen teacher's do not require grad). ``method``: "structured" or "exact" (how the
    per-sample gradients are obtained, both exact). ``directions``: R for the features mode;
    ``seed`` fixes its projection. ``max_memory_gb`` bounds the per-sample factors held while building the
    exact kernel (method="exact" holds full Jacobians, n * O * P floats: small models only).
    The teacher is put in eval mode (it is frozen; BatchNorm must use running statistics).
    """

    def __init__(
        self,
        teacher: nn.Module,
        x_all: Tensor,
        *,
        reduce: Reduce | None = None,
        params: Sequence[str] | None = None,
        method: str = "structured",
        max_exact_n: int = 4096,
        batch_size: int = 128,
        directions: int = 128,
        seed: int = 0,
        progress: bool = True,
        max_memory_gb: float = 8.0,
        hold_fraction: float = 0.5,
    ):
        if method not in _CACHE_METHODS:
            raise ValueError(f"TeacherKernelCache method must be one of {_CACHE_METHODS}, got {method!r}")
        if batch_size < 1 or directions < 1:
            raise ValueError(f"batch_size and directions must be >= 1, got {batch_size} and {directions}")
        if x_all.dim() < 1 or x_all.shape[0] == 0:
            raise ValueError(f"x_all must be a non-empty dataset (n, ...), got shape {tuple(x_all.shape)}")
        teacher.eval()
        self.teacher = teacher
        self.params = list(params) if params is not None else [n for n, _ in teacher.named_parameters()]
        self.reduce = reduce
        self.method = method
        self.batch_size = batch_size
        self.n = int(x_all.shape[0])
        self.progress = progress
        self.max_memory_gb = max_memory_gb
        self.hold_fraction = hold_fraction
        resolve_params(teacher, self.params)  # validate names early
        check_samplewise(teacher)
        self._kernel: Tensor | None = None
        self._features: Tensor | None = None
        if self.n <= max_exact_n:
            self.mode = "exact"
            self.directions = 0
            self._kernel = self._build_exact(x_all)
        else:
            self.mode = "features"
            self.directions = directions
            self._features = self._build_features(x_all, directions, seed)

    def __len__(self) -> int:
        return self.n

    def state(self) -> dict[str, object]:
        """What :meth:`from_state` needs: the mode and the stored kernel or features (tensors only,
        so it saves and loads with ``weights_only=True``)."""
        return {"mode": self.mode, "n": self.n, "directions": self.directions, "kernel": self._kernel,
                "features": self._features}

    @classmethod
    def from_state(cls, teacher: nn.Module, state: dict, *, reduce: Reduce | None = None,
                   params: Sequence[str] | None = None, method: str = "structured") -> "TeacherKernelCache":
        """A cache rebuilt from :meth:`state` without recomputing anything."""
        obj = cls.__new__(cls)
        teacher.eval()
        obj.teacher, obj.reduce, obj.method = teacher, reduce, method
        obj.params = list(params) if params is not None else [n for n, _ in teacher.named_parameters()]
        obj.batch_size, obj.progress, obj.max_memory_gb, obj.hold_fraction = 128, False, 8.0, 0.5
        obj.mode, obj.n, obj.directions = str(state["mode"]), int(state["n"]), int(state["directions"])
        obj._kernel, obj._features = state["kernel"], state["features"]
        if (obj._kernel is None) == (obj._features is None):
            raise ValueError("a teacher kernel state holds exactly one of 'kernel' and 'features'")
        return obj

    def _chunks(self) -> list[slice]:
        return [slice(s, min(s + self.batch_size, self.n)) for s in range(0, self.n, self.batch_size)]

    def _params(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in resolve_params(self.teacher, self.params).items()}

    @torch.no_grad()
    def _build_exact(self, x_all: Tensor) -> Tensor:
        """The n x n kernel in row blocks: a block's per-sample factors are held (at most
        ``hold_fraction`` of ``max_memory_gb``; the rest for the chunk streamed past it) while the
        chunks after it are computed again, so the factors of all n samples never need to fit at
        once. When they do fit, one block: every factor is computed once; otherwise about
        (blocks + 1) / 2 passes over the data."""
        params = self._params()
        chunks = self._chunks()
        budget = self.max_memory_gb * 2**30 * 2 * self.hold_fraction  # the code below holds budget / 2

        def factors(sl: slice) -> KernelFactors:
            return kernel_factors(self.teacher, x_all[sl], params, self.reduce, structured=self.method == "structured",
                                  cost_rows=self.batch_size, cost_pairs=self.batch_size * self.n)

        first = factors(chunks[0])
        per_chunk = _factor_bytes(first) / (chunks[0].stop - chunks[0].start) * self.batch_size
        if per_chunk > budget / 2:
            raise ValueError(
                f"building the exact teacher kernel needs {per_chunk / 2**30:.1f} GiB of per-sample factors for one "
                f"chunk of {self.batch_size} (max_memory_gb={self.max_memory_gb}); use a smaller batch_size, a "
                "smaller max_exact_n (features mode), or raise max_memory_gb"
            )
        per_sample = per_chunk / self.batch_size
        per_block = len(chunks) if per_sample * self.n <= budget / 2 else max(1, int(budget / 2 // per_chunk))
        blocks = [chunks[i:i + per_block] for i in range(0, len(chunks), per_block)]
        passes = sum(len(chunks) - b * per_block for b in range(len(blocks)))
        bar = progress_bar(total=passes + len(chunks), desc="teacher NTK (exact)", enabled=self.progress)
        k: Tensor | None = None
        for b, block in enumerate(blocks):
            held = KernelFactors.cat([first if b == 0 and i == 0 else factors(sl) for i, sl in enumerate(block)])
            first = None  # its memory goes with the block
            lo, hi = block[0].start, block[-1].stop
            bar.update(len(block))
            for sl in block:  # rows of the block against the block, a chunk of rows at a time
                part = cross_kernel(held.select(slice(sl.start - lo, sl.stop - lo)), held)
                if k is None:
                    k = torch.empty((self.n, self.n), dtype=part.dtype, device=part.device)
                k[sl, lo:hi] = part
                bar.update(1)
            for sl in chunks[(b + 1) * per_block:]:  # the chunks after the block, streamed past it
                part = cross_kernel(held, factors(sl))
                k[lo:hi, sl] = part
                k[sl, lo:hi] = part.T
                bar.update(1)
            del held
        bar.close()
        assert k is not None
        return 0.5 * (k + k.T)  # exact symmetry; the blocks differ only by round-off

    @torch.no_grad()
    def _build_features(self, x_all: Tensor, directions: int, seed: int) -> Tensor:
        params = self._params()
        # a CPU generator: the same seed sketches the same kernel on any device
        sketch = FactorSketch(directions, torch.Generator().manual_seed(seed))
        chunks = self._chunks()
        feats: Tensor | None = None
        bar = progress_bar(total=len(chunks), desc="teacher NTK (features)", enabled=self.progress)
        for sl in chunks:
            fac = kernel_factors(
                self.teacher,
                x_all[sl],
                params,
                self.reduce,
                structured=self.method == "structured",
                cost_rows=self.batch_size,
                cost_pairs=self.batch_size**2,
            )
            phi = sketch(fac)
            if feats is None:
                feats = torch.empty((self.n, phi.shape[1]), dtype=phi.dtype, device=phi.device)
            feats[sl] = phi
            bar.update(1)
        bar.close()
        assert feats is not None
        return feats

    def _check_indices(self, indices: Tensor) -> Tensor:
        idx = torch.as_tensor(indices)
        if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"indices must be a 1-D integer tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise ValueError(f"indices must lie in [0, {self.n}); got range [{int(idx.min())}, {int(idx.max())}]")
        return idx.long()

    def kernel(self, indices: Tensor) -> Tensor:
        """Teacher NTK (b, b) of the samples x_all[indices]: a lookup (exact mode) or one
        matrix product of stored tangent features (features mode). No graph."""
        idx = self._check_indices(indices)
        if self._kernel is not None:
            idx = idx.to(self._kernel.device)
            return self._kernel.index_select(0, idx).index_select(1, idx)
        assert self._features is not None
        f = self._features.index_select(0, idx.to(self._features.device))
        return f @ f.T

    def kernel_for(self, x: Tensor) -> Tensor:
        """Exact teacher NTK of arbitrary inputs x, computed now (no cache, no graph)."""
        return empirical_ntk(self.teacher, x, params=self.params, reduce=self.reduce, method=self.method)

    def gram(self) -> Tensor:
        """The n x n kernel over all of x_all: exact, or Phi Phi^T of the stored features."""
        if self._kernel is not None:
            return self._kernel
        assert self._features is not None
        return self._features @ self._features.T

    @property
    def full_kernel(self) -> Tensor:
        """The whole n x n exact kernel (exact mode only)."""
        if self._kernel is None:
            raise ValueError(f"no full kernel in {self.mode!r} mode (n = {self.n} > max_exact_n)")
        return self._kernel


def _factor_bytes(f: KernelFactors) -> int:
    ts = list(f.features) + [t for p in f.products for t in (p.u, p.d)]
    return sum(t.numel() * t.element_size() for t in ts)


def factor_bytes_per_sample(model: nn.Module, x: Tensor, *, reduce: Reduce | None = None,
                            params: Sequence[str] | None = None, cost_rows: int | None = None,
                            cost_pairs: int | None = None) -> float:
    """Bytes of structured per-sample factors for one sample of ``x`` (measured on x[:2]).

    Sizes a kernel before building it: n times this is what the exact mode holds. Pass the
    build's ``cost_rows`` / ``cost_pairs`` so the per-layer forms match it."""
    chosen = {k: v.detach() for k, v in resolve_params(model, params).items()}
    probe = x[: min(2, x.shape[0])]
    with torch.no_grad():
        fac = kernel_factors(model, probe, chosen, reduce, structured=True, cost_rows=cost_rows,
                             cost_pairs=cost_pairs)
    return _factor_bytes(fac) / probe.shape[0]


def bounded_cache(model: nn.Module, x: Tensor, *, reduce: Reduce | None = None,
                  params: Sequence[str] | None = None, max_memory_gb: float = 2.0, max_exact_n: int = 4096,
                  directions: int = 128, seed: int = 0, progress: bool = False,
                  stream: bool = True) -> TeacherKernelCache:
    """A :class:`TeacherKernelCache` of ``model`` on ``x`` that fits ``max_memory_gb``.

    Exact when n <= ``max_exact_n`` and one chunk's factors fit half the budget (``stream``: the
    kernel is built in row blocks, so the factors of all n samples need not fit, at the cost of
    computing later chunks again: worth it for a teacher kernel that serves every epoch), or,
    without ``stream``, when the factors of all n fit the budget (one pass); otherwise the
    seeded random-feature sketch of the same gradients ("features" mode, R = ``directions``,
    relative error ~ 1/sqrt(R), one pass). Chunks are sized so one chunk's factors take at most an
    eighth of the budget: a large teacher (AlexNet on 32 x 32 RGB: ~14 MB per image) or a
    dense-output network (O projected outputs x its parameter count per image) would
    otherwise not fit at all.
    """
    n = int(x.shape[0])
    budget = max_memory_gb * 2**30
    model.eval()  # as TeacherKernelCache: BatchNorm statistics fixed, samples independent
    if params is None:  # as TeacherKernelCache: a frozen teacher is differentiated w.r.t. all its parameters
        params = [name for name, _ in model.named_parameters()]
    per_sample = factor_bytes_per_sample(model, x, reduce=reduce, params=params, cost_rows=128, cost_pairs=128 * n)
    chunk = int(max(1, min(128, budget / 8 / max(per_sample, 1.0))))
    if chunk != 128:  # the layer forms depend on the chunk size: measure again with the real one
        per_sample = factor_bytes_per_sample(model, x, reduce=reduce, params=params, cost_rows=chunk,
                                             cost_pairs=chunk * n)
    fits = per_sample * chunk <= budget / 2 if stream else per_sample * n <= budget
    exact = n <= max_exact_n and fits
    return TeacherKernelCache(model, x, reduce=reduce, params=params, max_exact_n=n if exact else 0,
                              batch_size=chunk, directions=directions, seed=seed, progress=progress,
                              max_memory_gb=max_memory_gb, hold_fraction=0.5 if stream else 1.0)


def bounded_kernel(model: nn.Module, x: Tensor, *, reduce: Reduce | None = None,
                   params: Sequence[str] | None = None, max_memory_gb: float = 2.0, directions: int = 256,
                   seed: int = 0, progress: bool = False) -> tuple[Tensor, str]:
    """The n x n trace NTK of ``model`` on ``x`` within a memory budget, in one pass over ``x``:
    (kernel, mode); see :func:`bounded_cache` (exact whenever the factors of all n fit, whatever
    n; else the sketch)."""
    cache = bounded_cache(model, x, reduce=reduce, params=params, max_memory_gb=max_memory_gb,
                          max_exact_n=int(x.shape[0]), directions=directions, seed=seed, progress=progress,
                          stream=False)
    return cache.gram(), cache.mode
