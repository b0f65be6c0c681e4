"""Multi-process data parallelism (torchrun + torch.distributed).

Launch: ``torchrun --nproc-per-node 2 -m onnx_run --optics 4f --task classification``.
torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we initialise the process group with gloo on
CPU and nccl on GPU. Every rank draws the same seeded permutation of the training set and
takes its own slice of each global batch (``idx[rank::world]``); DistributedDataParallel
averages the gradients, so with equal slices a step equals the single-process step on the
global batch. Only rank 0 writes files (checkpoints, metrics, summaries); every rank reads
the same checkpoints on resume.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from onnx_run.errors import UserError


_solo = False  # inside solo(): this process works alone (a stage that runs on rank 0 only)


def world_size() -> int:
    if _solo:
        return 1
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Work as a single process inside the block: no DDP, no barriers, no collectives (the
    stages that run on rank 0 while the other ranks wait at a barrier outside it)."""
    global _solo
    before, _solo = _solo, True
    try:
        yield
    finally:
        _solo = before


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun prepared; return this rank's device."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        if device.type == "cuda" and launched_by_torchrun():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        count = torch.cuda.device_count()
        if local >= count:  # nccl needs one GPU per process
            raise UserError(f"torchrun: the process with LOCAL_RANK {local} has no GPU of its own (this machine has "
                            f"{count}); use --nproc-per-node {count} or fewer")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    dist.init_process_group(backend=backend)
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP-wrap a model when running with several processes (identity otherwise)."""
    if world_size() == 1 or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def local_slice(idx: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch."""
    w = world_size()
    return idx if w == 1 else idx[rank()::w]


def _slice_sizes(total: int) -> list[int]:
    """Rows of each rank's share of a global batch of ``total`` (local_slice's round robin)."""
    w = world_size()
    return [len(range(r, total, w)) for r in range(w)]


class _GatherRows(torch.autograd.Function):
    """Every rank's rows in the global batch order (the inverse of local_slice), differentiable:
    each rank's rows get the sum over ranks of the gradients flowing into them (all_reduce, so
    any backend works), which DDP's average over ranks turns back into the gradient of one loss
    computed on the whole batch."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, total: int) -> torch.Tensor:  # type: ignore[override]
        sizes = _slice_sizes(total)
        ctx.sizes, ctx.rank = sizes, rank()
        rows = max(sizes)
        pad = torch.zeros((rows - local.shape[0], *local.shape[1:]), dtype=local.dtype, device=local.device)
        padded = torch.cat([local, pad]).contiguous()
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        out = torch.empty((total, *local.shape[1:]), dtype=local.dtype, device=local.device)
        for r, (part, n) in enumerate(zip(parts, sizes)):
            out[r::len(sizes)] = part[:n]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # the same loss on every rank: sum of what each sends to these rows
        return grad[ctx.rank::len(ctx.sizes)][: ctx.sizes[ctx.rank]], None


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """The global batch (``total`` rows) from each rank's ``local_slice`` of it, in its order."""
    return local if world_size() == 1 else _GatherRows.apply(local, total)


def all_mean(value: float) -> float:
    """Mean of a float over ranks (for logged losses)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t) / world_size()


def all_finite(ok: bool) -> bool:
    """True only if every rank's loss is finite (so all ranks stop together, none hangs)."""
    if world_size() == 1:
        return ok
    t = torch.tensor([0.0 if ok else 1.0], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t) == 0.0


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__: list[Any] = ["all_finite", "all_mean", "barrier", "gather_rows", "init_from_env", "is_main",
                      "launched_by_torchrun", "local_slice", "rank", "shutdown", "solo", "world_size", "wrap"]
