"""Format adapters: one realistic sample per format, read back from a jsonl file, exact fields."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lit_rlhf.data.formats import ADAPTERS, DETECTION, detect_format, to_rows
from lit_rlhf.data.schemas import DataError, PreferenceRow, PromptRow, SFTRow, StepRow, WeakLabelRow
from lit_rlhf.data.sources import read_rows


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def load(tmp_path: Path, kind: str, record: dict[str, Any], format: str = "auto") -> list[Any]:
    """Write ``record`` as the only line of a jsonl file and read it back through the public path."""
    path = tmp_path / f"{kind}.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    rows = read_rows(path, kind, format)
    assert all(row.where == f"{path}:1" for row in rows)
    return rows


def raises(kind: str, record: dict[str, Any], field: str | None, match: str, format: str = "auto") -> DataError:
    """Assert that ``record`` is rejected with a DataError naming ``where`` and ``field``."""
    with pytest.raises(DataError, match=match) as info:
        to_rows(kind, record, "data.jsonl:7", format)
    assert info.value.where == "data.jsonl:7"
    assert info.value.field == field
    assert str(info.value).startswith("data.jsonl:7")
    return info.value


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def test_every_detected_format_is_registered():
    assert set(ADAPTERS) == {"sft", "preference", "unpaired", "step", "weak", "prompt"}
    for kind, rules in DETECTION.items():
        assert {rule.format for rule in rules} <= set(ADAPTERS[kind])


def test_detect_format_names_fields_present_when_nothing_matches():
    match = r"no preference format matches the fields present \(answer, question\)"
    with pytest.raises(DataError, match=match) as info:
        detect_format("preference", {"question": "q", "answer": "a"}, "f.jsonl:3")
    assert (info.value.where, info.value.field) == ("f.jsonl:3", None)
    assert "trl (prompt + chosen + rejected)" in str(info.value)


def test_detect_format_names_the_missing_field_of_the_closest_format():
    with pytest.raises(DataError, match=r"^f.jsonl:3: field 'rejected': missing for format 'trl'; no preference"):
        detect_format("preference", {"prompt": "p", "chosen": "a", "id": 1}, "f.jsonl:3")
    assert detect_format("step", {"question": {"problem": "p"}, "label": {"steps": []}}, "x") == "prm800k"
    assert detect_format("step", {"input": "x ки", "label": "x +"}, "x") == "math_shepherd"
    assert detect_format("prompt", {"problem": "p"}, "x") == "question"


def test_unknown_kind_and_format_are_config_errors():
    with pytest.raises(ValueError, match="unknown data kind 'pairs'"):
        to_rows("pairs", {"prompt": "p"}, "x:1")
    with pytest.raises(ValueError, match="unknown sft format 'sharegpt'"):
        to_rows("sft", {"prompt": "p", "completion": "c"}, "x:1", format="sharegpt")


def test_record_must_be_an_object():
    with pytest.raises(DataError, match="expected an object"):
        to_rows("sft", ["prompt", "completion"], "x:2")


# --------------------------------------------------------------------------------------------
# sft
# --------------------------------------------------------------------------------------------


def test_sft_prompt_completion_strings_and_chat(tmp_path):
    (row,) = load(tmp_path, "sft", {"prompt": "2 + 3 =", "completion": " 5", "id": 17})
    assert row == SFTRow("2 + 3 =", " 5", row.where, {"id": 17})
    chat = {"prompt": [user("Hi!")], "completion": [assistant("Hello, how can I help?")]}
    (row,) = to_rows("sft", chat, "x:1")
    assert (row.prompt, row.completion) == ([user("Hi!")], [assistant("Hello, how can I help?")])


def test_sft_messages_splits_off_the_last_assistant_reply(tmp_path):
    system = {"role": "system", "content": "Be brief."}
    messages = [system, user("Capital of France?"), assistant("Paris."), user("And Italy?"), assistant("Rome.")]
    (row,) = load(tmp_path, "sft", {"messages": messages})
    assert row.prompt == messages[:4]
    assert row.completion == [assistant("Rome.")]
    assert row.meta == {}


def test_sft_messages_errors():
    raises("sft", {"messages": [user("hi")]}, "messages", "no assistant message")
    raises("sft", {"messages": [user("hi"), assistant("yo"), user("well?")]}, "messages", "must end with the assistant")
    raises("sft", {"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role", "unknown role 'bot'")


def test_sft_alpaca_appends_input_after_a_blank_line(tmp_path):
    record = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
    (row,) = load(tmp_path, "sft", record)
    assert (row.prompt, row.completion, row.meta) == ("Translate to French.\n\nGood morning", "Bonjour", {})
    (row,) = to_rows("sft", {"instruction": "Name a prime.", "input": "", "output": "7"}, "x:1")
    assert row.prompt == "Name a prime."


# --------------------------------------------------------------------------------------------
# preference
# --------------------------------------------------------------------------------------------


def test_preference_trl_with_options_and_extra_columns(tmp_path):
    record = {
        "prompt": "Explain photosynthesis in one sentence.",
        "chosen": " Plants turn light, water and CO2 into sugar and oxygen.",
        "rejected": " It is a plant thing.",
        "margin": 2.0,
        "rating": 3,
        "soft_label": 0.9,
        "strength": 1.25,
        "source": "annotator-4",
    }
    (row,) = load(tmp_path, "preference", record)
    assert row == PreferenceRow(
        prompt="Explain photosynthesis in one sentence.",
        chosen=" Plants turn light, water and CO2 into sugar and oxygen.",
        rejected=" It is a plant thing.",
        margin=2.0,
        rating="3",
        soft_label=0.9,
        strength=1.25,
        where=row.where,
        meta={"source": "annotator-4"},
    )


def test_preference_trl_implicit_prompt_splits_shared_messages(tmp_path):
    shared = [user("Write a limerick."), assistant("About what?"), user("A cat.")]
    record = {"chosen": [*shared, assistant("There once was a cat...")], "rejected": [*shared, assistant("No.")]}
    (row,) = load(tmp_path, "preference", record)
    assert row.prompt == shared
    assert row.chosen == [assistant("There once was a cat...")]
    assert row.rejected == [assistant("No.")]


def test_preference_hh_multi_turn_transcript(tmp_path):
    head = (
        "\n\nHuman: What's a good name for a goldfish?"
        "\n\nAssistant: How about Bubbles?"
        "\n\nHuman: Something more unusual, please."
        "\n\nAssistant:"
    )
    record = {"chosen": head + " You could call it Admiral Finnegan.", "rejected": head + " Fish don't need names."}
    (row,) = load(tmp_path, "preference", record)
    assert detect_format("preference", record, "x") == "hh"
    assert row.prompt == head
    assert row.chosen == " You could call it Admiral Finnegan."
    assert row.rejected == " Fish don't need names."
    assert (row.margin, row.meta) == (None, {})


def test_preference_hh_errors():
    raises("preference", {"chosen": "Human: hi there", "rejected": "Human: hi you"}, "chosen", "no 'Assistant:' turn")
    head = "\n\nHuman: hi\n\nAssistant:"
    raises("preference", {"chosen": head + " hello", "rejected": head + " "}, "rejected", "empty assistant reply")


def test_preference_ultrafeedback_binarized(tmp_path):
    question = "Write a haiku about autumn."
    record = {
        "prompt": question,
        "prompt_id": "6b1f0c",
        "chosen": [user(question), assistant("Crisp leaves drift and fall / ...")],
        "rejected": [user(question), assistant("Autumn is a season.")],
        "messages": [user(question), assistant("Crisp leaves drift and fall / ...")],
        "score_chosen": 8.5,
        "score_rejected": 4.0,
    }
    (row,) = load(tmp_path, "preference", record)
    assert row.prompt == [user(question)]
    assert row.chosen == [assistant("Crisp leaves drift and fall / ...")]
    assert row.rejected == [assistant("Autumn is a season.")]
    assert row.margin is None
    assert row.meta == {"prompt_id": "6b1f0c", "score_chosen": 8.5, "score_rejected": 4.0, "score_diff": 4.5}


def test_plain_text_pairs_with_annotator_scores_are_trl_pairs(tmp_path):
    """What ``lit-rlhf pairs`` and ``rounds`` write with an annotator (plain text + score_chosen/score_rejected)
    is a TRL pair with the scores kept, not UltraFeedback (whose chosen/rejected are message lists)."""
    record = {"prompt": "p", "chosen": "a", "rejected": "b", "score_chosen": 0.5, "score_rejected": 0.0}
    (row,) = load(tmp_path, "preference", record)
    assert (row.prompt, row.chosen, row.rejected) == ("p", "a", "b")
    assert row.meta == {"score_chosen": 0.5, "score_rejected": 0.0}


def test_preference_errors_name_the_field():
    ok = {"prompt": "p", "chosen": "a", "rejected": "b"}
    raises("preference", {**ok, "rejected": "a"}, "chosen", "chosen and rejected are identical")
    raises("preference", {"prompt": "p", "chosen": "a"}, "rejected", "missing for format 'trl'")
    raises("preference", {"prompt": "p", "chosen": "a"}, "rejected", "missing", format="trl")
    raises("preference", {**ok, "prompt": "   "}, "prompt", "empty string")
    raises("preference", {**ok, "chosen": 3}, "chosen", "expected a string or a chat message list, got int")
    raises("preference", {**ok, "margin": "big"}, "margin", "expected a number")
    raises("preference", {**ok, "margin": float("nan")}, "margin", "must be finite")
    raises("preference", {**ok, "soft_label": 1.5}, "soft_label", "outside")
    raises("preference", {**ok, "rating": True}, "rating", "expected a string or an integer")
    raises("preference", {"chosen": [user("a"), assistant("b")], "rejected": [user("c")]}, "prompt", "share no")


# --------------------------------------------------------------------------------------------
# step labels
# --------------------------------------------------------------------------------------------

PRM800K_PHASE1 = {
    "labeler": "e90a38f3-3135-4465-87af-3e6322e3d772",
    "timestamp": "2022-07-17T16:56:51.323252",
    "generation": None,
    "is_quality_control_question": False,
    "is_initial_screening_question": False,
    "question": {
        "problem": "What is the smallest positive integer $n$ such that $17n \\equiv 1234 \\pmod{7}?$",
        "ground_truth_solution": "First, we simplify $1234 \\pmod{7}$ to $1234 \\equiv 2 \\pmod{7}$. ...",
        "ground_truth_answer": "3",
    },
    "label": {
        "steps": [
            {
                "completions": [{"text": "First, let's reduce 1234 mod 7.", "rating": 1, "flagged": False}],
                "human_completion": None,
                "chosen_completion": 0,
            },
            {
                "completions": [
                    {"text": "1234 = 7 * 176 + 1, so 1234 is 1 mod 7.", "rating": -1, "flagged": False},
                    {"text": "1234 = 7 * 176 + 2, so 1234 is 2 mod 7.", "rating": 1, "flagged": False},
                ],
                "human_completion": None,
                "chosen_completion": 1,
            },
            {
                "completions": [{"text": "17 is 3 mod 7, so we need 3n to be 2 mod 7.", "rating": 0, "flagged": False}],
                "human_completion": None,
                "chosen_completion": 0,
            },
            {
                "completions": [{"text": "So n = 2 works.", "rating": -1, "flagged": False}],
                "human_completion": {
                    "text": "3 * 3 = 9, which is 2 mod 7, so n = 3.\n\n# Answer\n\n3",
                    "rating": None,
                    "source": "human",
                    "flagged": False,
                    "corrected_rating": None,
                },
                "chosen_completion": None,
            },
        ],
        "total_time": 278455,
        "finish_reason": "solution",
    },
}
PRM800K_STEPS = [
    "First, let's reduce 1234 mod 7.",
    "1234 = 7 * 176 + 2, so 1234 is 2 mod 7.",
    "17 is 3 mod 7, so we need 3n to be 2 mod 7.",
    "3 * 3 = 9, which is 2 mod 7, so n = 3.\n\n# Answer\n\n3",
]


def test_prm800k_phase1_follows_chosen_and_human_completions(tmp_path):
    (row,) = load(tmp_path, "step", PRM800K_PHASE1)
    assert row.prompt == PRM800K_PHASE1["question"]["problem"]
    assert row.steps == PRM800K_STEPS
    assert row.labels == [1, 1, 0, 1]
    assert row.meta == {
        "labeler": "e90a38f3-3135-4465-87af-3e6322e3d772",
        "timestamp": "2022-07-17T16:56:51.323252",
        "generation": None,
        "is_quality_control_question": False,
        "is_initial_screening_question": False,
        "finish_reason": "solution",
        "ground_truth_answer": "3",
    }


def test_prm800k_phase2_found_error_ends_with_the_wrong_step(tmp_path):
    record = {
        "labeler": "a1",
        "generation": 4,
        "question": {"problem": "Compute $2^{10}$.", "ground_truth_answer": "1024", "pre_generated_steps": []},
        "label": {
            "steps": [
                {"completions": [{"text": "2^5 = 32.", "rating": 1, "flagged": False}], "chosen_completion": 0},
                {"completions": [{"text": "32 * 32 = 1024.", "rating": None}], "chosen_completion": 0},
                {
                    "completions": [{"text": "So the answer is 1000.", "rating": -1, "flagged": False}],
                    "human_completion": None,
                    "chosen_completion": None,
                },
                {"completions": [{"text": "Never reached.", "rating": 1}], "chosen_completion": 0},
            ],
            "total_time": 15000,
            "finish_reason": "found_error",
        },
    }
    (row,) = load(tmp_path, "step", record)
    assert row == StepRow(
        "Compute $2^{10}$.",
        ["2^5 = 32.", "32 * 32 = 1024.", "So the answer is 1000."],
        [1, None, -1],
        row.where,
        {"labeler": "a1", "generation": 4, "finish_reason": "found_error", "ground_truth_answer": "1024"},
    )


def test_prm800k_branches_adds_one_row_per_unchosen_alternative():
    main, alt1, alt3 = to_rows("step", PRM800K_PHASE1, "x:1", format="prm800k_branches")
    assert (main.steps, main.labels) == (PRM800K_STEPS, [1, 1, 0, 1])
    assert alt1.steps == ["First, let's reduce 1234 mod 7.", "1234 = 7 * 176 + 1, so 1234 is 1 mod 7."]
    assert alt1.labels == [1, -1]
    assert (alt3.steps, alt3.labels) == ([*PRM800K_STEPS[:3], "So n = 2 works."], [1, 1, 0, -1])
    assert (alt1.meta["branch_step"], alt3.meta["branch_step"]) == (1, 3)


def test_prm800k_errors_name_nested_fields():
    bad_rating = json.loads(json.dumps(PRM800K_PHASE1))
    bad_rating["label"]["steps"][2]["completions"][0]["rating"] = 2
    raises("step", bad_rating, "label.steps[2].completions[0].rating", "not one of -1, 0, 1")
    bad_index = json.loads(json.dumps(PRM800K_PHASE1))
    bad_index["label"]["steps"][1]["chosen_completion"] = 5
    raises("step", bad_index, "label.steps[1].chosen_completion", "not an index into 2 completions")
    raises("step", {"question": {"problem": "p"}, "label": {"steps": [], "finish_reason": "bad_problem"}},
           "label.steps", "no labelled step")
    raises("step", {"question": {"ground_truth_answer": "1"}, "label": {"steps": []}}, "question.problem", "missing")


MATH_SHEPHERD_INPUT = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. She sells the "
    "remainder for $2 per egg. How much does she make every day? "
    "Step 1: Janet's ducks lay 16 eggs per day. ки\n"
    "Step 2: She eats 3 for breakfast, so she has 16 - 3 = 13 eggs left. ки\n"
    "Step 3: She bakes muffins with 4, so she has 13 - 4 = 8 eggs left. ки\n"
    "Step 4: She sells 8 eggs for $2 each, so she makes 8 * 2 = $16. The answer is: 16 ки"
)


def shepherd_label(text: str, signs: str) -> str:
    parts = text.split("ки")
    return "".join(p + s for p, s in zip(parts, signs)) + parts[-1]


def test_math_shepherd_splits_steps_at_tags(tmp_path):
    record = {"input": MATH_SHEPHERD_INPUT, "label": shepherd_label(MATH_SHEPHERD_INPUT, "++--"), "task": "GSM8K"}
    (row,) = load(tmp_path, "step", record)
    assert row.prompt == (
        "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. She sells the "
        "remainder for $2 per egg. How much does she make every day?"
    )
    assert row.steps == [
        "Step 1: Janet's ducks lay 16 eggs per day.",
        "Step 2: She eats 3 for breakfast, so she has 16 - 3 = 13 eggs left.",
        "Step 3: She bakes muffins with 4, so she has 13 - 4 = 8 eggs left.",
        "Step 4: She sells 8 eggs for $2 each, so she makes 8 * 2 = $16. The answer is: 16",
    ]
    assert row.labels == [1, 1, -1, -1]
    assert row.meta == {"task": "GSM8K"}


def test_math_shepherd_without_step_headings_uses_the_first_line_as_prompt():
    text = "What is 2 + 2 * 3?\n2 * 3 = 6 ки\n2 + 6 = 8 ки"
    (row,) = to_rows("step", {"input": text, "label": shepherd_label(text, "+-")}, "x:1")
    assert (row.prompt, row.steps, row.labels) == ("What is 2 + 2 * 3?", ["2 * 3 = 6", "2 + 6 = 8"], [1, -1])


def test_math_shepherd_label_must_line_up_with_tags():
    text = "Q?\nStep 1: a ки\nStep 2: b ки"
    raises("step", {"input": text, "label": "Q?\nStep 1: a +\nStep 2: b"}, "label", "has 24 characters, expected 26")
    raises("step", {"input": text, "label": shepherd_label(text, "+x")}, "label", r"step\(s\) \[2\] of 2")
    raises("step", {"input": "Q?\nStep 1: a", "label": "Q?\nStep 1: a"}, "input", "no step tag")


def test_trl_stepwise_bool_and_integer_labels(tmp_path):
    record = {"prompt": "1 + 2 + 3 = ?", "completions": ["1 + 2 = 3", "3 + 3 = 7"], "labels": [True, False]}
    (row,) = load(tmp_path, "step", record)
    assert row == StepRow("1 + 2 + 3 = ?", ["1 + 2 = 3", "3 + 3 = 7"], [1, -1], row.where, {})
    (row,) = to_rows("step", {**record, "completions": ["a", "b", "c"], "labels": [1, 0, -1]}, "x:1")
    assert row.labels == [1, 0, -1]


def test_trl_stepwise_errors():
    ok = {"prompt": "p", "completions": ["a", "b"], "labels": [True, True]}
    raises("step", {**ok, "labels": [True]}, "labels", "has 1 labels for 2 completions")
    raises("step", {**ok, "labels": [True, 2]}, "labels[1]", "not one of -1, 0, 1")
    raises("step", {**ok, "completions": ["a", ""]}, "completions[1]", "empty string")
    raises("step", {**ok, "completions": "a\nb"}, "completions", "expected a list")


# --------------------------------------------------------------------------------------------
# weak labels
# --------------------------------------------------------------------------------------------


def test_weak_to_strong_jsonl_record(tmp_path):
    record = {
        "txt": "Q: What gas do plants absorb from the air? A: carbon dioxide",
        "hard_label": 1,
        "soft_label": [0.2, 0.8],
        "gt_label": 1,
        "acc": True,
        "logits": [-0.69, 0.69],
    }
    (row,) = load(tmp_path, "weak", record)
    assert row == WeakLabelRow(
        "Q: What gas do plants absorb from the air? A: carbon dioxide",
        1,
        [0.2, 0.8],
        row.where,
        {"gt_label": 1, "acc": True, "logits": [-0.69, 0.69]},
    )


def test_text_label_with_float_soft_label():
    (row,) = to_rows("weak", {"text": "a lovely film", "label": 1, "soft_label": 0.75}, "x:1")
    assert (row.text, row.label, row.soft_label) == ("a lovely film", 1, [0.25, 0.75])


def test_weak_label_errors():
    raises("weak", {"txt": "t", "hard_label": 1, "soft_label": [0.3, 0.3]}, "soft_label", "sum to 0.6")
    raises("weak", {"txt": "t", "hard_label": 1, "soft_label": [1.2, -0.2]}, "soft_label[0]", "outside")
    raises("weak", {"text": "t", "label": 1, "soft_label": 1.5}, "soft_label", "outside")
    raises("weak", {"txt": "t", "hard_label": 2, "soft_label": [0.5, 0.5]}, "hard_label", r"outside \[0, 1\]")
    raises("weak", {"txt": "t", "hard_label": -1}, "hard_label", "negative")
    raises("weak", {"txt": "t", "hard_label": 0, "gt_label": -1}, "gt_label", "negative")
    # without soft labels the class count is the data module's `num_classes` (checked when encoding)
    assert to_rows("weak", {"txt": "t", "hard_label": 2}, "data.jsonl:7")[0].label == 2
    raises("weak", {"txt": "t", "hard_label": "pos"}, "hard_label", "expected an integer label")


# --------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------


def test_prompt_formats(tmp_path):
    (row,) = load(tmp_path, "prompt", {"prompt": "Once upon a time", "answer": 4})
    assert row == PromptRow("Once upon a time", row.where, {"answer": 4})
    (row,) = to_rows("prompt", {"messages": [user("2+2?"), assistant("4")]}, "x:1")
    assert (row.prompt, row.meta) == ([user("2+2?")], {"reference": "4"})
    (row,) = to_rows("prompt", {"messages": [user("2+2?")]}, "x:1")
    assert (row.prompt, row.meta) == ([user("2+2?")], {})
    (row,) = to_rows("prompt", {"problem": "Solve x + 1 = 3.", "solution": "x = 2"}, "x:1")
    assert (row.prompt, row.meta) == ("Solve x + 1 = 3.", {"solution": "x = 2"})
    (row,) = to_rows("prompt", {"question": "Why is the sky blue?"}, "x:1")
    assert row.prompt == "Why is the sky blue?"


def test_prompt_errors():
    raises("prompt", {"messages": [assistant("4")]}, "messages", "only an assistant message")
    raises("prompt", {"question": ["not", "text"]}, "question", "expected a string, got list")
    raises("prompt", {"prompt": []}, "prompt", "empty message list")
