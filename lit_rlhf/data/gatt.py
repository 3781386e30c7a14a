"""Ghost Attention (GAtt) training data (Touvron et al. 2023, Llama 2, §3.3).

Given dialogues (user turns) and instructions that should hold for a whole dialogue:

1. draw a random combination of instructions per dialogue (:func:`~lit_rlhf.tasks.base.combine_instructions`);
2. attach it to **every** user message and sample the assistant replies turn by turn with a replier (any
   callable, e.g. a policy as :class:`~lit_rlhf.rollout.generation.ChatReplier`, or a task's reference replier);
3. emit training samples that keep the instruction only in the first turn (the system message; shortened
   with probability ``short_prob``) and end at a chosen turn: read with ``train_on="last_assistant"``
   (the default of :class:`~lit_rlhf.data.SFTDataModule`), the loss is zero on every earlier turn,
   assistant replies included.

Samples are ordinary ``{"messages": [...]}`` records, so they take the same path as any file or task data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch

from lit_rlhf.data.schemas import Message
from lit_rlhf.tasks.base import Instruction, Kind, Split, Task, combine_instructions, render_instruction

Replier = Callable[[list[list[Message]]], list[str]]
Cuts = Literal["all", "random", "last"]
Record = tuple[str, dict[str, Any]]


def sample_replies(
    dialogues: Sequence[Sequence[str]], instructions: Sequence[str], replier: Replier, join: str = "\n"
) -> list[list[str]]:
    """Replies to every turn, sampled with ``instructions[k]`` attached in front of each user message of
    dialogue ``k``. All dialogues advance together: one replier call per turn."""
    contexts: list[list[Message]] = [[] for _ in dialogues]
    for t in range(max(map(len, dialogues), default=0)):
        live = [k for k, turns in enumerate(dialogues) if t < len(turns)]
        for k in live:
            contexts[k].append({"role": "user", "content": f"{instructions[k]}{join}{dialogues[k][t]}"})
        for k, reply in zip(live, replier([contexts[k] for k in live])):
            contexts[k].append({"role": "assistant", "content": reply})
    return [[m["content"] for m in c if m["role"] == "assistant"] for c in contexts]


def build_gatt(
    dialogues: Sequence[Sequence[str]],
    instructions: Sequence[Instruction],
    replier: Replier,
    seed: int = 0,
    max_combine: int = 2,
    short_prob: float = 0.5,
    cuts: Cuts = "all",
    join: str = "\n",
    name: str = "gatt",
) -> list[Record]:
    """GAtt samples ``(where, {"messages", "instruction", "turn"})`` from ``dialogues`` (user turns).

    Args:
        dialogues: the user messages of each dialogue.
        instructions: the pool to combine from (one per category, 1..``max_combine`` categories).
        replier: samples the replies (sees the instruction on every user turn).
        seed: seeds the combinations, the shortening and the cuts.
        max_combine: most categories combined.
        short_prob: probability that the system message uses the short forms.
        cuts: where samples end: after ``all`` turns (one sample per turn), one ``random`` turn, or the
            ``last`` one (one sample per dialogue); the loss goes on the final turn only.
        join: separator between the attached instruction and the user message.
        name: prefix of ``where``.
    """
    if cuts not in ("all", "random", "last"):
        raise ValueError(f"cuts must be 'all', 'random' or 'last', got {cuts!r}")
    rng = random.Random(seed)
    combos = [combine_instructions(instructions, rng, max_combine) for _ in dialogues]
    replies = sample_replies(dialogues, [render_instruction(c) for c in combos], replier, join)
    records: list[Record] = []
    for k, (turns, combo, answers) in enumerate(zip(dialogues, combos, replies)):
        system = render_instruction(combo, short=rng.random() < short_prob)
        n = len(turns)
        ends = {"all": range(1, n + 1), "random": [rng.randint(1, n)], "last": [n]}[cuts]
        for end in ends:
            messages = [{"role": "system", "content": system}]
            for user, reply in zip(turns[:end], answers[:end]):
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
            record = {"messages": messages, "instruction": [i.text for i in combo], "turn": end}
            records.append((f"{name}#{k}/turn{end}", record))
    return records


class GAttData(Task):
    """A dialogue task whose ``sft`` data is rebuilt with Ghost Attention (other kinds and the gold
    reward are the task's own).

    The task must provide ``dialogues(split, n, seed)`` (objects with ``turns``), ``instructions`` and,
    unless ``replier`` is given, a reference replier ``reply(dialogues) -> replies``
    (e.g. :class:`~lit_rlhf.tasks.Dialogue`).

    Args:
        task: the dialogue task.
        replier: samples the replies instead of the task's reference replier: any callable
            ``(dialogues) -> replies``, e.g. a policy as :class:`~lit_rlhf.rollout.generation.ChatReplier`
            (in YAML: ``class_path: lit_rlhf.rollout.ChatReplier`` with ``init_args: {model: <name>, sampling: ...}``).
        max_combine: most instruction categories combined per dialogue.
        short_prob: probability of a shortened system message.
        cuts: see :func:`build_gatt`.
        join: separator between the attached instruction and the user message.
    """

    def __init__(
        self,
        task: Task,
        replier: Replier | None = None,
        max_combine: int = 2,
        short_prob: float = 0.5,
        cuts: Cuts = "all",
        join: str = "\n",
    ) -> None:
        missing = [a for a in ("dialogues", "instructions", *(() if replier else ("reply",))) if not hasattr(task, a)]
        if missing:
            raise ValueError(f"GAtt needs a dialogue task; task '{task.name}' has no {missing}")
        self.task = task
        self.max_combine, self.short_prob, self.cuts, self.join = max_combine, short_prob, cuts, join
        self.name, self.kinds = f"gatt:{task.name}", task.kinds
        self._replier: Replier = replier if replier is not None else task.reply  # type: ignore[attr-defined]

    def replier(self) -> Replier:
        return self._replier

    def records(self, kind: Kind, split: Split, n: int, seed: int = 0) -> Iterator[Record]:
        """``sft``: ``n`` GAtt samples of ``split``; other kinds: the task's records."""
        if kind != "sft":
            yield from self.task.records(kind, split, n, seed)
            return
        per_dialogue = {"all": 4, "random": 1, "last": 1}[self.cuts]  # a first guess; more chunks follow if short
        records: list[Record] = []
        chunk = 0
        while len(records) < n:
            size = max(1, math.ceil((n - len(records)) / per_dialogue))
            chunk_seed = seed * 1000 + chunk
            turns = [c.turns for c in self.task.dialogues(split, size, chunk_seed)]  # type: ignore[attr-defined]
            records += build_gatt(turns, self.task.instructions, self.replier(), seed=chunk_seed,  # type: ignore[attr-defined]
                                  max_combine=self.max_combine, short_prob=self.short_prob, cuts=self.cuts,
                                  join=self.join, name=f"task:{self.name}/{split}/{chunk}")
            chunk += 1
        yield from records[:n]

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        return self.task.reward(prompts, completions)
