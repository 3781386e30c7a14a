"""The byte-level tokenizer: exact ids, special tokens, round-trips, saving and the chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lit_rlhf.models import load_tokenizer
from lit_rlhf.models.tokenizer import DEFAULT_CHAT_TEMPLATE

PAD, BOS, EOS, UNK = 0, 1, 2, 3


def ascii_id(ch: str) -> int:
    """Printable ASCII ``!``..``~`` are the first 94 byte symbols after the 4 specials: id = 4 + ord - ord('!')."""
    assert "!" <= ch <= "~"
    return 4 + ord(ch) - ord("!")


def test_vocabulary_and_special_ids(tok):
    assert len(tok) == 4 + 256
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (PAD, BOS, EOS, UNK)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == ("<pad>", "<s>", "</s>", "<unk>")


def test_ascii_ids_are_hand_computed(tok):
    # '!' is the first byte symbol (id 4); 'a' = 0x61 -> 4 + 0x61 - 0x21 = 68; '~' = 0x7E -> 97.
    assert tok("!a~", add_special_tokens=False)["input_ids"] == [4, 68, 97]
    assert tok("Hi", add_special_tokens=False)["input_ids"] == [ascii_id("H"), ascii_id("i")] == [43, 76]


def test_one_token_per_utf8_byte(tok):
    text = "héllo\n😀 世界"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert all(4 <= i < 260 for i in ids)
    # distinct bytes -> distinct ids, equal bytes -> equal ids
    raw = text.encode("utf-8")
    assert len({(b, i) for b, i in zip(raw, ids)}) == len(set(raw)) == len(set(ids))


@pytest.mark.parametrize(
    "text",
    ["plain ascii", "line one\nline two\n\n", "tabs\tand  spaces ", "emoji 😀🎉👍🏽 and 中文, ñ, é", "\x00\x7f\xff", "",
     "  leading and trailing  "],
)
def test_round_trip(tok, text):
    ids = tok(text)["input_ids"]
    assert ids[0] == BOS
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_bos_only_with_special_tokens(tok):
    with_special = tok("abc")["input_ids"]
    without = tok("abc", add_special_tokens=False)["input_ids"]
    assert without == [68, 69, 70]
    assert with_special == [BOS, 68, 69, 70]
    assert EOS not in with_special  # EOS is never added automatically
    assert tok("")["input_ids"] == [BOS]
    assert tok("", add_special_tokens=False)["input_ids"] == []


def test_special_token_strings_map_to_their_ids(tok):
    assert tok("a</s>", add_special_tokens=False)["input_ids"] == [68, EOS]
    assert tok.decode([BOS, 68, EOS, PAD]) == "<s>a</s><pad>"
    assert tok.decode([BOS, 68, EOS, PAD], skip_special_tokens=True) == "a"


def test_save_and_auto_reload_gives_identical_ids(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == len(tok)
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id, again.unk_token_id) == (PAD, BOS, EOS, UNK)
    for text in ["hello world", "a\nb\n😀", "ünïcödé</s>"]:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
        assert again(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert again.chat_template == DEFAULT_CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "x"}]
    assert again.apply_chat_template(msgs, tokenize=False) == tok.apply_chat_template(msgs, tokenize=False)


def test_chat_template_exact_string(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<s><|system|>\nBe brief.</s>\n<|user|>\nHi?</s>\n<|assistant|>\nHello!</s>\n"
    )
    assert tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True) == (
        "<s><|system|>\nBe brief.</s>\n<|user|>\nHi?</s>\n<|assistant|>\n"
    )


def test_chat_template_eos_is_the_eos_token(tok):
    text = tok.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    # BOS, then "<|user|>\n" (9 bytes), then 'a', then EOS, then '\n' (byte 0x0A)
    assert ids[0] == 1
    assert ids[10:12] == [68, EOS]
    assert tok.decode(ids[-1:]) == "\n"
    assert ids.count(EOS) == 1


def test_load_tokenizer_for_tiny_llama_is_the_byte_tokenizer():
    tok = load_tokenizer("lit-rlhf:tiny-llama")
    assert len(tok) == 260
    # space (0x20) is a non-printable byte: the 188 printable symbols come first, then bytes 0x00.. -> 4 + 188 + 32
    assert tok("a b")["input_ids"] == [BOS, 68, 224, 69]
    assert tok("\n", add_special_tokens=False)["input_ids"] == [4 + 188 + 10]
