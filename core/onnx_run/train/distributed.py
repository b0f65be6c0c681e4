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

import os
from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


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


__all__: list[Any] = ["all_finite", "all_mean", "barrier", "init_from_env", "is_main", "launched_by_torchrun", "local_slice",
                      "rank", "shutdown", "world_size", "wrap"]
