"""Length-grouped batching (batches of similar length waste less compute on padding), resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


class _EpochSetter:
    """Lightning sets the epoch of ``dataloader.sampler`` and ``dataloader.batch_sampler.sampler``, never of a
    batch sampler itself; this stand-in forwards it (without it every epoch would repeat epoch 0's order)."""

    def __init__(self, batch_sampler: "LengthGroupedBatchSampler") -> None:
        self.batch_sampler = batch_sampler

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose members have similar lengths.

    Indices are shuffled, cut into mega-batches of ``batch_size * group_factor``, each sorted by length
    and cut into batches; the batch order is shuffled again. Under ``num_replicas > 1`` every replica
    gets the same number of batches (the tail is dropped, or padded by wrapping if ``drop_last=False``).
    Deterministic for a given ``seed`` and epoch (call :meth:`set_epoch`); ``group_factor=1`` gives plain
    shuffled batches. :meth:`resume` makes the next pass of a given epoch start after the batches a killed
    run had already consumed (see :class:`ResumableLoader`).
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
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) for the next pass
        self.pass_epoch, self.pass_start = 0, 0  # epoch and first batch of the pass in progress
        self.sampler = _EpochSetter(self)  # Lightning calls ``batch_sampler.sampler.set_epoch`` at each epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches: int) -> None:
        """Make the next pass over ``epoch`` skip its first ``batches`` batches (of this rank); absolute, so
        calling it twice with the same position is harmless. Passes over other epochs start at 0."""
        self.epoch, self._resume = epoch, (epoch, batches)

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
        mine = batches[self.rank: per_rank * self.num_replicas: self.num_replicas]
        start = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume, self.pass_epoch, self.pass_start = None, self.epoch, min(start, len(mine))
        yield from mine[self.pass_start:]

    def __len__(self) -> int:
        total = len(self._all_batches())
        return total // self.num_replicas if self.drop_last else -(-total // self.num_replicas)


class ResumableLoader:
    """Batches of a ``DataLoader`` over a :class:`LengthGroupedBatchSampler`, with its position in the epoch
    checkpointed.

    It counts the batches it has handed out in the current pass; :meth:`state_dict` is ``{"epoch", "batches"}``
    and :meth:`load_state_dict` makes the next pass of that epoch continue after them, in the same order. Having
    both methods, it is "resumable" for Lightning, which saves its state in the checkpoint's loop state; the
    data module also saves it (see :meth:`lit_rlhf.data.RowDataModule.state_dict`) because Lightning 2.6 does
    not reload loader states when ``configure_optimizers`` asked for ``estimated_stepping_batches`` (an LR
    schedule), which had already built the loader.

    Not a ``DataLoader`` subclass on purpose: under DDP Lightning rebuilds ``DataLoader`` objects to inject a
    ``DistributedSampler``, and would rebuild this batch sampler from that sampler's indices (taking them
    for lengths, with one replica: every rank then trained on the same half of the data). The batch sampler
    shards over the ranks itself.

    Args:
        dataset: map-style dataset.
        batch_sampler: the (sharded) batch sampler.
        **kwargs: other ``DataLoader`` arguments (``collate_fn``, ``num_workers``, ...).
    """

    def __init__(self, dataset: Any, batch_sampler: LengthGroupedBatchSampler, **kwargs: Any) -> None:
        self.dataset, self.batch_sampler = dataset, batch_sampler
        self.loader = DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)
        self.position: int | None = None  # batches of the current pass handed out (None: no pass started)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.position = None
        for batch in self.loader:
            sampler = self.batch_sampler
            self.position = (sampler.pass_start if self.position is None else self.position) + 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        if self.position is None:  # no batch handed out since construction or load_state_dict
            epoch, batches = sampler._resume if sampler._resume is not None else (sampler.epoch, 0)
            return {"epoch": epoch, "batches": batches}
        if self.position >= len(sampler):  # the pass is over: the next one starts a new epoch
            return {"epoch": sampler.pass_epoch + 1, "batches": 0}
        return {"epoch": sampler.pass_epoch, "batches": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(int(state["epoch"]), int(state["batches"]))
