"""Ground-truth tasks: a data generator plus a gold reward.

A task yields *raw records* in the standard formats (the same dicts a jsonl file would hold), so task
data goes through exactly the same validation, tokenisation and collation as file data.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Instruction:
    """A standing instruction for a whole dialogue (Llama 2 GAtt: "act as …", "speak in …").

    Attributes:
        category: what it constrains (``"case"``, ``"language"``, ``"persona"``); a combination holds at
            most one instruction per category.
        text: the full instruction, e.g. ``"End every reply with !"``.
        short: an optional shortened form, e.g. ``"End: !"``.
        value: the option's parameter (``"!"``), for checkers.
    """

    category: str
    text: str
    short: str | None = None
    value: str = ""


def combine_instructions(
    instructions: Sequence[Instruction], rng: random.Random, max_combine: int = 2
) -> tuple[Instruction, ...]:
    """A random combination: 1..``max_combine`` distinct categories, one instruction from each (in the
    order of first appearance of the categories in ``instructions``)."""
    categories = list(dict.fromkeys(i.category for i in instructions))
    if not categories:
        raise ValueError("no instructions to combine")
    picked = set(rng.sample(categories, rng.randint(1, min(max_combine, len(categories)))))
    return tuple(rng.choice([i for i in instructions if i.category == c]) for c in categories if c in picked)


def render_instruction(instructions: Sequence[Instruction], short: bool = False) -> str:
    """A combination as one system message: full texts joined by spaces, or the short forms by commas
    (an instruction without a short form keeps its text)."""
    if short:
        return ", ".join(i.short or i.text for i in instructions)
    return " ".join(i.text for i in instructions)


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

    def solution_text(self, prompt: str, completion: str) -> str:
        """The whole text an outcome verifier reads for a (problem, solution): its ``weak`` records' ``text``."""
        return prompt + completion

    def check_kind(self, kind: str) -> None:
        if kind not in self.kinds:
            raise ValueError(f"task '{self.name}' has no '{kind}' data; it provides {list(self.kinds)}")


class ProblemTask(Task):
    """A task whose records are one per generated problem: subclasses give ``problems`` and ``_record``.

    The same ``(split, seed)`` gives the same problems for every kind; the per-record randomness comes from
    a generator seeded by ``(name, kind, split, seed)``.
    """

    @abstractmethod
    def problems(self, split: Split, n: int, seed: int = 0) -> Iterator[Any]:
        """``n`` problems of ``split``, deterministic in ``seed``."""

    @abstractmethod
    def _record(self, kind: Kind, problem: Any, rng: random.Random) -> dict[str, Any]:
        """One raw record of ``kind`` for ``problem``."""

    def records(self, kind: Kind, split: Split, n: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``n`` records of ``kind`` from ``split`` (see :meth:`_record` for their fields)."""
        self.check_kind(kind)
        rng = seeded_rng(self.name, kind, split, seed)
        for i, problem in enumerate(self.problems(split, n, seed)):
            yield f"task:{self.name}/{split}#{i}", self._record(kind, problem, rng)
