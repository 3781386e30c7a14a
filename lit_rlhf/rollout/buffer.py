"""Rollout buffer: the experience of one PPO iteration, iterated in shuffled minibatches over epochs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def minibatch_rows(
    n: int, num_mini_batches: int, group_size: int = 1, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Row indices of one epoch's minibatches: a random permutation of the ``n`` rows cut into ``num_mini_batches``
    near-equal parts, the larger first (``torch.tensor_split``; at most one part per row).

    With ``group_size`` G ≥ 2 (rows ``g·G … g·G + G − 1`` form group ``g``), a random permutation of the groups cut
    into near-equal parts of whole groups, each group's rows adjacent and in order, so a minibatch holds whole groups
    (its prompts can be encoded once); rows as above when ``n`` is not a multiple of G or there are fewer groups than
    minibatches. One ``torch.randperm`` draw either way.
    """
    parts = min(num_mini_batches, n)
    groups = n // group_size if group_size >= 2 and n % group_size == 0 else 0
    if groups < parts:
        return list(torch.randperm(n, generator=generator).tensor_split(parts))
    order = torch.randperm(groups, generator=generator)
    return [(g.unsqueeze(-1) * group_size + torch.arange(group_size)).reshape(-1) for g in order.tensor_split(parts)]


class RolloutBuffer:
    """Rollout tensors (``(N, ...)`` on the first axis) plus the prompt/completion texts.

    Fields (any subset): ``query (N, P)`` left-padded prompt ids, ``response (N, R)``,
    ``attention_mask (N, P+R)``, ``response_mask (N, R)``, ``logprobs``/``ref_logprobs``/``values``/
    ``rewards``/``advantages``/``returns`` ``(N, R)``, ``scores (N,)``. Every field must share ``N``.
    """

    def __init__(self) -> None:
        self.data: dict[str, torch.Tensor] = {}
        self.texts: dict[str, list[str]] = {}
        # the first epoch's minibatch rows when drawn before the buffer was filled (the rollout pass ran in them)
        self.first_epoch: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def add(self, **fields: torch.Tensor | list[str]) -> None:
        """Set fields (tensors or lists of strings); all must have the buffer's length."""
        for name, value in fields.items():
            n = len(value)
            if len(self) and n != len(self):
                raise ValueError(f"field '{name}' has {n} rows but the buffer holds {len(self)}")
            if torch.is_tensor(value):
                self.data[name] = value.detach()
            else:
                self.texts[name] = list(value)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name]

    def clear(self) -> None:
        self.data.clear()
        self.texts.clear()
        self.first_epoch = None

    def minibatches(
        self, num_mini_batches: int, epochs: int = 1, generator: torch.Generator | None = None, uneven: bool = False,
        group_size: int = 1,
    ) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """Yield ``(epoch, index, minibatch)``: each epoch is a fresh random permutation cut into
        ``num_mini_batches`` parts, equal (the buffer size must be divisible by it) or, with ``uneven``,
        of near-equal sizes, the larger first (``torch.tensor_split``; at most one part per row).

        With ``group_size`` ≥ 2 the parts are made of whole groups (:func:`minibatch_rows`). The first epoch
        takes :attr:`first_epoch` where it is set (drawn before the rollout pass, which ran in the same parts).
        """
        n = len(self)
        if n == 0:
            raise ValueError("the rollout buffer is empty")
        if num_mini_batches < 1 or (n % num_mini_batches and not uneven):
            raise ValueError(f"{n} rollouts cannot be split into {num_mini_batches} equal minibatches")
        first = self.first_epoch
        if first is not None and not torch.equal(torch.cat(first).sort().values, torch.arange(n)):
            raise ValueError(f"first_epoch must cut the buffer's {n} rows into parts, each row once")
        device = next(iter(self.data.values())).device
        for epoch in range(epochs):
            parts = first if epoch == 0 and first is not None else minibatch_rows(n, num_mini_batches, group_size,
                                                                                   generator)
            if not uneven and len({len(idx) for idx in parts}) > 1:
                raise ValueError(f"{n} rollouts in groups of {group_size} cannot be split into {num_mini_batches} "
                                 "equal minibatches")
            for i, idx in enumerate(parts):
                idx = idx.to(device)
                yield epoch, i, {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "data": {k: v.cpu() for k, v in self.data.items()},
            "texts": {k: list(v) for k, v in self.texts.items()},
            "first_epoch": None if self.first_epoch is None else [idx.cpu() for idx in self.first_epoch],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data = dict(state.get("data", {}))
        self.texts = {k: list(v) for k, v in state.get("texts", {}).items()}
        first = state.get("first_epoch")
        self.first_epoch = None if first is None else list(first)
