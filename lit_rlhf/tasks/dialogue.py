"""Dialogues with a standing, machine-checkable instruction (Ghost Attention miniature, Llama 2 §3.3).

A dialogue is a system instruction and ``n`` user turns, each one word. The ideal reply is the word,
transformed by every instruction in force::

    system:  Reply in upper case. End every reply with !        (shortened: "Case: upper, End: !")
    user:    cat        assistant:  CAT!
    user:    owl        assistant:  OWL!

Instructions come in three categories (``case``: upper; ``start``: one of 5 markers; ``end``: one of 5
markers) combined at random, so a reply can only be right if the model keeps reading the system message.
Every reply is checkable (:meth:`Dialogue.follows`).

The reference replier (:meth:`Dialogue.reply`) plays the sampling model of Llama 2 §3.3: it always obeys
instructions written in the current user message, but obeys the system message at user turn ``t`` only
with probability ``recall ** (t - 1)`` — it forgets, as early Llama 2-Chat did. ``sft`` records are
dialogues sampled from it as they are (naive multi-turn data); :class:`lit_rlhf.data.gatt.GAttData`
samples the same kind of dialogues with the instruction attached to every user turn instead.

Gold metrics: :meth:`Dialogue.reward` (does a completion follow every instruction found in its prompt?)
and :meth:`Dialogue.follow_rates` (instruction-following rate at turns 1..T of dialogues that a policy
continues on its own replies).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lit_rlhf.tasks.base import (
    Instruction,
    Kind,
    Split,
    Task,
    combine_instructions,
    render_instruction,
    seeded_rng,
    split_of,
)

Message = dict[str, str]
WORDS = ("cat", "dog", "fox", "owl", "bee", "cow", "pig", "hen", "ant", "bat", "elk", "yak", "emu", "eel", "ram", "ape")
START_MARKERS = (">", "@", "%", "$", "&")
END_MARKERS = ("!", "?", "#", "*", "+")
_WORD_RE = re.compile(r"[a-z]+")


def instruction_set(
    start_markers: Sequence[str] = START_MARKERS, end_markers: Sequence[str] = END_MARKERS
) -> tuple[Instruction, ...]:
    """The task's instructions: upper case, start with a marker, end with a marker (each with a short form)."""
    return (
        Instruction("case", "Reply in upper case.", "Case: upper", "upper"),
        *(Instruction("start", f"Start every reply with {m}", f"Start: {m}", m) for m in start_markers),
        *(Instruction("end", f"End every reply with {m}", f"End: {m}", m) for m in end_markers),
    )


@dataclass(frozen=True)
class Conversation:
    """A standing instruction (a combination) and the user turns (one word each)."""

    instruction: tuple[Instruction, ...]
    turns: tuple[str, ...]


class Dialogue(Task):
    """Multi-turn dialogues whose system instruction is checkable on every reply.

    Args:
        min_turns: fewest user turns in a generated dialogue.
        max_turns: most user turns.
        max_combine: most instruction categories combined in one dialogue.
        recall: the reference replier obeys the system message at user turn ``t`` with probability
            ``recall ** (t - 1)`` (instructions in the current user message: always).
        short_prob: probability that a system message uses the shortened instruction forms.
        words: the user turns' vocabulary (lowercase words).
    """

    name = "dialogue"
    kinds: tuple[Kind, ...] = ("sft", "prompt")

    def __init__(
        self,
        min_turns: int = 1,
        max_turns: int = 8,
        max_combine: int = 2,
        recall: float = 0.5,
        short_prob: float = 0.5,
        words: Sequence[str] = WORDS,
    ) -> None:
        if not 1 <= min_turns <= max_turns:
            raise ValueError(f"need 1 <= min_turns <= max_turns, got {min_turns}, {max_turns}")
        for name, p in (("recall", recall), ("short_prob", short_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if not words or any(not _WORD_RE.fullmatch(w) for w in words):
            raise ValueError(f"words must be non-empty lowercase ascii words, got {list(words)}")
        self.min_turns, self.max_turns, self.max_combine = min_turns, max_turns, max_combine
        self.recall, self.short_prob, self.words = recall, short_prob, tuple(words)
        self.instructions = instruction_set()
        clash = {w for i in self.instructions for w in _WORD_RE.findall(f"{i.text} {i.short}".lower())} & set(words)
        if clash:
            raise ValueError(f"words {sorted(clash)} also occur in the instructions")

    # ---------------------------------------------------------------- grading

    def found(self, text: str) -> tuple[Instruction, ...]:
        """The instructions written in ``text`` (full or short form)."""
        return tuple(i for i in self.instructions if i.text in text or (i.short and i.short in text))

    def query(self, content: str) -> str:
        """The word a user message asks about: its last vocabulary word (``""`` if none)."""
        return next((w for w in reversed(_WORD_RE.findall(content)) if w in self.words), "")

    @staticmethod
    def ideal(word: str, instructions: Sequence[Instruction]) -> str:
        """The reply to ``word`` that follows every instruction."""
        kinds = {i.category: i.value for i in instructions}
        reply = word.upper() if "case" in kinds else word
        return kinds.get("start", "") + reply + kinds.get("end", "")

    @staticmethod
    def follows(instructions: Sequence[Instruction], reply: str) -> bool:
        """Whether ``reply`` follows every instruction (upper case needs a letter and no lowercase one)."""
        checks = {
            "case": lambda v: any(c.isalpha() for c in reply) and not any(c.islower() for c in reply),
            "start": reply.startswith,
            "end": reply.endswith,
        }
        return all(checks[i.category](i.value) for i in instructions)

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """1.0 where the completion follows every instruction written in its (rendered) prompt; ``(B,)``."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return torch.tensor([self.follows(self.found(p), c) for p, c in zip(prompts, completions)], dtype=torch.float32)

    # ---------------------------------------------------------------- reference replier

    def reply(self, dialogues: list[list[Message]]) -> list[str]:
        """Reference replies to the last user message of each dialogue (deterministic per dialogue).

        Obeys the instructions in that user message, and those of the system message with probability
        ``recall ** (t - 1)`` at user turn ``t``.
        """
        out = []
        for messages in dialogues:
            users = [m["content"] for m in messages if m["role"] == "user"]
            if not users:
                raise ValueError("a dialogue to reply to needs a user message")
            system = " ".join(m["content"] for m in messages if m["role"] == "system")
            rng = seeded_rng(self.name, "reply", json.dumps(messages, sort_keys=True))
            kept = self.found(system) if rng.random() < self.recall ** (len(users) - 1) else ()
            in_force = {i.category: i for i in (*kept, *self.found(users[-1]))}  # the user message wins
            out.append(self.ideal(self.query(users[-1]), list(in_force.values())))
        return out

    # ---------------------------------------------------------------- data

    def dialogues(self, split: Split, n: int, seed: int = 0, turns: int | None = None) -> list[Conversation]:
        """``n`` random conversations of ``split`` (``turns`` user turns each, else min..max_turns)."""
        rng = seeded_rng(self.name, split, seed)
        out: list[Conversation] = []
        while len(out) < n:
            k = turns or rng.randint(self.min_turns, self.max_turns)
            conv = Conversation(combine_instructions(self.instructions, rng, self.max_combine),
                                tuple(rng.choice(self.words) for _ in range(k)))
            if split_of(render_instruction(conv.instruction) + "|" + " ".join(conv.turns)) == split:
                out.append(conv)
        return out

    def system(self, conv: Conversation, rng: Any) -> Message:
        return {"role": "system", "content": render_instruction(conv.instruction, short=rng.random() < self.short_prob)}

    def records(self, kind: Kind, split: Split, n: int, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """``sft``: naive dialogues (system instruction, reference replies as sampled); ``prompt``: the
        system message and the first user turn."""
        self.check_kind(kind)
        rng = seeded_rng(self.name, kind, split, seed)
        for i, conv in enumerate(self.dialogues(split, n, seed)):
            messages = [self.system(conv, rng)]
            texts = [i.text for i in conv.instruction]
            if kind == "prompt":
                yield (
                    f"task:{self.name}/{split}#{i}",
                    {"prompt": [*messages, _user(conv.turns[0])], "instruction": texts},
                )
                continue
            for word in conv.turns:
                messages.append(_user(word))
                messages.append({"role": "assistant", "content": self.reply([messages])[0]})
            yield f"task:{self.name}/{split}#{i}", {"messages": messages, "instruction": texts}

    # ---------------------------------------------------------------- gold metric

    def follow_rates(
        self, replier: Callable[[list[list[Message]]], list[str]], n: int = 100, turns: int = 8,
        split: Split = "test", seed: int = 0, short: bool = False,
    ) -> dict[str, list[float]]:
        """Instruction-following rate at user turns 1..``turns``.

        ``n`` test conversations with ``turns`` turns each start from the system instruction; ``replier``
        answers turn after turn and its own replies stay in the dialogue.

        Returns:
            ``{"follow": [rate at turn 1, ...], "correct": [...]}``: the fraction of replies that follow
            every instruction, and the fraction equal to the ideal reply (right word too).
        """
        convs = self.dialogues(split, n, seed, turns=turns)
        chats = [[{"role": "system", "content": render_instruction(c.instruction, short)}] for c in convs]
        follow, correct = [], []
        for t in range(turns):
            for chat, conv in zip(chats, convs):
                chat.append(_user(conv.turns[t]))
            replies = replier(chats)
            follow.append(sum(self.follows(c.instruction, r) for c, r in zip(convs, replies)) / n)
            correct.append(sum(r == self.ideal(c.turns[t], c.instruction) for c, r in zip(convs, replies)) / n)
            for chat, r in zip(chats, replies):
                chat.append({"role": "assistant", "content": r})
        return {"follow": follow, "correct": correct}


def _user(content: str) -> Message:
    return {"role": "user", "content": content}
