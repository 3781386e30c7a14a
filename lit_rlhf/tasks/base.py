"""Ground-truth tasks: a data generator plus a gold reward.

A task yields *raw records* in the standard formats (the same dicts a jsonl file would hold), so task
data goes through exactly the same validation, tokenisation and collation as file data.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Literal

import torch

Kind = Literal["sft", "prompt", "preference", "step", "weak"]
Split = Literal["train", "val", "test"]


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from a stable hash of ``parts`` (independent of ``PYTHONHASHSEED``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_of(key: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """Deterministic split assignment from a stable hash of ``key`` (so splits never leak)."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


class Task(ABC):
    """A ground-truth environment.

    Subclasses implement :meth:`records` for the kinds they support and :meth:`reward`.
    """

    name: str = "task"
    kinds: tuple[Kind, ...] = ()

    @abstractmethod
    def records(self, kind: Kind, split: Split, n: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(where, record)`` pairs: ``n`` raw records of ``kind`` from ``split``."""

    @abstractmethod
    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """Gold reward for each (prompt, completion), shape ``(B,)`` float32."""

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise ValueError(f"task '{self.name}' has no '{kind}' data; it provides {list(self.kinds)}")
