"""Samplers: aspect-ratio grouped training batches (single process or sharded across DDP ranks) and
contiguous inference shards.

Training (:class:`GroupedBatchSampler`, mmdet ``GroupSampler`` / ``DistributedGroupSampler``): every batch holds
images of one aspect-ratio group (landscape w/h > 1, or not), so padding wastes little. Per epoch, with a
generator seeded by ``seed + epoch``: each group's indices are shuffled and padded (by repeating its own first
indices) to a multiple of the per-rank batch size, cut into batches, and the batches of all groups are shuffled
together; the batch list is padded to a multiple of ``world_size`` and rank r takes batches r, r + W, r + 2W, ...
Every rank therefore runs the same number of iterations per epoch, and the union over ranks is the whole
(padded) epoch. Each position also draws a flip decision (``flip_ratio``), so batches are lists of
``(index, flip)`` keys for :class:`~refinemask.data.datasets.InstanceDataset`.

The sampler is *infinite* and *resumable*: it yields batches for epoch ``e`` from position ``p`` onwards, then the
following epochs, forever; the trainer stops it. Because everything is a function of (seed, epoch, position),
restarting at ``start_iter`` reproduces exactly the batches an uninterrupted run would have seen.

Inference (:func:`inference_shard`): detectron2 ``InferenceSampler``: contiguous, unpadded shards, so every image
is processed exactly once across ranks and gathering the shards in rank order restores the dataset order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from eval.errors import UsageError

__all__ = ["GroupedBatchSampler", "inference_shard", "expand_indices"]


def expand_indices(n: int, repeat: int = 1, repeat_factors: Sequence[float] | None = None) -> list[int]:
    """Dataset indices of one epoch: ``range(n)`` repeated ``repeat`` times (mmdet ``RepeatDataset``), each index
    ``i`` appearing ``ceil(repeat_factors[i])`` times when class-balanced factors are given (mmdet
    ``ClassBalancedDataset``)."""
    base: list[int] = []
    for i in range(n):
        k = 1 if repeat_factors is None else int(math.ceil(repeat_factors[i]))
        base += [i] * k
    return base * max(1, int(repeat))


class GroupedBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Infinite, resumable, aspect-ratio grouped batch sampler, sharded across ranks.

    Args:
        group_ids: (N,) group of each dataset index (e.g. ``InstanceDataset.aspect_ratio_flags()``).
        batch_size: images per batch on ONE rank.
        indices: the epoch's dataset indices (default ``range(N)``; see :func:`expand_indices`).
        flip_ratio: probability of a horizontal flip per sampled image (0 disables).
        shuffle: shuffle within groups and across batches (False: deterministic order, still grouped).
        seed: base seed (same on every rank).
        rank / world_size: this process's shard.
        start_iter: global iteration to start from (resume): epoch = start_iter // batches_per_epoch.

    Yields:
        lists of ``batch_size`` ``(index, flip)`` pairs.
    """

    def __init__(
        self,
        group_ids: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        indices: Sequence[int] | None = None,
        flip_ratio: float = 0.5,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is not in [0, world_size={world_size})")
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.indices = list(range(len(self.group_ids))) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise UsageError("GroupedBatchSampler: no indices to sample from (empty dataset?)")
        self.batch_size = batch_size
        self.flip_ratio = float(flip_ratio)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.start_iter = int(start_iter)
        self._per_epoch = len(self.epoch_batches(0)) // world_size

    @property
    def batches_per_epoch(self) -> int:
        """Iterations per epoch on each rank."""
        return self._per_epoch

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, bool]]]:
        """All ranks' batches of ``epoch`` (padded to a multiple of ``world_size``), in global order."""
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + epoch)
        idx = torch.as_tensor(self.indices, dtype=torch.int64)
        groups = torch.as_tensor(self.group_ids[self.indices], dtype=torch.int64)
        batches: list[list[int]] = []
        for gid in torch.unique(groups).tolist():  # ascending, deterministic
            members = idx[groups == gid]
            if self.shuffle:
                members = members[torch.randperm(len(members), generator=g)]
            members = members.tolist()
            pad = (-len(members)) % self.batch_size
            members += (members * (pad // max(len(members), 1) + 1))[:pad]
            batches += [members[i:i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        pad = (-len(batches)) % self.world_size
        batches += (batches * (pad // len(batches) + 1))[:pad]
        flips = (torch.rand(len(batches) * self.batch_size, generator=g) < self.flip_ratio).tolist()
        return [[(i, bool(flips[b * self.batch_size + k])) for k, i in enumerate(batch)]
                for b, batch in enumerate(batches)]

    def state(self, iteration: int) -> dict:
        """Plain-python sampler position after ``iteration`` completed iterations (stored in checkpoints)."""
        return {"seed": self.seed, "epoch": iteration // self._per_epoch, "position": iteration % self._per_epoch,
                "batches_per_epoch": self._per_epoch, "batch_size": self.batch_size, "world_size": self.world_size}

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        epoch, pos = divmod(self.start_iter, self._per_epoch)
        while True:
            mine = self.epoch_batches(epoch)[self.rank::self.world_size]
            yield from mine[pos:]
            epoch, pos = epoch + 1, 0

    def __len__(self) -> int:  # one epoch (the iterator itself is infinite)
        return self._per_epoch


def inference_shard(n: int, rank: int = 0, world_size: int = 1) -> range:
    """Contiguous indices of ``rank`` among ``n`` items (sizes differ by at most one; every item exactly once)."""
    per, extra = divmod(n, world_size)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))
