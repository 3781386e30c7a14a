"""Ghost Attention builder: instruction on every sampled user turn, only in the system message of the
samples, loss on the final turn only (checked on the encoded tokens)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from lit_rlhf.data import GAttData, SFTDataModule, build_gatt
from lit_rlhf.tasks import Dialogue
from lit_rlhf.tasks.base import render_instruction

TURNS = [["cat", "owl", "dog"], ["bee"], ["fox", "yak"]]


class Spy:
    """Reference replier that records what it was shown."""

    def __init__(self, task):
        self.task, self.seen = task, []

    def __call__(self, dialogues):
        self.seen += [[dict(m) for m in d] for d in dialogues]
        return self.task.reply(dialogues)


def test_sampling_sees_the_instruction_on_every_user_turn_and_samples_keep_it_only_in_the_system():
    task = Dialogue(recall=0.0)  # a replier that forgets system messages: only attaching keeps it on track
    spy = Spy(task)
    records = build_gatt(TURNS, task.instructions, spy, seed=1, short_prob=0.0)
    assert len(spy.seen) == 6 and max(len(d) for d in spy.seen) == 5  # one call per dialogue turn
    for dialogue in spy.seen:
        instruction = task.found(dialogue[0]["content"])
        assert instruction and all(task.found(m["content"]) == instruction for m in dialogue if m["role"] == "user")
    assert [r["turn"] for _, r in records] == [1, 2, 3, 1, 1, 2]  # cuts="all": one sample per turn
    for where, rec in records:
        system, *rest = rec["messages"]
        assert system["role"] == "system" and system["content"] == " ".join(rec["instruction"])
        assert all(not task.found(m["content"]) for m in rest)  # the instruction is in the first turn only
        instruction = task.found(system["content"])
        replies = [m["content"] for m in rest if m["role"] == "assistant"]
        assert all(task.follows(instruction, r) for r in replies)  # GAtt replies follow at every turn
        conversation = int(where.split("#")[1].split("/")[0])
        assert [m["content"] for m in rest if m["role"] == "user"] == TURNS[conversation][: rec["turn"]]


def test_loss_is_zero_on_every_earlier_turn(tmp_path, tok):
    task = Dialogue(recall=0.0)
    records = build_gatt(TURNS, task.instructions, task.reply, seed=0)
    dm = SFTDataModule(tokenizer="lit-rlhf:tiny-llama", max_length=512)
    encoder = dm.encoder
    from lit_rlhf.data.formats import to_rows

    for where, rec in records:
        (row,) = to_rows("sft", rec, where)
        out = dm.encode(row, encoder)
        trained = [i for i, m in zip(out["input_ids"], out["completion_mask"]) if m]
        assert tok.decode(trained) == rec["messages"][-1]["content"] + "</s>\n"
        first = out["completion_mask"].index(1)
        assert tok.decode(out["input_ids"][:first]) == tok.apply_chat_template(
            rec["messages"][:-1], tokenize=False, add_generation_prompt=True)


def test_combinations_shortening_and_cuts():
    task = Dialogue()
    turns = [c.turns for c in task.dialogues("train", 200, seed=0)]
    records = build_gatt(turns, task.instructions, task.reply, seed=0, short_prob=0.5, cuts="last")
    assert len(records) == 200 and all(r["turn"] == len(t) for (_, r), t in zip(records, turns))
    sizes = Counter(len(r["instruction"]) for _, r in records)
    assert set(sizes) == {1, 2}
    short = sum(r["messages"][0]["content"] != " ".join(r["instruction"]) for _, r in records)
    assert 60 < short < 140
    shortened = next(r for _, r in records if r["messages"][0]["content"] != " ".join(r["instruction"]))
    found = task.found(" ".join(shortened["instruction"]))
    assert shortened["messages"][0]["content"] == render_instruction(found, True)
    rand = build_gatt(turns, task.instructions, task.reply, seed=0, cuts="random")
    assert len(rand) == 200 and len({r["turn"] for _, r in rand}) > 3
    with pytest.raises(ValueError, match="cuts must be"):
        build_gatt(turns, task.instructions, task.reply, cuts="first")  # type: ignore[arg-type]


def test_gatt_data_is_a_task_source_for_the_sft_datamodule():
    gatt = GAttData(Dialogue(), cuts="all")
    dm = SFTDataModule(task=gatt, task_sizes={"train": 50, "val": 10}, tokenizer="lit-rlhf:tiny-llama")
    dm.setup("fit")
    assert len(dm.dataset("train")) == 50
    assert list(gatt.records("sft", "train", 7, 0)) == list(gatt.records("sft", "train", 7, 0))
    assert next(gatt.records("prompt", "val", 1, 0))[0] == "task:dialogue/val#0"  # other kinds: the task's own
    assert gatt.reward(["End: !"], ["cat!"]).tolist() == [1.0]
    with pytest.raises(ValueError, match="GAtt needs a dialogue task"):
        from lit_rlhf.tasks import Arithmetic

        GAttData(Arithmetic())


def test_a_policy_can_sample_the_replies(tiny_spec):
    from lit_rlhf.rollout import ChatReplier

    gatt = GAttData(Dialogue(min_turns=2, max_turns=2), replier=ChatReplier(tiny_spec, sampling={"max_new_tokens": 3}))
    records = list(gatt.records("sft", "train", 4, 0))
    assert len(records) == 4
    assert all(isinstance(m["content"], str) for _, r in records for m in r["messages"])


def test_a_policy_replier_is_configured_by_class_path():
    from conftest import TINY
    from jsonargparse import ArgumentParser

    from lit_rlhf.models import ModelSpec
    from lit_rlhf.rollout import ChatReplier

    parser = ArgumentParser()
    parser.add_class_arguments(GAttData, "gatt")
    replier = {"class_path": "lit_rlhf.rollout.ChatReplier",
               "init_args": {"model": {"name": "lit-rlhf:tiny-llama", "config": TINY},
                             "sampling": {"max_new_tokens": 3}}}
    config = parser.parse_object({"gatt": {"task": {"class_path": "lit_rlhf.tasks.Dialogue",
                                                    "init_args": {"min_turns": 1, "max_turns": 1}},
                                           "replier": replier}})
    gatt = parser.instantiate_classes(config).gatt
    chat = gatt.replier()
    assert isinstance(chat, ChatReplier) and chat.model == ModelSpec(config=TINY)  # loaded at the first call
    assert chat.sampling.max_new_tokens == 3
    records = list(gatt.records("sft", "train", 2, 0))
    assert len(records) == 2 and isinstance(chat.model, torch.nn.Module)
