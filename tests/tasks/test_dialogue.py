"""Dialogue task: instructions, checks, the forgetful reference replier, records and the per-turn gold metric."""

from __future__ import annotations

import random

import pytest

from lit_rlhf.tasks import TASKS, Dialogue, Instruction, get_task
from lit_rlhf.tasks.base import combine_instructions, render_instruction

UPPER = Instruction("case", "Reply in upper case.", "Case: upper", "upper")
BANG = Instruction("end", "End every reply with !", "End: !", "!")
AT = Instruction("start", "Start every reply with @", "Start: @", "@")


def system(text):
    return {"role": "system", "content": text}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_registered():
    assert TASKS["dialogue"] is Dialogue and isinstance(get_task("dialogue", recall=0.0), Dialogue)


def test_ideal_and_follows():
    assert Dialogue.ideal("cat", [UPPER, AT, BANG]) == "@CAT!"
    assert Dialogue.ideal("cat", []) == "cat"
    assert Dialogue.follows([UPPER, AT, BANG], "@CAT!")
    assert Dialogue.follows([UPPER, BANG], "DOG!")  # the word is not part of following
    assert not Dialogue.follows([UPPER], "Cat") and not Dialogue.follows([UPPER], "123")
    assert not Dialogue.follows([BANG], "cat!?") and not Dialogue.follows([AT], " @cat")
    assert not Dialogue.follows([AT, BANG], "")


def test_found_reads_full_and_short_forms():
    task = Dialogue()
    assert set(task.found("<|system|>\nCase: upper, End: !</s>")) == {UPPER, BANG}
    assert task.found("Start every reply with @\ncat") == (AT,)
    assert task.found("cat") == ()


def test_combinations_one_per_category_and_short_forms():
    rng = random.Random(0)
    combos = [combine_instructions(Dialogue().instructions, rng, max_combine=2) for _ in range(300)]
    sizes = {len(c) for c in combos}
    assert sizes == {1, 2}
    assert all(len({i.category for i in c}) == len(c) for c in combos)
    assert render_instruction((UPPER, BANG)) == "Reply in upper case. End every reply with !"
    assert render_instruction((UPPER, BANG), short=True) == "Case: upper, End: !"


def test_reference_replier_obeys_the_user_message_and_forgets_the_system_message():
    forgetful, faithful = Dialogue(recall=0.0), Dialogue(recall=1.0)
    chat = [system("Reply in upper case."), user("cat"), assistant("CAT"), user("owl")]
    assert forgetful.reply([chat[:2]]) == ["CAT"]  # turn 1: recall ** 0 = 1
    assert forgetful.reply([chat]) == ["owl"]
    assert faithful.reply([chat]) == ["OWL"]
    attached = [user("End every reply with !\ncat"), assistant("cat!"), user("End every reply with !\nowl")]
    assert forgetful.reply([attached]) == ["owl!"]
    # deterministic per dialogue; about recall ** (t-1) of system instructions kept at turn t
    half = Dialogue(recall=0.5)
    assert half.reply([chat]) == half.reply([chat])
    convs = half.dialogues("train", 400, seed=0, turns=2)
    second = [[system(render_instruction(c.instruction)), user(c.turns[0]), assistant("x"), user(c.turns[1])]
              for c in convs]
    kept = sum(half.follows(c.instruction, r) for c, r in zip(convs, half.reply(second))) / len(convs)
    assert 0.4 < kept < 0.6


def test_records_naive_sft_and_prompts():
    task = Dialogue(min_turns=3, max_turns=3, recall=0.0, short_prob=0.0)
    (where, rec), = list(task.records("sft", "train", 1, seed=0))
    assert where == "task:dialogue/train#0"
    roles = [m["role"] for m in rec["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert rec["messages"][0]["content"] == " ".join(rec["instruction"])
    replies = [m["content"] for m in rec["messages"] if m["role"] == "assistant"]
    words = [m["content"] for m in rec["messages"] if m["role"] == "user"]
    instruction = task.found(rec["messages"][0]["content"])
    assert replies == [task.ideal(words[0], instruction), *words[1:]]  # forgets after turn 1
    (_, prompt), = list(task.records("prompt", "val", 1, seed=0))
    assert [m["role"] for m in prompt["prompt"]] == ["system", "user"]
    with pytest.raises(ValueError, match="no 'preference' data"):
        list(task.records("preference", "train", 1))


def test_dialogues_are_deterministic_and_splits_disjoint():
    task = Dialogue()
    assert task.dialogues("train", 20, seed=3) == task.dialogues("train", 20, seed=3)
    train = set(task.dialogues("train", 300, seed=0))
    test = set(task.dialogues("test", 100, seed=0))
    assert not train & test
    assert {len(c.turns) for c in train} == set(range(1, 9))


def test_follow_rates_per_turn(tok):
    task = Dialogue()
    assert task.follow_rates(Dialogue(recall=1.0).reply, n=20, turns=4) == {"follow": [1.0] * 4, "correct": [1.0] * 4}
    forgetful = task.follow_rates(Dialogue(recall=0.0).reply, n=20, turns=4)
    assert forgetful["follow"][0] == 1.0 and max(forgetful["follow"][1:]) < 0.3
    assert task.follow_rates(lambda chats: ["x"] * len(chats), n=20, turns=2)["follow"] == [0.0, 0.0]


def test_reward_reads_the_rendered_prompt(tok):
    task = Dialogue()
    prompt = tok.apply_chat_template([system("Case: upper, End: !"), user("cat")], tokenize=False,
                                     add_generation_prompt=True)
    assert task.reward([prompt, prompt, prompt], ["CAT!", "cat!", "CAT"]).tolist() == [1.0, 0.0, 0.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_turns"):
        Dialogue(min_turns=3, max_turns=2)
    with pytest.raises(ValueError, match="also occur in the instructions"):
        Dialogue(words=["cat", "reply"])
