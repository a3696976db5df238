"""torch.distributed helpers: the same command runs alone or under ``torchrun`` (one process per GPU, any number
of nodes).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them, picks the backend (NCCL on CUDA, gloo on CPU), binds the process to
``cuda:LOCAL_RANK`` and initialises the default process group. Without those variables (or with
``WORLD_SIZE=1``) everything below degrades to single-process no-ops.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from eval.errors import UsageError

log = logging.getLogger(__name__)

__all__ = [
    "DistInfo", "init_distributed", "cleanup_distributed", "is_distributed", "get_rank", "get_world_size",
    "is_main_process", "barrier", "all_gather_object", "broadcast_object", "reduce_mean_dict",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place: global ``rank`` of ``world_size``, ``local_rank`` on its node, and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    try:
        return int(v) if v not in (None, "") else default
    except ValueError:
        raise UsageError(f"environment variable {name}={v!r} is not an integer (set by torchrun)") from None


def init_distributed(device: str | None = None, backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Initialise torch.distributed from torchrun's environment variables (idempotent).

    Args:
        device: ``"cuda"``/``"cpu"``/``"cuda:1"``...; default CUDA when available. Under torchrun with CUDA the
            device index is ``LOCAL_RANK``.
        backend: default ``"nccl"`` for CUDA, ``"gloo"`` for CPU.
        timeout_s: collective timeout.

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` but CUDA was requested with fewer visible GPUs than ``LOCAL_RANK + 1``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(want)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda requested but CUDA is not available; use --device cpu")
        if world > 1 or dev.index is None:
            idx = local if world > 1 else (dev.index or 0)
            if idx >= torch.cuda.device_count():
                raise UsageError(f"LOCAL_RANK {local} needs GPU {idx} but only {torch.cuda.device_count()} are "
                                   f"visible; set --nproc_per_node to at most the number of GPUs")
            dev = torch.device("cuda", idx)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        be = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs = {"device_id": dev} if be == "nccl" else {}
        dist.init_process_group(backend=be, timeout=_dt.timedelta(seconds=timeout_s), **kwargs)
        log.info("distributed: rank %d/%d (local %d), backend %s, device %s", rank, world, local, be, dev)
    return DistInfo(rank, world, local, dev)


def cleanup_distributed() -> None:
    """Destroy the default process group if this process created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without distribution."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_mean_dict(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Average scalar tensors over ranks (for logging only; gradients are averaged by DDP itself)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    if is_distributed():
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, stacked.tolist())}
