"""Encoder (rows -> token ids, masks, truncation) and Collator (padding, pairs, numbers), exact ids."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lit_rlhf.data import (
    Collator,
    DataError,
    Encoder,
    PreferenceDataModule,
    PreferenceRow,
    PromptDataModule,
    PromptRow,
    SFTDataModule,
    SFTRow,
    StepRow,
    WeakLabelRow,
)
from lit_rlhf.data.collate import pad
from lit_rlhf.data.tokenize import TooLong, render_completion, render_prompt

PAD, BOS, EOS = 0, 1, 2
NL = 4 + 188 + 10  # '\n' (byte 0x0A): after the 4 specials and the 188 printable byte symbols


def b(text: str) -> list[int]:
    """Hand-computed ids of printable ASCII / newline text (one id per byte, no specials)."""
    out = []
    for ch in text:
        assert ch == "\n" or "!" <= ch <= "~", ch
        out.append(NL if ch == "\n" else 4 + ord(ch) - ord("!"))
    return out


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_hand_ids_match_the_tokenizer(tok):
    assert tok("ab\nZ~", add_special_tokens=False)["input_ids"] == b("ab\nZ~") == [68, 69, NL, 61, 97]


# -- Encoder.sft -------------------------------------------------------------------------------

def test_sft_plain_strings(tok):
    out = Encoder(tok, max_length=64).sft(SFTRow(prompt="Hi", completion="Yo!", where="f:1"))
    assert out["input_ids"] == [BOS] + b("Hi") + b("Yo!") + [EOS]
    assert out["completion_mask"] == [0, 0, 0, 1, 1, 1, 1]
    assert out["prompt_ids"] == [BOS] + b("Hi")
    assert out["input_ids"][: len(out["prompt_ids"])] == out["prompt_ids"]
    assert out["prompt_text"] == "Hi"
    masked = [i for i, m in zip(out["input_ids"], out["completion_mask"]) if m]
    assert tok.decode(masked) == "Yo!</s>"


def test_sft_chat_messages_mask_exactly_the_assistant_text(tok):
    row = SFTRow(prompt=[user("hi")], completion=[assistant("yo")], where="f:2")
    out = Encoder(tok, max_length=64).sft(row)
    prompt_text = "<s><|user|>\nhi</s>\n<|assistant|>\n"
    assert out["prompt_text"] == prompt_text
    # the template renders BOS itself; no second BOS is added
    assert out["prompt_ids"] == tok(prompt_text, add_special_tokens=False)["input_ids"]
    assert out["prompt_ids"][:10] == [BOS] + b("<|user|>\n")
    assert out["input_ids"] == out["prompt_ids"] + b("yo") + [EOS, NL]
    assert out["completion_mask"] == [0] * len(out["prompt_ids"]) + [1, 1, 1, 1]
    masked = [i for i, m in zip(out["input_ids"], out["completion_mask"]) if m]
    assert tok.decode(masked) == "yo</s>\n"
    assert tok.decode(out["input_ids"]) == tok.apply_chat_template([user("hi"), assistant("yo")], tokenize=False)


def test_sft_string_completion_to_chat_prompt_is_rendered_as_assistant_turn(tok):
    enc = Encoder(tok, max_length=128)
    as_str = enc.sft(SFTRow(prompt=[user("q")], completion="ans"))
    as_msg = enc.sft(SFTRow(prompt=[user("q")], completion=[assistant("ans")]))
    assert as_str == as_msg
    assert render_completion(tok, "q", [assistant("ans")]) == "ans</s>\n"
    assert render_prompt(tok, "plain") == "plain"


def test_sft_multi_turn_prompt(tok):
    prompt = [{"role": "system", "content": "S"}, user("a"), assistant("b"), user("c")]
    out = Encoder(tok, 256).sft(SFTRow(prompt=prompt, completion=[assistant("d")]))
    masked = [i for i, m in zip(out["input_ids"], out["completion_mask"]) if m]
    assert masked == b("d") + [EOS, NL]
    assert tok.decode(out["prompt_ids"]).endswith("<|user|>\nc</s>\n<|assistant|>\n")


# -- truncation ----------------------------------------------------------------------------------

def test_truncation_drop_raises_too_long(tok):
    row = SFTRow(prompt="abcdef", completion="xyz", where="data.jsonl:3")  # 7 + 4 = 11 tokens
    assert len(Encoder(tok, 11, "drop").sft(row)["input_ids"]) == 11  # exactly fits
    with pytest.raises(TooLong):
        Encoder(tok, 10, "drop").sft(row)


def test_truncation_truncate_prompt_keeps_prompt_end_and_full_completion(tok):
    row = SFTRow(prompt="abcdef", completion="xyz", where="data.jsonl:3")
    out = Encoder(tok, 8, "truncate_prompt").sft(row)  # excess = 3: drop BOS, 'a', 'b'
    assert out["input_ids"] == b("cdef") + b("xyz") + [EOS]
    assert out["completion_mask"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert out["prompt_ids"] == b("cdef")
    # nothing of the prompt would remain -> still too long
    with pytest.raises(TooLong):
        Encoder(tok, 4, "truncate_prompt").sft(row)


def test_truncation_error_names_where(tok):
    row = SFTRow(prompt="abcdef", completion="xyz", where="data.jsonl:3")
    with pytest.raises(DataError) as info:
        Encoder(tok, 10, "error").sft(row)
    assert info.value.where == "data.jsonl:3"
    assert str(info.value) == (
        "data.jsonl:3: field 'completion': 11 tokens (7 prompt + 4 completion) exceed max_length=10"
    )


def test_prompt_encoder_truncation(tok):
    row = PromptRow(prompt="abcdef", where="p:9", meta={"k": 1})
    out = Encoder(tok, 16).prompt(row)
    assert out == {"input_ids": [BOS] + b("abcdef"), "prompt_ids": [BOS] + b("abcdef"), "prompt_text": "abcdef",
                   "meta": {"k": 1}}
    assert Encoder(tok, 3, "truncate_prompt").prompt(row)["input_ids"] == b("def")
    with pytest.raises(TooLong):
        Encoder(tok, 3, "drop").prompt(row)
    with pytest.raises(DataError, match=r"^p:9: field 'prompt': 7 tokens exceed max_length=3"):
        Encoder(tok, 3, "error").prompt(row)


# -- preference ----------------------------------------------------------------------------------

def test_preference(tok):
    row = PreferenceRow(prompt="Q", chosen="good", rejected="no", margin=2.0, soft_label=0.9, where="pf:1")
    out = Encoder(tok, 64).preference(row)
    assert out["chosen_input_ids"] == [BOS] + b("Q") + b("good") + [EOS]
    assert out["rejected_input_ids"] == [BOS] + b("Q") + b("no") + [EOS]
    assert out["chosen_completion_mask"] == [0, 0, 1, 1, 1, 1, 1]
    assert out["rejected_completion_mask"] == [0, 0, 1, 1, 1]
    assert out["prompt_ids"] == [BOS] + b("Q")
    assert (out["margin"], out["soft_label"], out["strength"], out["rating"]) == (2.0, 0.9, None, None)
    assert out["prompt_text"] == "Q"


def test_preference_chat_shares_the_prompt(tok):
    row = PreferenceRow(prompt=[user("q")], chosen=[assistant("yes")], rejected=[assistant("n")])
    out = Encoder(tok, 64).preference(row)
    p = len(out["prompt_ids"])
    assert out["chosen_input_ids"][:p] == out["rejected_input_ids"][:p] == out["prompt_ids"]
    assert out["chosen_input_ids"][p:] == b("yes") + [EOS, NL]
    assert out["rejected_input_ids"][p:] == b("n") + [EOS, NL]
    assert sum(out["chosen_completion_mask"]) == 5 and sum(out["rejected_completion_mask"]) == 3


def test_weak_label_encoding(tok):
    out = Encoder(tok, 16).weak(WeakLabelRow(text="ab", label=1), num_classes=3)
    assert out == {"input_ids": [BOS, 68, 69], "label": 1, "soft_label": [0.0, 1.0, 0.0]}
    with pytest.raises(DataError, match="has 2 classes, expected 3"):
        Encoder(tok, 16).weak(WeakLabelRow(text="ab", label=1, soft_label=[0.5, 0.5], where="w:1"), num_classes=3)
    assert Encoder(tok, 2, "truncate_prompt").weak(WeakLabelRow(text="abc", label=0), 2)["input_ids"] == [BOS, 68]


# -- steps ---------------------------------------------------------------------------------------

LABEL_OF = {1: 1, 0: 1, -1: 0}


def step_row():
    return StepRow(prompt="Q", steps=["a", "bc", "d", "e"], labels=[1, -1, 1, 0], where="s:1")


def test_steps_first_error(tok):
    out = Encoder(tok, 64).steps(step_row(), "\n", LABEL_OF, "first_error")
    # [BOS Q \n] [a \n] [b c \n] [d \n] [e \n]
    assert out["input_ids"] == [BOS] + b("Q\na\nbc\nd\ne\n")
    assert out["labels"] == [-100, -100, -100, -100, 1, -100, -100, 0, -100, -100, -100, -100]
    assert out["prompt_text"] == "Q"
    # every label sits on a separator token
    assert all(out["input_ids"][i] == NL for i, y in enumerate(out["labels"]) if y != -100)


def test_steps_all_and_last(tok):
    enc = Encoder(tok, 64)
    all_ = enc.steps(step_row(), "\n", LABEL_OF, "all")["labels"]
    sep_positions = [4, 7, 9, 11]
    assert [i for i, y in enumerate(all_) if y != -100] == sep_positions
    assert [all_[i] for i in sep_positions] == [1, 0, 1, 1]
    last = enc.steps(step_row(), "\n", LABEL_OF, "last")["labels"]
    assert [i for i, y in enumerate(last) if y != -100] == [11]
    assert last[11] == 1
    ignore = enc.steps(step_row(), "\n", {1: 1, 0: -100, -1: 0}, "all")["labels"]
    assert [ignore[i] for i in sep_positions] == [1, 0, 1, -100]


def test_steps_unlabelled_steps_and_multi_token_separator(tok):
    row = StepRow(prompt="Q", steps=["a", "b"], labels=[None, 1])
    out = Encoder(tok, 64).steps(row, " ;", LABEL_OF, "all")
    space = 4 + 188 + 32
    assert out["input_ids"] == [BOS, *b("Q"), space, *b(";a"), space, *b(";b"), space, *b(";")]
    assert len(out["input_ids"]) == 10
    assert out["labels"] == [-100] * 9 + [1]  # the last token of the last separator


def test_steps_empty_separator_and_too_long(tok):
    with pytest.raises(ValueError, match="tokenises to no tokens"):
        Encoder(tok, 64).steps(step_row(), "", LABEL_OF, "all")
    with pytest.raises(TooLong):
        Encoder(tok, 11).steps(step_row(), "\n", LABEL_OF, "all")
    with pytest.raises(DataError, match="^s:1: field 'completions': 12 tokens exceed max_length=11"):
        Encoder(tok, 11, "error").steps(step_row(), "\n", LABEL_OF, "all")


# -- Collator --------------------------------------------------------------------------------

def test_pad_left_and_right():
    assert pad([[1, 2, 3], [4]], 9).tolist() == [[1, 2, 3], [4, 9, 9]]
    assert pad([[1, 2, 3], [4]], 9, "left").tolist() == [[1, 2, 3], [9, 9, 4]]


def test_collator_right_padding():
    feats = [
        {"input_ids": [1, 5, 6, 7], "completion_mask": [0, 0, 1, 1], "labels": [-100, 3, 4, 5], "text": "a"},
        {"input_ids": [1, 8], "completion_mask": [0, 1], "labels": [2, 3], "text": "b"},
    ]
    out = Collator(pad_id=0)(feats)
    assert out["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert out["completion_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 3, 4, 5], [2, 3, -100, -100]]
    assert out["input_ids"].dtype == torch.long
    assert out["text"] == ["a", "b"]


def test_collator_uses_the_given_pad_id_and_left_padding():
    out = Collator(pad_id=7, padding_side="left")([{"input_ids": [1, 2, 3]}, {"input_ids": [4]}])
    assert out["input_ids"].tolist() == [[1, 2, 3], [7, 7, 4]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_collator_pairs_stack_chosen_first():
    feats = [
        {"chosen_input_ids": [1, 10, 11], "chosen_completion_mask": [0, 1, 1],
         "rejected_input_ids": [1, 20], "rejected_completion_mask": [0, 1],
         "margin": 1.5, "soft_label": None, "strength": None, "prompt_ids": [1], "prompt_text": "p0"},
        {"chosen_input_ids": [1, 30], "chosen_completion_mask": [0, 1],
         "rejected_input_ids": [1, 40, 41, 42], "rejected_completion_mask": [0, 1, 1, 1],
         "margin": None, "soft_label": None, "strength": 2, "prompt_ids": [1, 5], "prompt_text": "p1"},
    ]
    out = Collator(pad_id=0, pair_keys=("chosen", "rejected"))(feats)
    assert out["input_ids"].tolist() == [[1, 10, 11, 0], [1, 30, 0, 0], [1, 20, 0, 0], [1, 40, 41, 42]]
    assert out["completion_mask"].tolist() == [[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 1, 1]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert not any(k.startswith(("chosen_", "rejected_")) for k in out)
    assert out["margin"].dtype == torch.float32
    assert out["margin"][0].item() == 1.5 and math.isnan(out["margin"][1].item())
    assert out["strength"][1].item() == 2.0 and math.isnan(out["strength"][0].item())
    assert "soft_label" not in out  # None everywhere -> left out
    assert out["prompt_text"] == ["p0", "p1"]


def test_collator_labels_soft_labels_and_bools():
    feats = [{"input_ids": [1], "label": 2, "soft_label": [0.1, 0.9], "flag": True},
             {"input_ids": [1, 2], "label": 0, "soft_label": [1.0, 0.0], "flag": False}]
    out = Collator(pad_id=0)(feats)
    assert out["label"].dtype == torch.long and out["label"].tolist() == [2, 0]
    assert out["soft_label"].dtype == torch.float32
    torch.testing.assert_close(out["soft_label"], torch.tensor([[0.1, 0.9], [1.0, 0.0]]))
    assert out["flag"] == [True, False]  # bools are not numbers


def test_encoder_to_collator_sft_batch(tok):
    enc = Encoder(tok, 64)
    items = [enc.sft(SFTRow("ab", "c")), enc.sft(SFTRow("a", "bcd"))]
    out = Collator(tok.pad_token_id)(items)
    assert out["input_ids"].tolist() == [[BOS, 68, 69, 70, EOS, PAD], [BOS, 68, 69, 70, 71, EOS]]
    assert out["completion_mask"].tolist() == [[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]


# -- data modules (the path from a file to batches) ----------------------------------------------

def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_sft_datamodule_filters_too_long_rows_and_batches(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [
        {"prompt": "ab", "completion": "c"},
        {"prompt": "a" * 40, "completion": "b"},  # 43 tokens > 16: dropped and counted
        {"prompt": "abc", "completion": "de"},
    ])
    dm = SFTDataModule(train=train, tokenizer="lit-rlhf:tiny-llama", max_length=16, batch_size=2,
                       group_by_length=False)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 2
    assert sum(dm.filtered["train"].values()) == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (2, 7)
    assert sorted(batch["completion_mask"].sum(1).tolist()) == [2, 3]


def test_prompt_and_preference_datamodules(tmp_path):
    prompts = _jsonl(tmp_path / "p.jsonl", [{"prompt": "abc"}, {"prompt": "a"}])
    dm = PromptDataModule(train=prompts, tokenizer="lit-rlhf:tiny-llama", batch_size=2, group_by_length=False)
    out = dm.collator()(dm.dataset("train").items)
    assert out["input_ids"].tolist() == [[BOS, 68, 69, 70], [PAD, PAD, BOS, 68]]  # left padded
    prefs = _jsonl(tmp_path / "pref.jsonl", [{"prompt": "q", "chosen": "yes", "rejected": "n"}])
    pm = PreferenceDataModule(train=prefs, tokenizer="lit-rlhf:tiny-llama")
    batch = pm.collator()(pm.dataset("train").items)
    assert batch["input_ids"].tolist() == [[BOS, *b("qyes"), EOS], [BOS, *b("qn"), EOS, PAD, PAD]]
    assert pm.lengths(pm.dataset("train").items) == [6]
