"""Data modules: file and task sources through setup, batches, filtering, errors and eval prompts."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import torch
from conftest import write_jsonl

from lit_rlhf.data import (
    DataError,
    PreferenceDataModule,
    SFTDataModule,
    StepLabelDataModule,
    WeakLabelDataModule,
)
from lit_rlhf.tasks import Arithmetic

TOK = "lit-rlhf:tiny-llama"


def chat(*turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, turns)]}


CHATS = [
    chat("What is 2+3?", "5"),
    chat("Name a colour.", "Teal."),
    chat("Hi!", "Hello there.", "How are you?", "Fine, thanks."),  # multi-turn: only the last reply is learned
    chat("Spell cat.", "c-a-t"),
]
FINAL_REPLIES = ["5", "Teal.", "Fine, thanks.", "c-a-t"]


def one_batch(loader) -> dict:
    return next(iter(loader))


# -- SFT from chat jsonl ------------------------------------------------------------------------

def test_sft_chat_jsonl_batch_supervises_only_the_final_assistant_reply(tmp_path, tok):
    train = write_jsonl(tmp_path / "train.jsonl", CHATS)
    val = write_jsonl(tmp_path / "val.jsonl", CHATS[:2])
    dm = SFTDataModule(train=train, val=val, tokenizer=TOK, batch_size=len(CHATS), max_length=128)
    dm.setup("fit")
    assert len(dm.dataset("train")) == 4 and len(dm.dataset("val")) == 2
    batch = one_batch(dm.train_dataloader())
    ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    assert ids.shape == attn.shape == comp.shape and ids.shape[0] == 4
    assert ids.dtype == attn.dtype == comp.dtype == torch.long
    assert not comp[attn == 0].any()  # padding is never a target
    assert (ids[attn == 0] == tok.pad_token_id).all()

    learned = []
    for row_ids, row_attn, row_comp in zip(ids, attn, comp):
        n = int(row_attn.sum())
        assert row_attn[:n].all()  # right padding
        positions = row_comp.nonzero().flatten()
        # the completion is one contiguous block at the end of the real tokens
        assert positions.tolist() == list(range(n - len(positions), n))
        learned.append(tok.decode(row_ids[positions]))
        prompt = tok.decode(row_ids[: n - len(positions)])
        assert prompt.endswith("<|assistant|>\n") and prompt.startswith("<s><|user|>\n")
    # exactly the final assistant turn (its text, EOS and the template's newline), once per row
    assert sorted(learned) == sorted(f"{r}</s>\n" for r in FINAL_REPLIES)
    # the earlier assistant turn of the multi-turn dialogue is context, not a target
    multi = next(i for i, t in enumerate(learned) if t.startswith("Fine"))
    real = ids[multi][attn[multi].bool()]
    context = tok.decode(real[~comp[multi][attn[multi].bool()].bool()])
    assert "<|assistant|>\nHello there.</s>\n<|user|>\nHow are you?" in context


def test_chat_prompt_ids_have_a_single_bos(tmp_path, tok):
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", CHATS), tokenizer=TOK, max_length=128)
    dm.setup("fit")
    for item in dm.dataset("train").items:
        assert item["input_ids"][0] == tok.bos_token_id and item["input_ids"][1] != tok.bos_token_id
        assert item["input_ids"][: len(item["prompt_ids"])] == item["prompt_ids"]


# -- parquet source -------------------------------------------------------------------------------

def test_sft_parquet_source(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"prompt": ["1+1=", "2+2=", "3+3="], "completion": ["2", "4", "6"], "source": ["a", "b", "c"]}
    path = tmp_path / "sft.parquet"
    pq.write_table(pa.table(rows), path)
    dm = SFTDataModule(train=str(path), val=str(path), tokenizer=TOK, batch_size=3, group_by_length=False)
    dm.setup("fit")
    read = dm.read("train")
    assert [r.where for r in read] == [f"{path}:row {i}" for i in range(3)]
    assert [r.meta for r in read] == [{"source": s} for s in rows["source"]]
    items = dm.dataset("train").items
    for item, prompt, completion in zip(items, rows["prompt"], rows["completion"]):
        ids, mask = item["input_ids"], item["completion_mask"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode([i for i, m in zip(ids, mask) if m]) == completion + "</s>"
        assert tok.decode(item["prompt_ids"], skip_special_tokens=True) == prompt
    batch = one_batch(dm.val_dataloader())
    assert batch["input_ids"].shape[0] == 3 and batch["prompt_text"] == rows["prompt"]
    assert batch["completion_mask"].sum(1).tolist() == [2, 2, 2]  # one digit + EOS


# -- preference from a task -----------------------------------------------------------------------

def test_task_preference_batch_has_chosen_then_rejected_rows(tok):
    task = Arithmetic(min_steps=2, max_steps=3)
    dm = PreferenceDataModule(task=task, task_sizes={"train": 16, "val": 4, "test": 4}, tokenizer=TOK,
                              batch_size=4, max_length=96)
    dm.setup("fit")
    batch = one_batch(dm.train_dataloader())
    B = 4
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert batch[key].shape[0] == 2 * B, key
    assert len(batch["prompt_text"]) == B and batch["soft_label"].shape == (B,)
    assert torch.equal(batch["soft_label"], torch.ones(B))
    ids, comp, attn = batch["input_ids"], batch["completion_mask"], batch["attention_mask"]
    completions = [tok.decode(ids[i][comp[i].bool()], skip_special_tokens=True) for i in range(2 * B)]
    prompts = [tok.decode(ids[i][(attn[i] - comp[i]).bool()], skip_special_tokens=True) for i in range(2 * B)]
    assert prompts[:B] == prompts[B:] == batch["prompt_text"]  # row i and row B+i share the prompt
    assert task.reward(batch["prompt_text"], completions[:B]).tolist() == [1.0] * B  # chosen: correct
    assert task.reward(batch["prompt_text"], completions[B:]).tolist() == [0.0] * B  # rejected: wrong answer


# -- errors and filtering -------------------------------------------------------------------------

def test_malformed_jsonl_row_raises_data_error_at_setup(tmp_path):
    rows = [{"prompt": "1+1=", "completion": "2"}, {"prompt": "2+2=", "completion": 4}]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    dm = SFTDataModule(train=path, tokenizer=TOK)  # nothing is read before setup
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert message.startswith(f"{path}:2: field 'completion'"), message
    assert "got int" in message
    assert (err.value.where, err.value.field) == (f"{path}:2", "completion")


def test_malformed_chat_row_names_the_nested_field(tmp_path):
    rows = [CHATS[0], {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}]
    path = write_jsonl(tmp_path / "bad_chat.jsonl", rows)
    with pytest.raises(DataError, match=rf"^{path}:2: field 'messages\[1\]\.role': unknown role 'bot'"):
        SFTDataModule(train=path, tokenizer=TOK).setup("fit")


def test_over_length_rows_are_filtered_counted_and_reported(tmp_path, caplog):
    rows = [{"prompt": f"{i}+1=", "completion": str(i + 1)} for i in range(3)]
    rows.insert(1, {"prompt": "long:", "completion": "x" * 200})
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", rows), tokenizer=TOK, max_length=32)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert dm.filtered["train"] == Counter({"longer than max_length=32": 1})
    assert len(dm.dataset("train")) == 3
    assert [x["prompt_text"] for x in dm.dataset("train").items] == ["0+1=", "1+1=", "2+1="]
    assert "train: kept 3 of 4 rows; filtered: 1 longer than max_length=32" in caplog.text


def test_every_row_too_long_is_an_error(tmp_path):
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", [{"prompt": "p", "completion": "y" * 50}]),
                       tokenizer=TOK, max_length=16)
    with pytest.raises(ValueError, match="no 'train' rows left after filtering"):
        dm.setup("fit")
    assert dm.filtered["train"] == Counter({"longer than max_length=16": 1})


def test_no_train_source_and_no_task_is_a_clear_error():
    dm = SFTDataModule(tokenizer=TOK)
    with pytest.raises(ValueError, match="SFTDataModule: no 'train' source and no task to generate it"):
        dm.setup("fit")


def test_no_tokenizer_and_no_trainer_is_a_clear_error(tmp_path):
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", CHATS))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        dm.setup("fit")


def test_train_file_only_has_no_val_loader(tmp_path):
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", CHATS), tokenizer=TOK)
    dm.setup("fit")
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []
    assert "val" not in dm.datasets


# -- step labels ----------------------------------------------------------------------------------

def test_step_labels_sit_on_separators_up_to_the_first_error(tok):
    task = Arithmetic(min_steps=2, max_steps=4)
    dm = StepLabelDataModule(task=task, task_sizes={"train": 48, "val": 4, "test": 4}, tokenizer=TOK,
                             supervise="first_error", max_length=160, batch_size=48)
    dm.setup("fit")
    assert not dm.filtered["train"]
    sep = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(sep) == 1
    rows, items = dm.read("train"), dm.dataset("train").items
    with_error = 0
    for row, item in zip(rows, items):
        ids, labels = item["input_ids"], item["labels"]
        assert len(ids) == len(labels)
        labelled = [i for i, y in enumerate(labels) if y != -100]
        assert all(ids[i] == sep[0] for i in labelled), row
        first = row.meta["first_error"]
        assert first == (row.labels.index(-1) if -1 in row.labels else None)
        if first is None:
            assert [labels[i] for i in labelled] == [1] * len(row.steps)
        else:
            with_error += 1
            # correct steps before the first error are 1, the first wrong step is 0, nothing after it
            assert [labels[i] for i in labelled] == [1] * first + [0]
            assert all(y == -100 for y in labels[labelled[-1] + 1:])
    assert 0 < with_error < len(rows)  # both kinds of rows were checked

    batch = one_batch(dm.train_dataloader())
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    on = batch["labels"] != -100
    assert (batch["input_ids"][on] == sep[0]).all() and set(batch["labels"][on].tolist()) == {0, 1}


# -- weak labels ----------------------------------------------------------------------------------

def test_weak_label_soft_labels_batch(tmp_path):
    rows = [
        {"text": "great movie", "label": 1, "soft_label": [0.1, 0.9]},
        {"text": "terrible plot and acting", "label": 0, "soft_label": 0.25},  # float = P(class 1)
        {"text": "fine", "label": 1},  # no soft label: one-hot of the hard label
    ]
    dm = WeakLabelDataModule(train=write_jsonl(tmp_path / "w.jsonl", rows), tokenizer=TOK, batch_size=3,
                             group_by_length=False)
    dm.setup("fit")
    batch = next(iter(torch.utils.data.DataLoader(dm.dataset("train"), batch_size=3, collate_fn=dm.collator())))
    assert batch["soft_label"].dtype == torch.float32 and batch["soft_label"].shape == (3, 2)
    assert torch.allclose(batch["soft_label"], torch.tensor([[0.1, 0.9], [0.75, 0.25], [0.0, 1.0]]))
    assert batch["label"].dtype == torch.long and batch["label"].tolist() == [1, 0, 1]
    assert batch["input_ids"].shape[0] == 3 and batch["attention_mask"].sum(1).tolist() == [12, 25, 5]
    shuffled = one_batch(dm.train_dataloader())
    assert shuffled["soft_label"].shape == (3, 2)


def test_weak_label_soft_label_with_wrong_class_count_names_the_row(tmp_path):
    rows = [{"text": "a", "label": 0, "soft_label": [0.2, 0.3, 0.5]}]
    path = write_jsonl(tmp_path / "w.jsonl", rows)
    dm = WeakLabelDataModule(train=path, tokenizer=TOK, num_classes=2)
    with pytest.raises(DataError, match=rf"^{path}:1: field 'soft_label': has 3 classes, expected 2"):
        dm.setup("fit")


# -- evaluation prompts ---------------------------------------------------------------------------

def test_eval_prompts_are_the_rendered_prompts(tmp_path, tok):
    dm = SFTDataModule(train=write_jsonl(tmp_path / "t.jsonl", CHATS), val=write_jsonl(tmp_path / "v.jsonl", CHATS),
                       tokenizer=TOK)
    dm.setup("fit")
    expected = [tok.apply_chat_template(c["messages"][:-1], tokenize=False, add_generation_prompt=True) for c in CHATS]
    assert dm.eval_prompts() == expected
    assert dm.eval_prompts("val", limit=2) == expected[:2]
    assert expected[0] == "<s><|user|>\nWhat is 2+3?</s>\n<|assistant|>\n"


def test_eval_prompts_of_a_task_are_its_problems():
    task = Arithmetic(min_steps=1, max_steps=2)
    dm = SFTDataModule(task=task, task_sizes={"train": 8, "val": 5, "test": 5}, tokenizer=TOK)
    dm.setup("fit")
    prompts = dm.eval_prompts("val")
    assert prompts == [p.prompt for p in task.problems("val", 5, seed=1)]
    assert all(p.endswith("=") and Arithmetic.solve(p) >= 0 for p in prompts)
    assert dm.eval_prompts("train", limit=3) == [p.prompt for p in task.problems("train", 3, seed=0)]


def test_a_data_module_must_define_encode():
    from lit_rlhf.data import RowDataModule

    class NoEncode(RowDataModule):
        kind = "sft"

    with pytest.raises(TypeError, match="abstract method.*encode"):
        NoEncode()
    assert SFTDataModule(task=Arithmetic()).kind == "sft"  # the concrete ones define it
