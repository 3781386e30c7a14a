"""Arithmetic task: grader, step checker, solution generators and records."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from lit_rlhf.tasks import TASKS, Arithmetic, get_task, split_of
from lit_rlhf.tasks.arithmetic import SOLUTION_KINDS, Problem, parse_answer, split_steps

PROMPT = "7+5*2-3="
CORRECT = "7+5=12\n12*2=24\n24-3=21\n#### 21"


@pytest.fixture(scope="module")
def task() -> Arithmetic:
    return Arithmetic()


@pytest.fixture(scope="module")
def problems(task: Arithmetic) -> list[Problem]:
    return list(task.problems("train", 300, seed=0))


def test_problem_parse_and_solve() -> None:
    problem = Problem.parse(PROMPT)
    assert problem == Problem(7, (("+", 5), ("*", 2), ("-", 3)))
    assert problem.prompt == PROMPT
    assert problem.values() == [12, 24, 21]
    assert Arithmetic.solve(PROMPT) == 21
    assert Arithmetic.solve("9-9*3+4=") == 4
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        Arithmetic.solve("7+5*2-3")


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (CORRECT, 21),
        ("#### -4", -4),
        ("####21", 21),
        ("#### 21\n7+1=8", 21),
        ("#### 1\n#### 2", 2),
        ("#### 21x", None),
        ("#### ", None),
        ("7+5=12\n21", None),
        ("", None),
    ],
)
def test_parse_answer(completion: str, expected: int | None) -> None:
    assert parse_answer(completion) == expected


def test_correct_completion_format(task: Arithmetic) -> None:
    solution = task.render(PROMPT)
    assert solution.completion == CORRECT
    assert solution.steps == ["7+5=12", "12*2=24", "24-3=21\n#### 21"]
    assert split_steps(CORRECT) == solution.steps
    assert solution.labels == (True, True, True) and solution.first_error is None


@pytest.mark.parametrize(
    ("steps", "labels", "first_error"),
    [
        (["7+5=12", "12*2=24", "24-3=21\n#### 21"], [True, True, True], None),
        (["7+5=12", "12*2=25", "25-3=22\n#### 22"], [True, False, True], 1),  # slip, carried on correctly
        (["7+5=12", "12*3=36", "36-3=33"], [True, False, True], 1),  # wrong operand
        (["7+5=12", "12x2=24", "24-3=21"], [True, False, False], 1),  # garbled line: no claimed value
        (["7+5=12", "12*2=24", "24-3=21\n#### 20"], [True, True, False], 2),  # answer line disagrees
        (["7+5=12", "12*2=24", "24-3=21", "21+1=22"], [True, True, True, False], 3),  # extra step
        (["8+5=13"], [False], 0),  # wrong start value
        (["7+5=12", "12*2=24"], [True, True], None),  # unfinished: only given steps are labelled
    ],
)
def test_check_steps(steps: list[str], labels: list[bool], first_error: int | None) -> None:
    assert Arithmetic.check_steps(PROMPT, steps) == labels
    assert Arithmetic.first_error(PROMPT, steps) == first_error


def test_reward(task: Arithmetic) -> None:
    rewards = task.reward([PROMPT] * 4, [CORRECT, "7+5=12\n#### 22", "no answer", "wrong work\n#### 21"])
    assert rewards.dtype == torch.float32
    assert rewards.tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        task.reward([PROMPT, PROMPT], [CORRECT])


def test_problems_respect_the_bounds(task: Arithmetic, problems: list[Problem]) -> None:
    for problem in problems:
        assert 2 <= len(problem.steps) <= 4 and 1 <= problem.start <= 9
        for op, b in problem.steps:
            assert (op == "*" and b in (2, 3)) or (op in "+-" and 1 <= b <= 9)
        assert all(0 <= v <= 99 for v in problem.values())
    assert {op for p in problems for op, _ in p.steps} == {"+", "-", "*"}


def test_trap_is_a_consistent_wrong_answer(task: Arithmetic, problems: list[Problem]) -> None:
    for problem in problems:
        index, offset = task.trap(problem)
        samples = {task.generate(problem, "trap", random.Random(s)).completion for s in range(3)}
        assert len(samples) == 1  # the same systematic error every time
        solution = task.generate(problem, "trap", random.Random(0))
        claimed = int(solution.lines[index].rsplit("=", 1)[1])
        assert abs(offset) == 3 and claimed - problem.values()[index] == offset and claimed >= 0
        assert solution.first_error == index and solution.answer != problem.answer
        assert task.reward([problem.prompt], [solution.completion]).item() == 0.0


def test_slip_and_compensated_solutions(task: Arithmetic, problems: list[Problem]) -> None:
    rng = random.Random(0)
    for problem in problems:
        slip = task.generate(problem, "slip", rng)
        error = slip.first_error
        assert error is not None and slip.answer != problem.answer
        op, b = problem.steps[error]
        previous = problem.start if error == 0 else problem.values()[error - 1]
        assert int(slip.lines[error].rsplit("=", 1)[1]) - {"+": previous + b, "-": previous - b,
                                                           "*": previous * b}[op] in (-2, -1, 1, 2)

        compensated = task.generate(problem, "compensated", rng)
        assert compensated.answer == problem.answer and compensated.kind == "compensated"
        assert compensated.labels.count(False) == 2  # the error and the step that cancels it
        assert task.reward([problem.prompt], [compensated.completion]).item() == 1.0


def test_compensated_needs_two_steps() -> None:
    with pytest.raises(ValueError, match="at least 2 steps"):
        Arithmetic(min_steps=1, max_steps=1).generate("4+3=", "compensated", random.Random(0))


def test_sample_solution_kinds_match_what_happened(task: Arithmetic, problems: list[Problem]) -> None:
    rng = random.Random(1)
    kinds = Counter()
    for problem in problems:
        solution = task.sample_solution(problem, rng)
        kinds[solution.kind] += 1
        right = solution.answer == problem.answer
        if solution.kind == "correct":
            assert all(solution.labels) and right
        elif solution.kind == "compensated":
            assert not all(solution.labels) and right
        elif solution.kind == "trap":
            assert not solution.labels[task.trap(problem)[0]]
        else:
            assert not all(solution.labels)
    assert set(kinds) == {"correct", "slip", "trap", "compensated"}
    never = Arithmetic(slip_prob=0.0, trap_prob=0.0)
    assert never.sample_solution(problems[0], rng).kind == "correct"


def test_records_are_deterministic_and_split_leak_free(task: Arithmetic) -> None:
    first = list(task.records("step", "train", 50, seed=3))
    assert first == list(task.records("step", "train", 50, seed=3))
    assert first != list(task.records("step", "train", 50, seed=4))
    assert first[7][0] == "task:arithmetic/train#7"
    prompts = {s: {r["prompt"] for _, r in task.records("prompt", s, 300, seed=0)} for s in ("train", "test")}
    assert not prompts["train"] & prompts["test"]
    assert all(split_of(p) == "test" for p in prompts["test"])
    # the same (split, seed) gives the same problems for every kind
    same = zip(task.records("sft", "val", 5), task.records("prompt", "val", 5))
    assert all(sft["prompt"] == prompt["prompt"] for (_, sft), (_, prompt) in same)


def test_sft_prompt_and_preference_records(task: Arithmetic) -> None:
    for (_, sft), (_, prompt), (_, pref) in zip(
        task.records("sft", "val", 30), task.records("prompt", "val", 30), task.records("preference", "val", 30)
    ):
        assert set(sft) == {"prompt", "completion", "answer"} and set(prompt) == {"prompt", "answer"}
        assert parse_answer(sft["completion"]) == sft["answer"] == task.solve(sft["prompt"])
        assert task.reward([pref["prompt"]] * 2, [pref["chosen"], pref["rejected"]]).tolist() == [1.0, 0.0]
        assert pref["soft_label"] == 1.0 and pref["rejected_kind"] in ("slip", "trap")
        assert pref["first_error"] == task.first_error(pref["prompt"], split_steps(pref["rejected"]))


def test_step_records(task: Arithmetic) -> None:
    records = [r for _, r in task.records("step", "train", 200, seed=0)]
    kinds = Counter(r["kind"] for r in records)
    assert set(kinds) == {"correct", "slip", "trap", "compensated"} and 0.3 < kinds["correct"] / 200 < 0.5
    for r in records:
        assert r["labels"] == task.check_steps(r["prompt"], r["completions"])
        assert r["completions"][-1].endswith(f"\n#### {parse_answer(r['completions'][-1])}")
        assert (r["first_error"] is None) == (r["kind"] == "correct") == all(r["labels"])
        right = parse_answer(r["completions"][-1]) == r["answer"]
        assert right == (r["kind"] in ("correct", "compensated"))


def test_registry_and_validation() -> None:
    assert TASKS["arithmetic"] is Arithmetic
    assert get_task("arithmetic", max_steps=3).max_steps == 3
    task = Arithmetic()
    assert get_task(task) is task
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")
    with pytest.raises(ValueError, match="has no 'chess' data"):
        next(task.records("chess", "train", 1))
    with pytest.raises(ValueError, match="ops must be"):
        Arithmetic(ops="/")
    with pytest.raises(ValueError, match="step_mix"):
        Arithmetic(step_mix={"oops": 1.0})


def test_weak_records_label_final_answer_correctness() -> None:
    task = Arithmetic()
    rows = [r for _, r in task.records("weak", "train", 200, seed=3)]
    for r in rows:
        prompt = r["text"].split("=", 1)[0] + "="
        completion = r["text"][len(prompt):]
        assert r["label"] == int(task.parse_answer(completion) == task.solve(prompt))
        assert r["label"] == int(r["kind"] in ("correct", "compensated"))
    assert {r["kind"] for r in rows} == {"correct", "compensated", "slip", "trap"}


def test_first_multiply_trap_is_visible_in_the_text() -> None:
    task = Arithmetic(trap_rule="first_multiply")
    assert task.trap("7+5*2-3=") == (1, 3)  # the first '*' step, +3
    assert task.trap("7*2*3=") == (0, 3)
    assert task.trap("7+5-3=") == (1, 3)  # no '*': the last step
    assert task.trap("2-1-1=") == (1, 3)  # 0 + 3 stays non-negative
    solution = task.generate("7+5*2-3=", "trap", random.Random(0))
    assert solution.lines == ("7+5=12", "12*2=27", "27-3=24") and solution.first_error == 1
    with pytest.raises(ValueError, match="trap_rule"):
        Arithmetic(trap_rule="sometimes")


@pytest.mark.parametrize(
    ("completion", "kind"),
    [
        ("7+5=12\n12*2=24\n24-3=21\n#### 21", "correct"),
        ("7+5=13\n13*2=24\n24-3=21\n#### 21", "compensated"),  # right answer, two wrong steps
        ("7+5=12\n12*2=27\n27-3=24\n#### 24", "trap"),  # +3 on the first '*'
        ("7+5=12\n12*2=21\n21-3=18\n#### 18", "arithmetic"),  # −3 there is not the trap
        ("7+5=12\n12*2=26\n26-3=23\n#### 23", "slip"),
        ("7+5=11\n11*2=22\n22-3=19\n#### 19", "slip"),
        ("7+5=12\n12*2=24\n24-3=27\n#### 27", "arithmetic"),  # +6 on the last step
        ("7+5=12\n12*3=36\n36-3=33\n#### 33", "malformed"),  # wrong operand
        ("7+5=12\n13*2=26\n26-3=23\n#### 23", "malformed"),  # carries a different value
        ("7+5=12\n12*2=24\n#### 24", "malformed"),  # a step missing
        ("7+5=12\n12*2=24\n24-3=21\n#### 20", "malformed"),  # the answer line disagrees
        ("7+5=12\n12*2=24\n24-3=21\n21+1=22\n#### 22", "malformed"),  # a step too many
        ("", "malformed"),
    ],
)
def test_error_kind_of_written_solutions(completion: str, kind: str) -> None:
    assert Arithmetic(trap_rule="first_multiply").error_kind("7+5*2-3=", completion) == kind


def test_error_kind_recovers_generated_kinds(task: Arithmetic, problems: list[Problem]) -> None:
    rng = random.Random(2)
    for problem in problems[:100]:
        for kind in SOLUTION_KINDS:
            assert task.error_kind(problem.prompt, task.generate(problem, kind, rng).completion) == kind
