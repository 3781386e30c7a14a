"""Rollout buffer: the experience of one PPO iteration, iterated in shuffled minibatches over epochs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class RolloutBuffer:
    """Rollout tensors (``(N, ...)`` on the first axis) plus the prompt/completion texts.

    Fields (any subset): ``query (N, P)`` left-padded prompt ids, ``response (N, R)``,
    ``attention_mask (N, P+R)``, ``response_mask (N, R)``, ``logprobs``/``ref_logprobs``/``values``/
    ``rewards``/``advantages``/``returns`` ``(N, R)``, ``scores (N,)``. Every field must share ``N``.
    """

    def __init__(self) -> None:
        self.data: dict[str, torch.Tensor] = {}
        self.texts: dict[str, list[str]] = {}

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

    def minibatches(
        self, num_mini_batches: int, epochs: int = 1, generator: torch.Generator | None = None, uneven: bool = False
    ) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """Yield ``(epoch, index, minibatch)``: each epoch is a fresh random permutation cut into
        ``num_mini_batches`` parts, equal (the buffer size must be divisible by it) or, with ``uneven``,
        of near-equal sizes, the larger first (``torch.tensor_split``; at most one part per row)."""
        n = len(self)
        if n == 0:
            raise ValueError("the rollout buffer is empty")
        if num_mini_batches < 1 or (n % num_mini_batches and not uneven):
            raise ValueError(f"{n} rollouts cannot be split into {num_mini_batches} equal minibatches")
        device = next(iter(self.data.values())).device
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator)
            for i, idx in enumerate(order.tensor_split(min(num_mini_batches, n))):
                idx = idx.to(device)
                yield epoch, i, {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "data": {k: v.cpu() for k, v in self.data.items()},
            "texts": {k: list(v) for k, v in self.texts.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data = dict(state.get("data", {}))
        self.texts = {k: list(v) for k, v in state.get("texts", {}).items()}
