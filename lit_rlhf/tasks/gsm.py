"""GSM8K-style word problems from reasoning-gym's ``gsm_symbolic``, with automatically corrupted solutions.

Needs the optional extra ``pip install 'lit-rlhf[gsm]'`` (``reasoning-gym==0.1.25``), imported only when a
:class:`GSM` task generates problems. A problem's gold solution is the dataset's ``metadata.answer_cot``:
prose lines, most with one calculation, the last one ``#### N``::

    James receives 48=48 emails that don't require a response
    So James responds to 160-48=112 emails per day
    In a 5 day work week, James responds to 112*5=560 emails
    #### 560

Some templates are structured instead ("Let's solve this step by step:", numbered headings, ``•``/``-``
bullets, blank lines), use currency (``$1,176``), units (``4 carrot/minute``), percentages, decimals
(``#### 36.0``) or algebra (``2x+70=272``); 0.3% of the answers are not integers (``1687.5``).

**Steps.** Every non-empty line of ``answer_cot`` is one step (indentation stripped); the ``#### N`` line
is joined to the last step, as :func:`~lit_rlhf.tasks.arithmetic.split_steps` does, and ``N`` is rewritten
as the dataset's ``answer`` (``#### 36.0`` -> ``#### 36``).

**Calculations.** In a step, ``<expression> = <number>`` is a *checkable calculation* when the number is
clean (digits, optional decimals and thousands separators, optional currency sign or ``%``; not a
fraction such as ``1/3`` nor the start of an expression such as ``= 142 + T``) and the expression before
the ``=`` evaluates to it. The expression is the longest tail of the text before the ``=`` that is
arithmetic once currency signs, ``%``, unit words (``16 minutes/batch`` -> ``16``) and ``x``/``×``/``÷``
are dealt with (``2(35+31)`` is ``2*(35+31)``). Anything else — headings, restatements, fractions,
algebra, rounded results — is *opaque*: it is never corrupted and an error is never propagated through it.

**Corruptions** (:meth:`GSM.corrupt`). A checkable calculation whose result ``v`` is *distinctive* (not 0,
not a common unit constant such as 7, 12, 60 or 100, and not mentioned in the question or earlier in the
solution) gets the result ``v + d`` (``d`` in ±1, ±2, ±3, ±10; non-negative; a number not already in the
problem). Every later mention of a corrupted value is replaced and every later calculation that uses one
is recomputed from the replaced operands (so the wrong value is *carried forward* consistently). A
corruption is used only if all of this stays checkable: no opaque calculation may use a corrupted value,
no unrelated calculation may produce one, and recomputed results must be non-negative with at most two
decimals. Two kinds:

* ``slip``: the error propagates to the end: the final answer is wrong.
* ``compensated`` (right answer, wrong process): the error propagates until a later step that uses a
  corrupted value but states its original, true result; no later step mentions a corrupted value, so
  the final answer is right.

**Labels** follow :meth:`Arithmetic.check_steps <lit_rlhf.tasks.arithmetic.Arithmetic.check_steps>`: a
step is correct iff it is correct given the solution's own earlier claims. Steps before the corruption
are correct, the corrupted step is wrong, steps that carry the wrong value forward consistently are
correct, and the compensating step of ``compensated`` is wrong (its arithmetic does not follow from its
inputs). ``first_error`` is therefore always the corrupted step; under the default ``first_error``
supervision later labels are not used.
"""

from __future__ import annotations

import ast
import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import torch

from lit_rlhf.tasks.arithmetic import ANSWER_MARK, Solution, split_steps
from lit_rlhf.tasks.base import Kind, ProblemTask, Split, seeded_rng, split_of

DATASET = "gsm_symbolic"
INSTALL_HINT = "pip install 'lit-rlhf[gsm]'"
SOLUTION_KINDS = ("correct", "slip", "compensated")
DEFAULT_STEP_MIX = {"correct": 0.4, "slip": 0.4, "compensated": 0.2}
OFFSETS = (-10, -3, -2, -1, 1, 2, 3, 10)
# results never corrupted: a later "12 months" or "60 minutes" would look like a use of them
UNIT_CONSTANTS = frozenset(Fraction(v) for v in (0, 7, 12, 24, 30, 52, 60, 100, 365, 1000))
MAX_DECIMALS = 2

_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(rf"(?<![\w.]){_NUMBER}(?!\w)")
_FINAL_RE = re.compile(rf"-?{_NUMBER}")
_RESULT_RE = re.compile(rf"\s*[$€£]?\s*({_NUMBER})(?!\w)")
_CONTINUES_RE = re.compile(r"%?\s*(?:[-+*/×÷^]|x\s)\s*[$€£(]?\s*\d")  # "= 1/3", "= 142 + 5": not a result
_ATOM_RE = re.compile(
    rf"(?P<num>(?<![\w.]){_NUMBER}(?!\w))"
    r"|(?P<times>(?<=[\d\s)%])x(?=\s*[$€£(]?\s*\d))"
    r"|(?P<op>[-+*/×÷])|(?P<lp>\()|(?P<rp>\))"
    r"|(?P<word>[^\W\d_]+(?:['’][^\W\d_]+)*)"
    r"|(?P<skip>[\s$€£%]+)|(?P<other>.)"
)
_OPS = {"×": "*", "÷": "/", "x": "*"}
_AST_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
            ast.Div: lambda a, b: a / b}


def _reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError(f"the 'gsm' task needs reasoning-gym, an optional dependency: {INSTALL_HINT}") from err
    return reasoning_gym


def parse_final(completion: str) -> str | None:
    """The number on the line after the last ``####`` (thousands separators removed); ``None`` if absent or garbled.

    The rule of :func:`~lit_rlhf.tasks.arithmetic.parse_answer`, extended to decimals:
    ``"...\\n#### 1,687.5"`` -> ``"1687.5"``; ``"#### 36.0"`` -> ``"36.0"``; ``"#### 36 eggs"`` -> None.
    """
    _, mark, tail = completion.rpartition(ANSWER_MARK)
    if not mark:
        return None
    first_line = tail.strip().split("\n", 1)[0].strip()
    return first_line.replace(",", "") if _FINAL_RE.fullmatch(first_line) else None


def parse_answer(completion: str) -> str | None:
    """The final answer written one way per number, for majority voting: :func:`parse_final` without trailing zeros.

    ``"#### 36.0"`` and ``"#### 36"`` -> ``"36"``; ``"#### 1,687.50"`` -> ``"1687.5"``; ``None`` if absent or garbled.
    """
    final = parse_final(completion)
    return None if final is None else format(Decimal(final).normalize(), "f")


def _value(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def _format(value: Fraction, like: str) -> str | None:
    """``value`` written like the token ``like`` (its decimals at least, commas if it has them); ``None`` if
    it is negative or needs more than :data:`MAX_DECIMALS` decimals."""
    shown = len(like.partition(".")[2])
    places = next((d for d in range(shown, max(shown, MAX_DECIMALS) + 1) if (value * 10**d).denominator == 1), None)
    if value < 0 or places is None:
        return None
    return format(Decimal(value.numerator) / Decimal(value.denominator), f"{',' if ',' in like else ''}.{places}f")


def _rounded(x: float | None) -> Fraction | None:
    """A float result as an exact number with at most :data:`MAX_DECIMALS` decimals, else ``None``."""
    if x is None or not math.isfinite(x):
        return None
    r = round(x, MAX_DECIMALS)
    return Fraction(repr(r)) if abs(x - r) <= 1e-9 * max(1.0, abs(x)) else None


def _arithmetic(expression: str) -> ast.Expression | None:
    """``expression`` parsed if it is arithmetic: names ``n<i>``, ``+ - * /``, unary minus, parentheses."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.Load, *_AST_OPS)
    for node in ast.walk(tree):
        if not (isinstance(node, allowed) or (isinstance(node, ast.Name) and node.id[1:].isdigit())):
            return None
    return tree


def _evaluate(expression: str, values: list[float]) -> float | None:
    """Evaluate an :func:`_arithmetic` expression with ``n<i>`` = ``values[i]``; ``None`` if it is not one
    or divides by zero."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.BinOp):
            return _AST_OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp):
            return -walk(node.operand)
        return values[int(node.id[1:])]  # type: ignore[attr-defined]

    tree = _arithmetic(expression)
    try:
        return None if tree is None else walk(tree.body)
    except ZeroDivisionError:
        return None


@dataclass(frozen=True)
class Calculation:
    """``<expression> = <result>`` in a step: indices into the step's number tokens.

    Attributes:
        result: the result token.
        lhs: every number token between the previous ``=`` (or the line start) and this one.
        operands: the tokens of the checkable expression (empty if opaque).
        expression: that expression with token ``i`` written ``n<i>``; ``None`` if opaque.
    """

    result: int
    lhs: tuple[int, ...]
    operands: tuple[int, ...]
    expression: str | None


@dataclass(frozen=True)
class Step:
    """One line of a solution: its text, its number tokens and its calculations."""

    text: str
    spans: tuple[tuple[int, int], ...]
    values: tuple[Fraction, ...]
    calculations: tuple[Calculation, ...]

    @classmethod
    def parse(cls, text: str) -> Step:
        """Find the numbers and the calculations of one line (see the module docstring)."""
        matches = list(_NUMBER_RE.finditer(text))
        spans = tuple(m.span() for m in matches)
        values = tuple(_value(m[0]) for m in matches)
        starts = {start: i for i, (start, _) in enumerate(spans)}
        calculations, lhs_start = [], 0
        for eq in (i for i, c in enumerate(text) if c == "="):
            result = _RESULT_RE.match(text, eq + 1)
            index = None if result is None else starts.get(result.start(1))
            if index is not None and not _CONTINUES_RE.match(text, result.end()):
                lhs = tuple(i for i, (s, e) in enumerate(spans) if lhs_start <= s and e <= eq)
                operands, expression = _expression(text[lhs_start:eq], lhs_start, starts)
                if expression is not None:  # keep it only if it checks out
                    found = _evaluate(expression, [float(v) for v in values])
                    if found is None or not math.isclose(found, values[index], rel_tol=1e-9, abs_tol=1e-9):
                        operands, expression = (), None
                calculations.append(Calculation(index, lhs, operands, expression))
            lhs_start = eq + 1
        return cls(text, spans, values, tuple(calculations))

    def render(self, texts: dict[int, str]) -> str:
        """The step with number token ``i`` replaced by ``texts[i]``."""
        out, end = [], 0
        for i, (s, e) in enumerate(self.spans):
            if i in texts:
                out += [self.text[end:s], texts[i]]
                end = e
        return "".join(out) + self.text[end:]


def _expression(lhs: str, offset: int, starts: dict[int, int]) -> tuple[tuple[int, ...], str | None]:
    """The longest arithmetic tail of ``lhs`` as ``(operand tokens, expression)``; ``((), None)`` if none.

    ``offset`` is where ``lhs`` starts in its line; ``starts`` maps a number token's start to its index.
    """
    atoms: list[tuple[str, str]] = []  # (kind, python text); kinds: num, op, lp, rp, word, stop
    for m in _ATOM_RE.finditer(lhs):
        kind = m.lastgroup
        if kind == "num":
            atoms.append(("num", f"n{starts[offset + m.start()]}"))
        elif kind in ("op", "times"):
            atoms.append(("op", _OPS.get(m[0], m[0])))
        elif kind in ("lp", "rp", "word"):
            atoms.append((kind, m[0]))  # type: ignore[arg-type]
        elif kind == "other":
            atoms.append(("stop", m[0]))
    # "4 carrot/minute", "$84/hour": a division by a word is part of a unit
    atoms = [a for a, b in zip(atoms, [*atoms[1:], ("end", "")]) if not (a == ("op", "/") and b[0] == "word")]
    kept: list[tuple[str, str]] = []
    i = 0
    while i < len(atoms):
        if atoms[i][0] != "word":
            kept.append(atoms[i])
            i += 1
            continue
        j = i
        while j < len(atoms) and atoms[j][0] == "word":
            j += 1
        # words after a number and before an operator, ")" or the end are units ("8 batches * 16 minutes");
        # other words break the expression
        if not (kept and kept[-1][0] in ("num", "rp") and (j == len(atoms) or atoms[j][0] in ("op", "rp"))):
            kept.append(("stop", atoms[i][1]))
        i = j
    for start in range(len(kept)):
        tail = kept[start:]
        if tail[0][0] not in ("num", "lp") or any(kind == "stop" for kind, _ in tail):
            continue
        parts = []
        for k, (kind, text) in enumerate(tail):  # implicit products: 2(35+31), 5(19)
            if k and ((kind == "lp" and tail[k - 1][0] in ("num", "rp")) or (kind == "num" and tail[k - 1][0] == "rp")):
                parts.append("*")
            parts.append(text)
        expression = " ".join(parts)
        if _arithmetic(expression) is not None:
            return tuple(int(text[1:]) for kind, text in tail if kind == "num"), expression
    return (), None


@dataclass(frozen=True)
class Problem:
    """A ``gsm_symbolic`` item: the question, the true answer (the dataset's string) and the parsed solution."""

    question: str
    answer: str
    steps: tuple[Step, ...]
    index: int

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Problem:
        """Build from a reasoning-gym item (``question``, ``answer``, ``metadata.answer_cot``)."""
        lines = [line.strip() for line in item["metadata"]["answer_cot"].strip().split("\n") if line.strip()]
        lines = [line for line in lines if not line.startswith(ANSWER_MARK)]
        if not lines:
            raise ValueError(f"{DATASET} item {item['metadata'].get('source_index')}: empty answer_cot")
        return cls(item["question"], item["answer"], tuple(map(Step.parse, lines)), item["metadata"]["source_index"])

    @property
    def numbers(self) -> set[Fraction]:
        """Every number in the question and the gold solution."""
        found = {_value(m[0]) for m in _NUMBER_RE.finditer(self.question)}
        return found.union(*(step.values for step in self.steps))


@dataclass(frozen=True)
class GSMSolution(Solution):
    """A step-per-line solution with its step labels; ``answer`` is the final answer as written."""

    answer: str  # type: ignore[assignment]


class GSM(ProblemTask):
    """GSM8K-style word problems (reasoning-gym ``gsm_symbolic``) with correct and corrupted solutions.

    See the module docstring for the step, corruption and label rules. Prompts are the questions; the
    gold :meth:`reward` compares the ``#### N`` line with the dataset's answer.

    Args:
        step_mix: weights of the solution kinds (``correct``, ``slip``, ``compensated``) in ``step`` and
            ``weak`` records (default 40/40/20); a kind a problem cannot have is left out of its draw.
    """

    name = "gsm"
    kinds: tuple[Kind, ...] = ("sft", "prompt", "step", "weak")

    def __init__(self, step_mix: dict[str, float] | None = None) -> None:
        step_mix = dict(DEFAULT_STEP_MIX if step_mix is None else step_mix)
        if set(step_mix) - set(SOLUTION_KINDS) or min(step_mix.values()) < 0 or sum(step_mix.values()) <= 0:
            raise ValueError(f"step_mix needs non-negative weights over {SOLUTION_KINDS}, got {step_mix}")
        self.step_mix = step_mix
        self._answers: dict[str, str] = {}  # question -> answer, for every problem this task has generated

    # ---------------------------------------------------------------- problems and grading

    def problems(self, split: Split, n: int, seed: int = 0) -> Iterator[Problem]:
        """``n`` problems of ``split``: a ``gsm_symbolic`` stream seeded by ``(split, seed)``, filtered by
        :func:`~lit_rlhf.tasks.base.split_of` of the question (so splits never share a question).

        Items with a negative answer (a template flaw: "he was -1 years old") are skipped.
        """
        rg = _reasoning_gym()
        base = seeded_rng(self.name, split, seed).randrange(2**31)
        size, start, found = 16 * n + 256, 0, 0
        while found < n:
            data = rg.create_dataset(DATASET, size=size, seed=base)  # item i depends on (seed, i) only
            for index in range(start, size):
                item = data[index]
                if split_of(item["question"]) == split and not item["answer"].startswith("-"):
                    problem = Problem.from_item(item)
                    self._answers[problem.question] = problem.answer
                    yield problem
                    found += 1
                    if found == n:
                        return
            start, size = size, 2 * size

    def answer_of(self, prompt: str) -> str:
        """The true answer of a question this task generated."""
        answer = self._answers.get(prompt, self._answers.get(prompt.strip()))
        if answer is None:
            raise ValueError(
                f"the gsm task did not generate the prompt {prompt[:60]!r}...: grade prompts from its own records "
                "(call records()/problems() on the same task instance first)"
            )
        return answer

    def reward(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        """1.0 where the completion's ``#### N`` (:func:`parse_final`) equals the dataset's answer, else 0.0.

        Numeric equality, the rule of reasoning-gym's ``score_answer``, which is not called because its
        regex reads ``"-5"`` as 5 (so it grades ``-1`` wrong against ``-1`` and ``-5`` right against ``5``).
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        finals = [parse_final(c) for c in completions]
        correct = [f is not None and _value(f) == _value(self.answer_of(p)) for p, f in zip(prompts, finals)]
        return torch.tensor(correct, dtype=torch.float32)

    split_steps = staticmethod(split_steps)
    parse_final = staticmethod(parse_final)
    parse_answer = staticmethod(parse_answer)

    # ---------------------------------------------------------------- solutions

    @staticmethod
    def render(problem: Problem) -> GSMSolution:
        """The gold solution (every step correct)."""
        lines = tuple(step.text for step in problem.steps)
        return GSMSolution(lines, problem.answer, (True,) * len(lines), "correct")

    def corrupt(self, problem: Problem, kind: str, rng: random.Random) -> GSMSolution | None:
        """A ``slip`` or ``compensated`` solution (see the module docstring), or ``None`` if ``problem`` has none.

        Candidates (step, calculation, offset, compensating step) are tried in an ``rng``-shuffled order.
        """
        if kind not in ("slip", "compensated"):
            raise ValueError(f"cannot corrupt into {kind!r}; expected 'slip' or 'compensated'")
        taken, n = problem.numbers, len(problem.steps)
        question = {_value(m[0]) for m in _NUMBER_RE.finditer(problem.question)}
        candidates = []
        for k, step in enumerate(problem.steps):
            for calc in step.calculations:
                v = step.values[calc.result]
                seen = question.union(*(s.values for s in problem.steps[:k]), step.values[: calc.result])
                if calc.expression is not None and v not in UNIT_CONSTANTS and v not in seen:
                    candidates.append((k, calc))
        rng.shuffle(candidates)
        for k, calc in candidates:
            v = problem.steps[k].values[calc.result]
            offsets = [d for d in OFFSETS if v + d >= 0 and v + d not in taken]
            rng.shuffle(offsets)
            fixes: list[int | None] = [None] if kind == "slip" else rng.sample(range(k + 1, n), n - k - 1)
            for d in offsets:
                for fix in fixes:
                    solution = self.corrupt_at(problem, k, calc, v + d, fix)
                    if solution is not None:
                        return solution
        return None

    @staticmethod
    def corrupt_at(
        problem: Problem, k: int, target: Calculation, wrong: Fraction, fix: int | None = None
    ) -> GSMSolution | None:
        """Write ``wrong`` as the result of ``target`` (a calculation of step ``k``) and carry it forward.

        Args:
            fix: ``None`` for a ``slip``; else the compensating step (``> k``) of a ``compensated`` solution.

        Returns:
            The solution, or ``None`` if the error cannot be carried forward checkably or does not give the
            kind asked for (a slip must change the final answer, a compensation must restore it).
        """
        changed: dict[Fraction, Fraction] = {}
        lines, labels, fixed = [], [], False
        for j, step in enumerate(problem.steps):
            if j < k:
                lines.append(step.text)
                labels.append(True)
                continue
            values, texts = list(step.values), {}
            results = {calc.result: calc for calc in step.calculations}
            active = j > k
            for t, original in enumerate(step.values):
                calc = results.get(t)
                if j == k and calc == target:
                    new, active = wrong, True
                elif not active:
                    continue
                elif calc is not None and any(i in texts for i in calc.lhs):
                    if calc.expression is None:
                        return None  # a corrupted value goes into a calculation we cannot redo
                    if not any(i in texts for i in calc.operands):
                        if original in changed:
                            return None
                        continue  # only the prose before the expression mentions a corrupted value
                    found = _rounded(_evaluate(calc.expression, [float(v) for v in values]))
                    if j == fix:
                        if found is None or found == original:
                            return None
                        fixed = True
                        continue  # the compensating step: wrong inputs, the true result
                    if found is None:
                        return None
                    new = found
                elif original in changed:
                    if calc is not None:
                        return None  # an unrelated calculation produces a corrupted value
                    new = changed[original]
                else:
                    continue
                if fixed and j > fix:  # type: ignore[operator]
                    return None  # a corrupted value outlives the compensating step
                text = _format(new, step.text[slice(*step.spans[t])])
                if text is None or changed.get(original, new) != new:
                    return None
                if new != original:
                    changed[original] = new
                values[t], texts[t] = new, text
            lines.append(step.render(texts))
            labels.append(j != k and j != fix)
        final = _value(problem.answer)
        answer = changed.get(final, final)
        if (fix is None) != (answer != final) or (fix is not None and not fixed):
            return None
        text = problem.answer if answer == final else _format(answer, "0")  # fewest decimals: "#### 1683"
        if text is None:
            return None
        return GSMSolution(tuple(lines), text, tuple(labels), "slip" if fix is None else "compensated")

    # ---------------------------------------------------------------- records

    def solution_text(self, prompt: str, completion: str) -> str:
        """Question and solution on separate lines (the ORM's text)."""
        return f"{prompt}\n{completion}"

    def _record(self, kind: Kind, problem: Problem, rng: random.Random) -> dict[str, Any]:
        """One record of ``kind``.

        The same ``(split, seed)`` gives the same problems for every kind. Records carry the true
        ``answer``; step records also carry the solution ``kind`` and ``first_error``; weak records are
        whole solutions (``question\\nsolution``, same mix as step records) labelled by final-answer
        correctness.
        """
        prompt, answer = problem.question, problem.answer
        if kind == "prompt":
            return {"prompt": prompt, "answer": answer}
        if kind == "sft":
            return {"prompt": prompt, "completion": self.render(problem).completion, "answer": answer}
        solution = self.sample(problem, rng)
        if kind == "weak":  # outcome supervision: is the final answer right? (ORM data)
            label = int(_value(solution.answer) == _value(answer))
            text = self.solution_text(prompt, solution.completion)
            return {"text": text, "label": label, "answer": answer, "kind": solution.kind}
        return {
            "prompt": prompt, "completions": solution.steps, "labels": list(solution.labels), "answer": answer,
            "kind": solution.kind, "first_error": solution.first_error,
        }

    def sample(self, problem: Problem, rng: random.Random) -> GSMSolution:
        """A solution of a kind drawn by ``step_mix`` among the kinds ``problem`` can have.

        A drawn kind that ``problem`` cannot have is removed and the kind redrawn (the same distribution
        as drawing among the feasible kinds, without corrupting for kinds that are not drawn).
        """
        weights = {k: w for k, w in self.step_mix.items() if w > 0}
        while True:
            kind = rng.choices(list(weights), list(weights.values()))[0] if weights else "correct"
            if kind == "correct":
                return self.render(problem)
            solution = self.corrupt(problem, kind, rng)
            if solution is not None:
                return solution
            del weights[kind]
