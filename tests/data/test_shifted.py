"""Shifted-distribution responses for MetaRM: validation, encoding, the (G·K, T) batch layout, cycling."""

from __future__ import annotations

import itertools

import pytest
from conftest import write_jsonl

from lit_rlhf.data import DataError
from lit_rlhf.data.shifted import (
    CyclingBatchSampler,
    MetaRMDataModule,
    read_shifted_rows,
    shifted_row,
)

TOK = "lit-rlhf:tiny-llama"


GROUPS = [
    {"prompt": "1+2=", "responses": ["3", "4", "5"], "policy": "v2"},
    {"prompt": "2*3=", "responses": ["6", "5", "66"]},
    {"prompt": "9-4=", "responses": ["5", "13", "4"]},
]


def test_rows_keep_order_and_extra_fields(tmp_path):
    rows = read_shifted_rows(write_jsonl(tmp_path / "s.jsonl", GROUPS))
    assert [r.responses for r in rows] == [g["responses"] for g in GROUPS]
    assert rows[0].meta == {"policy": "v2"} and rows[2].where.endswith("s.jsonl:3")
    chat = shifted_row({"prompt": [{"role": "user", "content": "hi"}], "responses": ["a", "b"]}, "x:1")
    assert chat.prompt == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "bad, field, problem",
    [
        ({"prompt": "p", "responses": ["only one"]}, "responses", "at least 2 responses"),
        ({"prompt": "p", "responses": ["a", 7, "c"]}, "responses[1]", "got int"),
        ({"prompt": "p", "responses": ["a", "  ", "c"]}, "responses[1]", "empty string"),
        ({"prompt": "p", "responses": "a, b, c"}, "responses", "expected a list"),
        ({"prompt": "p"}, "responses", "missing"),
        ({"responses": ["a", "b", "c"]}, "prompt", "missing"),
        ({"prompt": "p", "responses": ["a", "b"]}, "responses", "same number (3, as at"),  # K differs from line 1
    ],
)
def test_malformed_record_names_file_line_and_field(tmp_path, bad, field, problem):
    path = write_jsonl(tmp_path / "s.jsonl", [GROUPS[0], GROUPS[1], bad])
    with pytest.raises(DataError) as info:
        read_shifted_rows(path)
    assert info.value.where == f"{path}:3" and info.value.field == field
    assert problem in str(info.value) and str(info.value).startswith(f"{path}:3: field '{field}'")


def test_batch_is_prompt_major_with_group_size(tmp_path, tok):
    dm = MetaRMDataModule(train=None, shifted=write_jsonl(tmp_path / "s.jsonl", GROUPS), tokenizer=TOK,
                          shifted_batch_size=2, max_length=32, seed=3)
    batch = next(iter(dm.shifted_dataloader()))
    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    assert batch["group_size"] == 3 and ids.shape[0] == 6 and ids.shape == attn.shape == comp.shape
    by_prompt = {g["prompt"]: g["responses"] for g in GROUPS}
    assert len(batch["prompt_text"]) == 2
    for g, prompt in enumerate(batch["prompt_text"]):
        for k in range(3):
            row = g * 3 + k  # response k of prompt g
            n = int(attn[row].sum())
            completion = tok.decode(ids[row][:n][comp[row][:n].bool()])
            assert tok.decode(ids[row][:n]).startswith(tok.bos_token + prompt)
            assert completion == by_prompt[prompt][k] + tok.eos_token


def test_groups_with_a_too_long_response_are_filtered_and_counted(tmp_path):
    groups = [*GROUPS, {"prompt": "1+1=", "responses": ["2", "x" * 200, "3"]}]
    dm = MetaRMDataModule(shifted=write_jsonl(tmp_path / "s.jsonl", groups), tokenizer=TOK, max_length=32)
    assert len(dm.shifted_dataset()) == 3
    assert sum(dm.filtered["shifted"].values()) == 1


def test_no_shifted_source_is_a_clear_error():
    with pytest.raises(ValueError, match="no shifted responses; set `shifted`"):
        MetaRMDataModule(tokenizer=TOK).shifted_dataloader()


def test_cycling_sampler_reshuffles_every_pass_and_never_ends():
    sampler = CyclingBatchSampler(10, batch_size=3, seed=5)
    batches = list(itertools.islice(iter(sampler), 9))  # three passes of 3 full batches (1 item dropped each)
    assert all(len(b) == 3 for b in batches)
    passes = [sum(batches[i:i + 3], []) for i in (0, 3, 6)]
    assert all(len(set(p)) == 9 for p in passes) and passes[0] != passes[1]
    assert batches == list(itertools.islice(iter(CyclingBatchSampler(10, 3, seed=5)), 9))  # seeded
    assert batches != list(itertools.islice(iter(CyclingBatchSampler(10, 3, seed=6)), 9))


def test_cycling_sampler_shards_over_ranks():
    shards = [set(sum(itertools.islice(iter(CyclingBatchSampler(8, 2, num_replicas=2, rank=r)), 2), []))
              for r in (0, 1)]
    assert shards[0].isdisjoint(shards[1]) and len(shards[0] | shards[1]) == 8
    with pytest.raises(ValueError, match="cannot draw batches of 3"):
        CyclingBatchSampler(4, 3, num_replicas=2)
