"""The published formats, as files (``tests/data/formats/``), give exactly these rows.

Each sample file follows its public dataset's layout (field names, nesting, extra columns); the expected
rows are written out by hand from the dataset's documented meaning.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_rlhf.data.schemas import DataError, PreferenceRow, StepRow, WeakLabelRow
from lit_rlhf.data.sources import read_rows

FORMATS = Path(__file__).parent / "formats"
H, A = "\n\nHuman: ", "\n\nAssistant: "


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def path(name: str) -> str:
    return str(FORMATS / name)


def test_hh_rlhf_single_and_multi_turn_give_the_final_replies_as_strings():
    rows = read_rows(path("hh_rlhf.jsonl"), "preference")
    egg = (H + "How do I boil an egg?" + A + "Put it in boiling water for about nine minutes."
           + H + "And for a soft yolk?")
    assert rows == [
        PreferenceRow(H + "What are some good vegetables to grow in a shady garden?\n\nAssistant:",
                      " Lettuce, spinach and kale all tolerate partial shade.", " Tomatoes.",
                      where=f"{path('hh_rlhf.jsonl')}:1"),
        PreferenceRow(egg + "\n\nAssistant:", " Six minutes, then cool it in cold water.", " Just eat it raw.",
                      where=f"{path('hh_rlhf.jsonl')}:2"),
    ]


def test_hh_rlhf_transcripts_that_differ_before_the_last_turn_are_located_errors_as_strings():
    """A plain-string reply cannot keep the later Human turn out of the loss: say so, and where."""
    with pytest.raises(DataError, match=r"hh_rlhf_divergent\.jsonl:2: field 'chosen': 'chosen' and 'rejected' differ "
                                        r"before their last turn, so this reply holds 3 turns .*format 'hh_chat'"):
        read_rows(path("hh_rlhf_divergent.jsonl"), "preference")


def test_hh_rlhf_as_chat_keeps_the_shared_history_as_prompt_and_the_divergent_turns_as_replies():
    rows = read_rows(path("hh_rlhf_divergent.jsonl"), "preference", format="hh_chat")
    where = path("hh_rlhf_divergent.jsonl")
    assert rows == [
        PreferenceRow(
            [user("How do I boil an egg?"), assistant("Put it in boiling water for about nine minutes."),
             user("And for a soft yolk?")],
            [assistant("Six minutes, then cool it in cold water.")], [assistant("Just eat it raw.")],
            where=f"{where}:1"),
        PreferenceRow(
            [user("Can you recommend a book?")],
            [assistant("Sure, what genres do you like?"), user("Mysteries."),
             assistant("Try The Hound of the Baskervilles.")],
            [assistant("Read anything."), user("That is not helpful."), assistant("Sorry, try a mystery novel.")],
            where=f"{where}:2"),
    ]


def test_hh_chat_replies_that_hold_human_turns_train_only_the_assistant_tokens(tok):
    from lit_rlhf.data.tokenize import Encoder

    (row,) = read_rows(path("hh_rlhf_divergent.jsonl"), "preference", format="hh_chat")[1:]
    item = Encoder(tok, max_length=512).preference(row)
    ids, mask = item["chosen_input_ids"], item["chosen_completion_mask"]
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert "Sure, what genres do you like?" in trained and "Try The Hound of the Baskervilles." in trained
    assert "Mysteries." not in trained and "Can you recommend a book?" not in trained


ULTRA_META = [
    {"prompt_id": "a1f3", "score_chosen": 8.5, "score_rejected": 4.0, "score_diff": 4.5},
    {"prompt_id": "b2e4", "score_chosen": 10.0, "score_rejected": 2.0, "score_diff": 8.0},
]


@pytest.mark.parametrize(("format", "margins"), [("auto", [None, None]), ("ultrafeedback_margin", [4.5, 8.0])])
def test_ultrafeedback_binarized_with_scores_as_margins_on_request(format, margins):
    rows = read_rows(path("ultrafeedback_binarized.jsonl"), "preference", format=format)
    haiku = "Crimson leaves drifting\nwhispers on the cooling wind\nthe year exhales slow"
    where = path("ultrafeedback_binarized.jsonl")
    assert rows == [
        PreferenceRow([user("Write a haiku about autumn leaves.")], [assistant(haiku)],
                      [assistant("Leaves are falling down.")], margin=margins[0], where=f"{where}:1",
                      meta=ULTRA_META[0]),
        PreferenceRow([user("What is the capital of Australia?")], [assistant("Canberra.")], [assistant("Sydney.")],
                      margin=margins[1], where=f"{where}:2", meta=ULTRA_META[1]),
    ]


def test_trl_conversational_explicit_and_implicit_prompt():
    where = path("trl_conversational.jsonl")
    assert read_rows(where, "preference") == [
        PreferenceRow([{"role": "system", "content": "Answer briefly."}, user("What colour is the sky?")],
                      [assistant("Blue, on a clear day.")], [assistant("Green.")], where=f"{where}:1"),
        PreferenceRow([user("Name a prime number.")], [assistant("Seven.")], [assistant("Nine.")], where=f"{where}:2"),
    ]


def test_trl_stepwise():
    where = path("trl_stepwise.jsonl")
    assert read_rows(where, "step") == [
        StepRow("Which number is larger, 9.8 or 9.11?",
                ["The fractional part of 9.8 is 0.8.", "The fractional part of 9.11 is 0.11.",
                 "0.11 > 0.8, so 9.11 is larger."], [1, 1, -1], where=f"{where}:1"),
    ]


def test_math_shepherd_question_that_says_step_1_stays_whole():
    where = path("math_shepherd.jsonl")
    assert read_rows(where, "step") == [
        StepRow("Follow this plan. Step 1: read the problem. Then solve: Tom has 3 apples and buys 5 more. "
                "How many apples does he have?",
                ["Step 1: Tom starts with 3 apples.", "Step 2: 3 + 5 = 8.", "Step 3: The answer is: 8"], [1, 1, 1],
                where=f"{where}:1", meta={"task": "GSM8K"}),
        StepRow("A shelf holds 4 rows of 6 books. How many books are on the shelf?",
                ["Step 1: 4 * 6 = 26 books.", "Step 2: The answer is: 26"], [-1, -1],
                where=f"{where}:2", meta={"task": "GSM8K"}),
    ]


PRM_TOP = {"is_quality_control_question": False, "is_initial_screening_question": False}


def test_prm800k_phase1_follows_the_chosen_steps_then_the_human_completion():
    where = path("prm800k_phase1.jsonl")
    (row,) = read_rows(where, "step")
    assert row == StepRow(
        "How many positive divisors does 36 have?",
        ["First, factor 36: $36 = 2^2 \\cdot 3^2$.", "The number of divisors is $(2+1)(2+1)$.",
         "$(2+1)(2+1) = 9$.\n\n# Answer\n\n9"],
        [1, 1, 1], where=f"{where}:1",
        meta={"labeler": "340d89bc", "timestamp": "2022-07-17T14:12:05", "generation": None, **PRM_TOP,
              "finish_reason": "solution", "ground_truth_answer": "9"})


def test_prm800k_phase2_stops_at_the_first_error():
    where = path("prm800k_phase2.jsonl")
    (row,) = read_rows(where, "step")
    assert row == StepRow(
        "Compute $17 \\times 23$.",
        ["$17 \\times 23 = 17 \\times 20 + 17 \\times 3$.", "$17 \\times 20 = 340$ and $17 \\times 3 = 51$.",
         "$340 + 51 = 381$."],
        [1, 0, -1], where=f"{where}:1",
        meta={"labeler": "e90a38f3", "timestamp": "2022-09-08T02:41:10", "generation": 7, **PRM_TOP,
              "finish_reason": "found_error", "ground_truth_answer": "391"})


def test_prm800k_branches_add_one_row_per_unchosen_alternative():
    where = path("prm800k_phase1.jsonl")
    rows = read_rows(where, "step", format="prm800k_branches")
    assert [(r.steps, r.labels, r.meta.get("branch_step")) for r in rows] == [
        (["First, factor 36: $36 = 2^2 \\cdot 3^2$.", "The number of divisors is $(2+1)(2+1)$.",
          "$(2+1)(2+1) = 9$.\n\n# Answer\n\n9"], [1, 1, 1], None),
        (["First, factor 36: $36 = 2^2 \\cdot 3^2$.", "The number of divisors is $2 \\cdot 2 = 4$."], [1, -1], 1),
        (["First, factor 36: $36 = 2^2 \\cdot 3^2$.", "The number of divisors is $(2+1)(2+1)$.",
          "So 36 has 6 divisors."], [1, 1, -1], 2),
    ]


def test_openai_w2s_weak_labels():
    where = path("w2s_weak_labels.jsonl")
    assert read_rows(where, "weak") == [
        WeakLabelRow("The movie was a delight from start to finish.", 1, [0.1, 0.9], f"{where}:1", {"gt_label": 1},
                     label_field="hard_label"),
        WeakLabelRow("I want those two hours back.", 1, [0.45, 0.55], f"{where}:2", {"gt_label": 0},
                     label_field="hard_label"),
        WeakLabelRow("Dull and far too long.", 0, [0.8, 0.2], f"{where}:3", {"gt_label": 0}, label_field="hard_label"),
    ]
