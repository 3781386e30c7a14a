"""Multi-turn chat SFT: loss masks per assistant turn, checked token by token for several templates."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import write_jsonl

from lit_rlhf.data import DataError, Encoder, SFTDataModule, SFTRow
from lit_rlhf.data.tokenize import chat_ids
from lit_rlhf.models import assets

BOS, EOS = "<s>", "</s>"
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DIALOGUE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "and?"},
    {"role": "assistant", "content": "done"},
]


def row(messages=DIALOGUE, where="chat.jsonl:7") -> SFTRow:
    """A ``messages`` row as the ``sft_messages`` adapter builds it: the last reply is the completion."""
    return SFTRow(prompt=messages[:-1], completion=messages[-1:], where=where)


def segments_to_ids(tok, segments):
    """Expected ``(ids, mask)`` from ``(text, trained)`` segments, each tokenised on its own."""
    ids, mask = [], []
    for text, trained in segments:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [int(trained)] * len(piece)
    return ids, mask


def default_segments(all_assistant: bool):
    """The byte tokenizer's default template, written out by hand."""
    return [
        (f"{BOS}<|system|>\nBe brief.{EOS}\n<|user|>\nhi{EOS}\n<|assistant|>\n", False),
        (f"yo{EOS}\n", all_assistant),
        (f"<|user|>\nand?{EOS}\n<|assistant|>\n", False),
        (f"done{EOS}\n", True),
    ]


def chatml_segments(all_assistant: bool):
    return [
        ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", False),
        ("yo<|im_end|>\n", all_assistant),
        ("<|im_start|>user\nand?<|im_end|>\n<|im_start|>assistant\n", False),
        ("done<|im_end|>\n", True),
    ]


@pytest.fixture(scope="module")
def chatml_tok(tok):
    chatml = copy.deepcopy(tok)
    chatml.chat_template = CHATML
    return chatml


@pytest.mark.parametrize("train_on", ["all_assistant", "last_assistant"])
@pytest.mark.parametrize("template", ["default", "chatml"])
def test_mask_covers_exactly_the_chosen_assistant_turns(tok, chatml_tok, template, train_on):
    tokenizer, segments = (tok, default_segments) if template == "default" else (chatml_tok, chatml_segments)
    expected_ids, expected_mask = segments_to_ids(tokenizer, segments(train_on == "all_assistant"))
    out = Encoder(tokenizer, 512).sft(row(), train_on)
    assert out["input_ids"] == expected_ids
    assert out["completion_mask"] == expected_mask  # token by token
    assert tokenizer.decode(out["input_ids"]) == tokenizer.apply_chat_template(DIALOGUE, tokenize=False)
    # the prompt ends with the last turn's generation header, as at inference time
    assert out["prompt_ids"] == tokenizer(out["prompt_text"], add_special_tokens=False)["input_ids"]
    assert out["input_ids"][: len(out["prompt_ids"])] == out["prompt_ids"]
    trained = [tokenizer.decode([i]) for i, m in zip(out["input_ids"], out["completion_mask"]) if m]
    assert "".join(trained).count("done") == 1 and ("yo" in "".join(trained)) == (train_on == "all_assistant")


def test_last_assistant_is_the_single_turn_behaviour(tok):
    """A two-message row gives the same ids and mask under both options (nothing earlier to train)."""
    short = row(DIALOGUE[1:3])
    enc = Encoder(tok, 128)
    assert enc.sft(short, "all_assistant") == enc.sft(short, "last_assistant") == enc.sft(short)


def test_chat_ids_reports_where_each_assistant_turn_starts(tok):
    ids, mask, starts = chat_ids(tok, DIALOGUE, [True] * len(DIALOGUE))
    assert len(starts) == 2
    for start in starts:
        assert mask[start - 1] == 0 and mask[start] == 1
        assert tok.decode(ids[:start]).endswith("<|assistant|>\n")
    assert sum(mask) == len(f"yo{EOS}\n") - len(EOS) + 1 + len(f"done{EOS}\n") - len(EOS) + 1


def test_truncate_prompt_cuts_the_front_of_ids_and_mask_together(tok):
    full = Encoder(tok, 512).sft(row(), "all_assistant")
    cut = Encoder(tok, len(full["input_ids"]) - 5, "truncate_prompt").sft(row(), "all_assistant")
    assert cut["input_ids"] == full["input_ids"][5:]
    assert cut["completion_mask"] == full["completion_mask"][5:]
    assert cut["prompt_ids"] == full["prompt_ids"][5:]


def test_template_that_breaks_the_prefix_property_is_a_clear_error(tok):
    broken = copy.deepcopy(tok)
    # renders the last message differently from earlier ones, so a prefix is not a prefix of the whole
    broken.chat_template = (
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    with pytest.raises(DataError, match=r"^chat.jsonl:7: field 'messages': the chat template breaks the prefix "
                                        r"property needed for loss masks: messages\[:3\] does not extend "
                                        r"the tokens rendered before it \(first difference at token 18"):
        Encoder(broken, 512).sft(row())


def test_completion_must_start_with_an_assistant_message(tok):
    bad = SFTRow(prompt=DIALOGUE[:2], completion=[DIALOGUE[3], DIALOGUE[4]], where="f:3")
    with pytest.raises(DataError, match=r"^f:3: field 'completion': must start with an assistant message"):
        Encoder(tok, 512).sft(bad)


def test_datamodule_train_on_all_assistant_trains_every_reply(tmp_path, tok):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": DIALOGUE}, {"messages": DIALOGUE[1:3]}])
    texts = {}
    for train_on in ("last_assistant", "all_assistant"):
        dm = SFTDataModule(train=path, tokenizer="lit-rlhf:tiny-llama", train_on=train_on, batch_size=2,
                           group_by_length=False)
        dm.setup("fit")
        batch = dm.collator()(dm.dataset("train").items)
        texts[train_on] = [tok.decode(ids[m.bool()]) for ids, m in zip(batch["input_ids"], batch["completion_mask"])]
        assert not batch["completion_mask"][batch["attention_mask"] == 0].any()
    assert texts["last_assistant"] == [f"done{EOS}\n", f"yo{EOS}\n"]
    assert texts["all_assistant"] == [f"yo{EOS}\ndone{EOS}\n", f"yo{EOS}\n"]
    with pytest.raises(ValueError, match="train_on must be"):
        Encoder(tok, 64).sft(row(), "every_turn")  # type: ignore[arg-type]


SMOLLM2 = assets.cache_dir() / "smollm2-135m-instruct"


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").is_file(),
                    reason=f"SmolLM2's converted tokenizer is not cached at {SMOLLM2} (run `lit-rlhf assets`)")
@pytest.mark.parametrize("train_on", ["all_assistant", "last_assistant"])
def test_smollm2_template_masks_match_character_spans(train_on):
    """SmolLM2's real ChatML template (BPE): a token is trained iff its characters lie in a trained reply."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2)
    text = tokenizer.apply_chat_template(DIALOGUE, tokenize=False)
    out = Encoder(tokenizer, 512).sft(row(), train_on)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert out["input_ids"] == enc["input_ids"]
    replies = ["yo<|im_end|>\n", "done<|im_end|>\n"][train_on == "last_assistant":]
    spans = []
    for reply in replies:
        start = text.index("<|im_start|>assistant\n" + reply) + len("<|im_start|>assistant\n")
        spans.append((start, start + len(reply)))
    expected = [int(any(a <= s and e <= b for a, b in spans)) for s, e in enc["offset_mapping"]]
    assert out["completion_mask"] == expected
    assert tokenizer.decode([i for i, m in zip(out["input_ids"], expected) if m]) == "".join(replies)
    assert torch.tensor([0, *expected, 0]).diff().abs().sum() == 2 * len(spans)  # one contiguous run per reply
