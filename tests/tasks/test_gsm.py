"""GSM task: step parsing, corruptions and their labels (hand-written items, no extra needed), then the
reasoning-gym data: determinism, splits, gold reward, step labels and the step data module."""

from __future__ import annotations

import random
import sys
from collections import Counter
from fractions import Fraction

import pytest

from lit_rlhf.data import StepLabelDataModule
from lit_rlhf.tasks import GSM, TASKS, get_task, split_of
from lit_rlhf.tasks.arithmetic import split_steps
from lit_rlhf.tasks.gsm import Problem, Step, parse_final

NEEDS_RG = "the gsm task needs the optional extra reasoning-gym: pip install 'lit-rlhf[gsm]'"


def item(question: str, cot: str, answer: str) -> dict:
    """A reasoning-gym ``gsm_symbolic`` item with only the fields the task reads."""
    return {"question": question, "answer": answer, "metadata": {"answer_cot": cot, "source_index": 0}}


FEE = Problem.from_item(item(
    "A flat costs $2,000 and the agent takes 15% of it. How much does the buyer pay?",
    "The fee is $2,000 x 15/100 = $300.\nThe total is $2,000 + $300 = $2,300.\nSo the buyer pays $2,300 in total.\n"
    "#### 2300",
    "2300",
))


def checkable(line: str) -> int:
    """Number of calculations in ``line`` whose expression evaluates to the stated result."""
    return sum(calc.expression is not None for calc in Step.parse(line).calculations)


# ---------------------------------------------------------------- without reasoning-gym


def test_missing_reasoning_gym_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes `import reasoning_gym` fail
    task = GSM()  # building the task needs nothing; generating does
    with pytest.raises(ImportError, match=r"pip install 'lit-rlhf\[gsm\]'"):
        next(task.records("sft", "train", 1))


def test_registered():
    assert TASKS["gsm"] is GSM and isinstance(get_task("gsm"), GSM)
    with pytest.raises(ValueError, match="step_mix"):
        GSM(step_mix={"trap": 1.0})


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("a\n#### 288", "288"),
        ("#### 1,687.5", "1687.5"),
        ("####36.0", "36.0"),
        ("#### -1", "-1"),
        ("#### 1\n#### 2\nmore", "2"),
        ("#### 36 eggs", None),
        ("#### $36", None),
        ("#### ", None),
        ("The answer is 36", None),
    ],
)
def test_parse_final(completion, expected):
    assert parse_final(completion) == expected


def test_parse_answer_writes_each_number_one_way_for_majority_voting():
    assert [GSM.parse_answer(f"x\n#### {a}") for a in ("36.0", "36", "1,687.50", "100", "0.00")] == [
        "36", "36", "1687.5", "100", "0"]
    assert GSM.parse_answer("no mark") is None and GSM.parse_answer("#### 36 eggs") is None


@pytest.mark.parametrize(
    ("line", "results", "operands"),
    [
        # units, rates and currency are skipped; the expression is the arithmetic tail before "="
        ("Then find it: 280 carrot / 4 carrot/minute = 70 minutes", ["70"], [["280", "4"]]),
        ("First: $84/hour * 14 hours = $1176", ["1176"], [["84", "14"]]),
        ("60% of the 100 students swim, so that's 0.6*100 = 60 students", ["60"], [["0.6", "100"]]),
        ("The fee is $380,000 x 8/100 = $30,400.", ["30,400"], [["380,000", "8", "100"]]),
        ("51 total students - 14 play games - 7 soccer - 14 bake = 16", ["16"], [["51", "14", "7", "14"]]),
        ("The room's perimeter is 2(35+31) meters = 132", ["132"], [["2", "35", "31"]]),
        ("The length is 31 meters * (1 meters / 1 meters) = 31 meters.", ["31"], [["31", "1", "1"]]),
        ("John receives 48=48 emails", ["48"], [["48"]]),
        ("On day 3, 176 * 3 = 528 more. So 176 + 528 = 704 in all.", ["528", "704"], [["176", "3"], ["176", "528"]]),
    ],
)
def test_step_parse_finds_checkable_calculations(line, results, operands):
    step = Step.parse(line)
    text = lambda i: line[slice(*step.spans[i])]  # noqa: E731
    assert [text(c.result) for c in step.calculations] == results
    assert [[text(i) for i in c.operands] for c in step.calculations] == operands


@pytest.mark.parametrize(
    "line",
    [
        "After buying, Emma has 74 + 38 + 30 + T = 142 + T = 186 toys.",  # algebra
        "it takes her 13÷2/3=19 minutes.",  # rounded: 13/2/3 != 19
        "the beetles are half * 74 grasshoppers = 37 beetles",  # words in the expression
        "William = 294 points",  # a definition
        "the chance of rolling one is 15 / 20 = 75.0%.",  # 0.75 written as a percentage
    ],
)
def test_step_parse_leaves_unverifiable_calculations_opaque(line):
    assert all(c.expression is None for c in Step.parse(line).calculations)
    assert not Step.parse("or 15/45 = 1/3 kilometers per minute.").calculations  # a fraction is no result


def test_slip_carries_the_error_forward_to_a_wrong_answer():
    solution = GSM.corrupt_at(FEE, 0, FEE.steps[0].calculations[0], Fraction(303))
    assert solution.completion == (
        "The fee is $2,000 x 15/100 = $303.\nThe total is $2,000 + $303 = $2,303.\nSo the buyer pays $2,303 in total.\n"
        "#### 2303"
    )
    assert (solution.kind, solution.labels, solution.first_error) == ("slip", (False, True, True), 0)
    assert solution.steps == split_steps(solution.completion)


def test_compensated_restores_the_true_result_at_the_fix_step():
    solution = GSM.corrupt_at(FEE, 0, FEE.steps[0].calculations[0], Fraction(303), fix=1)
    assert solution.lines == (
        "The fee is $2,000 x 15/100 = $303.",
        "The total is $2,000 + $303 = $2,300.",
        "So the buyer pays $2,300 in total.",
    )
    assert (solution.kind, solution.answer, solution.labels, solution.first_error) == (
        "compensated", "2300", (False, False, True), 0,
    )


def test_corruptions_that_cannot_be_checked_are_refused():
    half = Problem.from_item(item(
        "Ann has 13 apples and buys 24. She gives half away. How many are left?",
        "Ann has 13 + 24 = 37 apples.\nShe keeps half * 37 = 18.5 apples.\n#### 18.5", "18.5",
    ))
    assert GSM.corrupt_at(half, 0, half.steps[0].calculations[0], Fraction(38)) is None  # into an opaque step
    three = Fraction(1, 3)
    assert GSM.corrupt_at(FEE, 0, FEE.steps[0].calculations[0], Fraction(300) + three) is None  # 300.33...
    # a compensation must leave no corrupted value behind: the last step still mentions 2,303
    assert GSM.corrupt_at(FEE, 1, FEE.steps[1].calculations[0], Fraction(2303), fix=2) is None


def test_corrupt_picks_distinctive_results_only():
    # 12 is in the question and 7 is a unit constant: only the result 84 can be corrupted
    problem = Problem.from_item(item(
        "Tom reads 4 chapters of 3 pages a day on 5 weekdays and 2 weekend days; that is 12 pages a day. How many "
        "pages does he read in a week?",
        "Each day he reads 4 * 3 = 12 pages.\nA week has 5 + 2 = 7 days.\nHe reads 12 * 7 = 84 pages.\n#### 84", "84",
    ))
    for seed in range(8):
        solution = GSM().corrupt(problem, "slip", random.Random(seed))
        assert solution.labels == (True, True, False) and solution.answer != "84"
        assert solution.lines[:2] == tuple(step.text for step in problem.steps[:2])
    assert GSM().corrupt(problem, "compensated", random.Random(0)) is None  # no step after it to fix it


# ---------------------------------------------------------------- with reasoning-gym


@pytest.fixture(scope="module")
def task() -> GSM:
    pytest.importorskip("reasoning_gym", reason=NEEDS_RG)
    return GSM()


@pytest.fixture(scope="module")
def steps(task: GSM) -> list[dict]:
    return [record for _, record in task.records("step", "train", 120, seed=0)]


def test_records_are_deterministic_and_share_problems_across_kinds(task):
    for kind in ("sft", "prompt", "step", "weak"):
        assert list(task.records(kind, "val", 6, seed=1)) == list(GSM().records(kind, "val", 6, seed=1))
    prompts = [r["prompt"] for _, r in task.records("prompt", "val", 6, seed=1)]
    assert [r["prompt"] for _, r in task.records("step", "val", 6, seed=1)] == prompts
    assert [r["text"].split("\n")[0] for _, r in task.records("weak", "val", 6, seed=1)] == prompts
    assert [r["prompt"] for _, r in task.records("prompt", "val", 6, seed=2)] != prompts


def test_splits_are_disjoint(task):
    questions = {split: {p.question for p in task.problems(split, 60, seed=0)} for split in ("train", "val", "test")}
    for split, qs in questions.items():
        assert len(qs) > 50 and all(split_of(q) == split for q in qs)
    assert not (questions["train"] & questions["val"] or questions["train"] & questions["test"]
                or questions["val"] & questions["test"])


def test_gold_solutions_end_with_the_answer_and_get_reward_one(task):
    records = [r for _, r in task.records("sft", "test", 40, seed=0)]
    prompts, completions = [r["prompt"] for r in records], [r["completion"] for r in records]
    assert task.reward(prompts, completions).tolist() == [1.0] * 40
    assert all(parse_final(c) == r["answer"] for c, r in zip(completions, records))
    assert all(line.strip() == line and line for c in completions for line in c.split("\n"))
    wrong = [c.rpartition("#### ")[0] + f"#### {Fraction(r['answer']) + 1}" for c, r in zip(completions, records)]
    assert task.reward(prompts, wrong).tolist() == [0.0] * 40
    assert task.reward(prompts[:1], ["no answer line"]).tolist() == [0.0]
    with pytest.raises(ValueError, match="did not generate the prompt"):
        task.reward(["What is 2 + 2?"], ["#### 4"])


def test_step_records_reward_and_labels_mark_exactly_the_corrupted_step(task, steps):
    kinds = Counter(r["kind"] for r in steps)
    assert set(kinds) == {"correct", "slip", "compensated"}, kinds
    rewards = task.reward([r["prompt"] for r in steps], ["\n".join(r["completions"]) for r in steps]).tolist()
    gold = list(task.problems("train", 120, seed=0))
    for record, reward, problem in zip(steps, rewards, gold):
        labels, first = record["labels"], record["first_error"]
        assert reward == (0.0 if record["kind"] == "slip" else 1.0), record
        lines = [line for step in record["completions"] for line in step.split("\n") if not line.startswith("####")]
        assert len(lines) == len(labels) == len(problem.steps)
        if record["kind"] == "correct":
            assert first is None and all(labels)
            continue
        wrong = [i for i, ok in enumerate(labels) if not ok]
        assert wrong[0] == first and len(wrong) == (1 if record["kind"] == "slip" else 2), record
        # independent check: the wrong steps are the ones whose arithmetic no longer checks out
        for line, ok, gold_step in zip(lines, labels, problem.steps):
            assert (checkable(line) == checkable(gold_step.text)) == ok, (line, gold_step.text)
        assert lines[:first] == [s.text for s in problem.steps[:first]] and lines[first] != problem.steps[first].text


def test_weak_labels_are_final_answer_correctness(task):
    records = [r for _, r in task.records("weak", "train", 40, seed=0)]
    prompts, texts = zip(*(r["text"].split("\n", 1) for r in records))
    assert task.reward(list(prompts), list(texts)).tolist() == [float(r["label"]) for r in records]
    assert {r["label"] for r in records} == {0, 1}


def test_step_data_module_puts_labels_on_separator_tokens(task, tok):
    dm = StepLabelDataModule(task=task, task_sizes={"train": 24, "val": 4, "test": 4}, tokenizer="lit-rlhf:tiny-llama",
                             max_length=1024, batch_size=24)
    dm.setup("fit")
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(newline) == 1 and not dm.filtered["train"]
    for row, encoded in zip(dm.read("train"), dm.dataset("train").items):
        on = [i for i, y in enumerate(encoded["labels"]) if y != -100]
        assert all(encoded["input_ids"][i] == newline[0] for i in on)
        first = row.meta["first_error"]
        expected = [1] * len(row.steps) if first is None else [1] * first + [0]  # first_error supervision
        assert [encoded["labels"][i] for i in on] == expected
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["labels"][batch["labels"] != -100].tolist()) == {0, 1}
