"""Multi-step arithmetic chains whose every step is machine-checkable (Lightman et al. 2023 §3, in miniature).

A problem is a start value and a chain of ``(op, operand)`` steps applied **left to right**. The prompt
and the correct completion are short strings for a character-level model::

    prompt:      7+5*2-3=
    completion:  7+5=12
                 12*2=24
                 24-3=21
                 #### 21

Besides correct solutions the task generates three kinds of wrong ones, so that process supervision
(PRM) and outcome supervision (ORM) can be told apart:

* ``slip``: random ±1/±2 errors (each step with probability ``slip_prob``, at least one); later steps are
  computed correctly from the wrong claimed value, so the final answer is wrong.
* ``trap``: a problem-specific systematic error — a fixed step and a fixed ±3 offset derived from a hash
  of the problem — that a generator falls into consistently.
* ``compensated``: an error that a later step cancels: right final answer, wrong process.
"""

from __future__ import annotations

import hashlib
import operator
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lit_rlhf.tasks.base import Kind, ProblemTask, Split, seeded_rng, split_of

OPS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}
ANSWER_MARK = "####"
SOLUTION_KINDS = ("correct", "slip", "trap", "compensated")
ERROR_KINDS = ("correct", "compensated", "trap", "slip", "arithmetic", "malformed")
DEFAULT_STEP_MIX = {"correct": 0.4, "slip": 0.2, "trap": 0.2, "compensated": 0.2}

_PROMPT_RE = re.compile(r"(\d+)((?:[-+*]\d+)+)=")
_TERM_RE = re.compile(r"([-+*])(\d+)")
_LINE_RE = re.compile(r"(-?\d+)([-+*])(\d+)=(-?\d+)")
_ANSWER_RE = re.compile(r"-?\d+")
_SLIP_OFFSETS = (-2, -1, 1, 2)
_TRAP_OFFSET = 3


@dataclass(frozen=True)
class Problem:
    """A start value and a chain of ``(op, operand)`` steps, evaluated left to right."""

    start: int
    steps: tuple[tuple[str, int], ...]

    @classmethod
    def parse(cls, prompt: str) -> Problem:
        """Parse a prompt such as ``"7+5*2-3="``; raises ``ValueError`` if it is not one."""
        match = _PROMPT_RE.fullmatch(prompt.strip())
        if match is None:
            raise ValueError(f"not an arithmetic prompt: {prompt!r} (expected e.g. '7+5*2-3=')")
        steps = tuple((op, int(b)) for op, b in _TERM_RE.findall(match[2]))
        return cls(int(match[1]), steps)

    @property
    def prompt(self) -> str:
        return str(self.start) + "".join(f"{op}{b}" for op, b in self.steps) + "="

    def values(self) -> list[int]:
        """The true value after each step."""
        out, value = [], self.start
        for op, b in self.steps:
            value = OPS[op](value, b)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]


@dataclass(frozen=True)
class Solution:
    """A step-per-line solution with its ground-truth step labels.

    Attributes:
        lines: the arithmetic lines ``"a<op>b=c"`` (without the answer line).
        answer: the claimed final answer (the last claimed value).
        labels: :meth:`Arithmetic.check_steps` of the lines.
        kind: which generator made it (one of :data:`SOLUTION_KINDS`).
    """

    lines: tuple[str, ...]
    answer: int
    labels: tuple[bool, ...]
    kind: str

    @property
    def completion(self) -> str:
        """The full completion text: one step per line, then ``#### N``."""
        return "\n".join((*self.lines, f"{ANSWER_MARK} {self.answer}"))

    @property
    def steps(self) -> list[str]:
        """TRL stepwise ``completions``: the lines, with the answer line appended to the last one."""
        return split_steps(self.completion)

    @property
    def first_error(self) -> int | None:
        return next((i for i, ok in enumerate(self.labels) if not ok), None)


def parse_answer(completion: str) -> int | None:
    """The integer on the line after the last ``####``; ``None`` if absent or garbled.

    ``"...\\n#### 21"`` → 21; ``"####-4\\nmore text"`` → -4; ``"#### 21x"`` → None; ``"21"`` → None.
    """
    _, mark, tail = completion.rpartition(ANSWER_MARK)
    if not mark:
        return None
    first_line = tail.strip().split("\n", 1)[0].strip()
    return int(first_line) if _ANSWER_RE.fullmatch(first_line) else None


def split_steps(completion: str) -> list[str]:
    """Split a completion into TRL-style steps: one per arithmetic line, answer lines joined to the step before."""
    steps: list[str] = []
    for line in (raw.strip() for raw in completion.strip().split("\n")):
        if not line:
            continue
        if line.startswith(ANSWER_MARK) and steps:
            steps[-1] += "\n" + line
        else:
            steps.append(line)
    return steps


def _offset(base: int, offset: int) -> int:
    """``base + offset``, flipping the sign of the offset when that keeps the value non-negative."""
    return base + offset if base + offset >= 0 else base + abs(offset)


class Arithmetic(ProblemTask):
    """Arithmetic chains with correct, slipped, trapped and compensated solutions and a gold grader.

    Args:
        min_steps: fewest steps in a chain.
        max_steps: most steps in a chain.
        max_operand: operands of ``+``/``-`` and the start value are drawn from ``[1, max_operand]``
            (``*`` uses 2 or 3).
        max_value: every true intermediate value stays in ``[0, max_value]``.
        ops: the operators to draw from (a subset of ``"+-*"``).
        slip_prob: per-step probability of a ±1/±2 slip.
        trap_prob: probability that :meth:`sample_solution` falls into the problem's trap.
        compensate_prob: probability that :meth:`sample_solution` cancels its error at a later step.
        step_mix: weights of the solution kinds in ``step`` records (default 40% correct, 20% each of
            slip, trap and compensated); the slip/trap weights also pick the kind of ``rejected`` in
            preference records.
        trap_rule: where the systematic trap sits (:meth:`trap`): ``hash`` or ``first_multiply``.
    """

    name = "arithmetic"
    kinds: tuple[Kind, ...] = ("sft", "prompt", "preference", "step", "weak")

    def __init__(
        self,
        min_steps: int = 2,
        max_steps: int = 4,
        max_operand: int = 9,
        max_value: int = 99,
        ops: str = "+-*",
        slip_prob: float = 0.1,
        trap_prob: float = 0.5,
        compensate_prob: float = 0.3,
        step_mix: dict[str, float] | None = None,
        trap_rule: Literal["hash", "first_multiply"] = "hash",
    ) -> None:
        if not 1 <= min_steps <= max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
        if not 1 <= max_operand <= max_value:
            raise ValueError(f"need 1 <= max_operand <= max_value, got {max_operand}, {max_value}")
        if not ops or set(ops) - set(OPS):
            raise ValueError(f"ops must be a non-empty subset of '+-*', got {ops!r}")
        for name, p in (("slip_prob", slip_prob), ("trap_prob", trap_prob), ("compensate_prob", compensate_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        step_mix = dict(DEFAULT_STEP_MIX if step_mix is None else step_mix)
        if set(step_mix) - set(SOLUTION_KINDS) or min(step_mix.values()) < 0 or sum(step_mix.values()) <= 0:
            raise ValueError(f"step_mix needs non-negative weights over {SOLUTION_KINDS}, got {step_mix}")
        self.min_steps, self.max_steps = min_steps, max_steps
        self.max_operand, self.max_value, self.ops = max_operand, max_value, ops
        self.slip_prob, self.trap_prob, self.compensate_prob = slip_prob, trap_prob, compensate_prob
        self.step_mix = step_mix
        if trap_rule not in ("hash", "first_multiply"):
            raise ValueError(f"trap_rule must be 'hash' or 'first_multiply', got {trap_rule!r}")
        self.trap_rule = trap_rule

    # ---------------------------------------------------------------- problems and grading

    def sample_problem(self, rng: random.Random) -> Problem:
        """Draw a random problem whose true values all stay in ``[0, max_value]``."""
        value = rng.randint(1, self.max_operand)
        start, steps = value, []
        for _ in range(rng.randint(self.min_steps, self.max_steps)):
            op, b = self._sample_step(value, rng)
            steps.append((op, b))
            value = OPS[op](value, b)
        return Problem(start, tuple(steps))

    def _sample_step(self, value: int, rng: random.Random) -> tuple[str, int]:
        operands = {
            "+": range(1, self.max_operand + 1),
            "-": range(1, self.max_operand + 1),
            "*": range(2, min(3, self.max_operand) + 1),
        }
        valid = {op: [b for b in operands[op] if 0 <= OPS[op](value, b) <= self.max_value] for op in self.ops}
        valid = {op: bs for op, bs in valid.items() if bs}
        if not valid:
            raise ValueError(f"no step with ops {self.ops!r} keeps {value} within [0, {self.max_value}]")
        op = rng.choice(sorted(valid))
        return op, rng.choice(valid[op])

    @staticmethod
    def solve(prompt: str) -> int:
        """The true final answer, recomputed from the prompt text alone."""
        return Problem.parse(prompt).answer

    parse_answer = staticmethod(parse_answer)
    split_steps = staticmethod(split_steps)

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """1.0 where the completion's ``#### N`` equals the true answer, else 0.0; shape ``(B,)``."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        correct = [parse_answer(c) == self.solve(p) for p, c in zip(prompts, completions)]
        return torch.tensor(correct, dtype=torch.float32)

    @staticmethod
    def check_steps(prompt: str, steps: list[str]) -> list[bool]:
        """Ground-truth label of each step.

        Step ``i`` is correct iff its arithmetic line parses as ``a<op>b=c``, ``(op, b)`` is the problem's
        ``i``-th step, ``a`` is the previous step's claimed result (the start value for step 0) and
        ``c == a <op> b``. A ``#### N`` line inside a step must repeat ``c``. Steps beyond the problem's
        length are wrong; a missing step is simply not labelled.
        """
        problem = Problem.parse(prompt)
        labels: list[bool] = []
        previous: int | None = problem.start
        for i, step in enumerate(steps):
            lines = [line.strip() for line in step.strip().split("\n") if line.strip()]
            work = [line for line in lines if not line.startswith(ANSWER_MARK)]
            match = _LINE_RE.fullmatch(work[0]) if len(work) == 1 else None
            if match is None:
                labels.append(False)
                previous = None
                continue
            a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
            labels.append(
                i < len(problem.steps)
                and (op, b) == problem.steps[i]
                and a == previous
                and c == OPS[op](a, b)
                and all(parse_answer(line) == c for line in lines if line.startswith(ANSWER_MARK))
            )
            previous = c
        return labels

    @classmethod
    def first_error(cls, prompt: str, steps: list[str]) -> int | None:
        """Index of the first wrong step, or ``None`` if every given step is correct."""
        return next((i for i, ok in enumerate(cls.check_steps(prompt, steps)) if not ok), None)

    def error_kind(self, prompt: str, completion: str) -> str:
        """What went wrong in any solution (e.g. a model's sample), judged at its first wrong step.

        One of :data:`ERROR_KINDS`: ``correct`` (right answer, every step right), ``compensated`` (right
        answer, some step wrong), and for a wrong answer: ``trap`` (the problem's :meth:`trap` — its step
        and offset), ``slip`` (another result off by 1 or 2), ``arithmetic`` (a result off by more),
        ``malformed`` (the step does not apply the problem's next operation to the previous result,
        does not parse, repeats a different answer, or a step or the answer is missing).
        """
        problem = Problem.parse(prompt)
        steps = split_steps(completion)
        labels = self.check_steps(prompt, steps)
        first = next((i for i, ok in enumerate(labels) if not ok), None)
        if parse_answer(completion) == problem.answer:
            return "correct" if first is None and len(steps) == len(problem.steps) else "compensated"
        if first is None or first >= len(problem.steps):
            return "malformed"
        work = [line.strip() for line in steps[first].split("\n") if not line.strip().startswith(ANSWER_MARK)]
        match = _LINE_RE.fullmatch(work[0]) if len(work) == 1 else None
        previous = problem.values()[first - 1] if first else problem.start  # steps before `first` are right
        if match is None or (match[2], int(match[3])) != problem.steps[first] or int(match[1]) != previous:
            return "malformed"
        off = int(match[4]) - OPS[match[2]](previous, int(match[3]))
        if off == 0:  # a right line with a different "#### N"
            return "malformed"
        if (first, off) == self.trap(problem):
            return "trap"
        return "slip" if abs(off) <= max(_SLIP_OFFSETS) else "arithmetic"

    # ---------------------------------------------------------------- solution generators

    def trap(self, problem: Problem | str) -> tuple[int, int]:
        """The problem's systematic error ``(step index, offset)``, fixed for the problem.

        ``trap_rule="hash"``: step and ±3 sign from a hash of the prompt (unlearnable from the text: a
        stand-in for a generator's idiosyncratic blind spots). ``trap_rule="first_multiply"``: +3 on the
        first ``*`` step (the last step if there is none) — a misconception a model can learn from the
        text, so a generator trained on such solutions repeats it on new problems. The sign is flipped
        if the trapped value would otherwise be negative.
        """
        problem = _as_problem(problem)
        if self.trap_rule == "first_multiply":
            index = next((i for i, (op, _) in enumerate(problem.steps) if op == "*"), len(problem.steps) - 1)
            offset = _TRAP_OFFSET
        else:
            digest = hashlib.sha256(f"trap:{problem.prompt}".encode()).digest()
            index = digest[0] % len(problem.steps)
            offset = _TRAP_OFFSET if digest[1] & 1 else -_TRAP_OFFSET
        true_value = problem.values()[index]
        return index, offset if true_value + offset >= 0 else -offset

    def render(
        self, problem: Problem | str, offsets: dict[int, int] | None = None, compensate_at: int | None = None,
        kind: str = "correct",
    ) -> Solution:
        """Write out a solution that adds ``offsets[i]`` to the claimed value of step ``i``.

        Every other step is computed correctly from the previous *claimed* value, except step
        ``compensate_at``, which claims the true value (cancelling any earlier error).
        """
        problem = _as_problem(problem)
        offsets = offsets or {}
        truth = problem.values()
        lines, a = [], problem.start
        for i, (op, b) in enumerate(problem.steps):
            c = truth[i] if i == compensate_at else OPS[op](a, b)
            if i in offsets:
                c = _offset(c, offsets[i])
            lines.append(f"{a}{op}{b}={c}")
            a = c
        return Solution(tuple(lines), a, tuple(self.check_steps(problem.prompt, lines)), kind)

    def generate(self, problem: Problem | str, kind: str, rng: random.Random) -> Solution:
        """A solution of exactly ``kind``.

        ``correct``: no error. ``slip``: ±1/±2 slips (each step with ``slip_prob``, at least one) and a
        wrong final answer. ``trap``: only the problem's trap, so a wrong final answer. ``compensated``:
        one slip cancelled at a later step — right final answer, at least one wrong step (needs ≥ 2 steps).
        """
        problem = _as_problem(problem)
        n = len(problem.steps)
        if kind == "correct":
            return self.render(problem)
        if kind == "trap":
            index, offset = self.trap(problem)
            return self.render(problem, {index: offset}, kind="trap")
        if kind == "slip":
            while True:  # ends quickly: a single slip always changes the final answer
                offsets = {i: rng.choice(_SLIP_OFFSETS) for i in range(n) if rng.random() < self.slip_prob}
                offsets = offsets or {rng.randrange(n): rng.choice(_SLIP_OFFSETS)}
                solution = self.render(problem, offsets, kind="slip")
                if solution.answer != problem.answer:
                    return solution
        if kind == "compensated":
            if n < 2:
                raise ValueError(f"a compensated error needs at least 2 steps; {problem.prompt!r} has {n}")
            index = rng.randrange(n - 1)
            return self.render(
                problem, {index: rng.choice(_SLIP_OFFSETS)}, compensate_at=rng.randrange(index + 1, n),
                kind="compensated",
            )
        raise ValueError(f"unknown solution kind {kind!r}; expected one of {SOLUTION_KINDS}")

    def sample_solution(self, problem: Problem | str, rng: random.Random) -> Solution:
        """A sample from a noisy "generator model" (for best-of-N and PRM/ORM experiments).

        It falls into the problem's trap with ``trap_prob``, slips at each other step with ``slip_prob``
        and, after its last error, cancels the error at a later step with ``compensate_prob``.
        The kind reports what happened (compensated > trap > slip > correct).
        """
        problem = _as_problem(problem)
        n = len(problem.steps)
        trap_index, trap_offset = self.trap(problem)
        trapped = rng.random() < self.trap_prob
        offsets = {trap_index: trap_offset} if trapped else {}
        for i in range(n):
            if i not in offsets and rng.random() < self.slip_prob:
                offsets[i] = rng.choice(_SLIP_OFFSETS)
        compensate_at = None
        if offsets and max(offsets) < n - 1 and rng.random() < self.compensate_prob:
            compensate_at = rng.randrange(max(offsets) + 1, n)
        kind = (
            "compensated" if compensate_at is not None else "trap" if trapped else "slip" if offsets else "correct"
        )
        return self.render(problem, offsets, compensate_at, kind=kind)

    # ---------------------------------------------------------------- records

    def problems(self, split: Split, n: int, seed: int = 0) -> Iterator[Problem]:
        """``n`` random problems of ``split`` (rejection sampling on :func:`split_of` of the prompt)."""
        rng = seeded_rng(self.name, split, seed)
        for _ in range(n):
            problem = self.sample_problem(rng)
            while split_of(problem.prompt) != split:
                problem = self.sample_problem(rng)
            yield problem

    def _record(self, kind: Kind, problem: Problem, rng: random.Random) -> dict[str, Any]:
        """One record of ``kind``.

        The same ``(split, seed)`` gives the same problems for every kind. Records carry the true
        ``answer``; step records also carry the solution ``kind`` and ``first_error``; preference records
        pair a correct solution (chosen) with a wrong-answer slip or trap solution (rejected); weak records
        are whole solutions (same mix as step records) labelled by final-answer correctness.
        """
        prompt, answer = problem.prompt, problem.answer
        if kind == "prompt":
            return {"prompt": prompt, "answer": answer}
        if kind == "sft":
            return {"prompt": prompt, "completion": self.render(problem).completion, "answer": answer}
        if kind in ("step", "weak"):
            solution = self.generate(problem, self._pick_kind(problem, SOLUTION_KINDS, rng), rng)
        if kind == "weak":  # outcome supervision: is the final answer right? (ORM data)
            return {
                "text": self.solution_text(prompt, solution.completion), "label": int(solution.answer == answer),
                "answer": answer,
                "kind": solution.kind,
            }
        if kind == "step":
            return {
                "prompt": prompt, "completions": solution.steps, "labels": list(solution.labels),
                "answer": answer, "kind": solution.kind, "first_error": solution.first_error,
            }
        rejected = self.generate(problem, self._pick_kind(problem, ("slip", "trap"), rng), rng)
        return {
            "prompt": prompt, "chosen": self.render(problem).completion, "rejected": rejected.completion,
            "soft_label": 1.0, "answer": answer, "rejected_kind": rejected.kind,
            "first_error": rejected.first_error,
        }

    def _pick_kind(self, problem: Problem, kinds: tuple[str, ...], rng: random.Random) -> str:
        """Draw a solution kind by ``step_mix`` among ``kinds`` feasible for ``problem``."""
        if len(problem.steps) < 2:
            kinds = tuple(k for k in kinds if k != "compensated")
        weights = [self.step_mix.get(k, 0.0) for k in kinds]
        if sum(weights) <= 0:
            weights = [1.0] * len(kinds)
        return rng.choices(kinds, weights)[0]


def _as_problem(problem: Problem | str) -> Problem:
    return problem if isinstance(problem, Problem) else Problem.parse(problem)
