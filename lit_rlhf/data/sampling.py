"""Length-grouped batching: batches of similar length waste less compute on padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose members have similar lengths.

    Indices are shuffled, cut into mega-batches of ``batch_size * group_factor``, each sorted by length
    and cut into batches; the batch order is shuffled again. Under ``num_replicas > 1`` every replica
    gets the same number of batches (the tail is dropped, or padded by wrapping if ``drop_last=False``).
    Deterministic for a given ``seed`` and epoch (call :meth:`set_epoch`).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        group_factor: int = 50,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        self.lengths, self.batch_size, self.shuffle, self.seed = list(lengths), batch_size, shuffle, seed
        self.group_factor, self.drop_last = group_factor, drop_last
        self.num_replicas, self.rank, self.epoch = num_replicas, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=gen).tolist() if self.shuffle else list(range(n))
        mega = self.batch_size * self.group_factor
        batches: list[list[int]] = []
        for start in range(0, n, mega):
            group = sorted(order[start:start + mega], key=lambda i: -self.lengths[i])
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        per_rank = len(self)
        if not self.drop_last and per_rank * self.num_replicas > len(batches):
            batches = batches + batches[: per_rank * self.num_replicas - len(batches)]
        yield from batches[self.rank: per_rank * self.num_replicas: self.num_replicas]

    def __len__(self) -> int:
        total = len(self._all_batches())
        return total // self.num_replicas if self.drop_last else -(-total // self.num_replicas)
