"""Unpaired (KTO) data: TRL's prompt/completion/label rows, pairs split in two, mismatched KL pairs, bad labels."""

import json

import pytest

from lit_rlhf.data import DataError, UnpairedPreferenceDataModule, UnpairedRow, read_rows
from lit_rlhf.data.collate import mismatched_pairs
from lit_rlhf.tasks import get_task


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_trl_unpaired_rows(tmp_path):
    f = _write(tmp_path / "u.jsonl", [{"prompt": "2+2=", "completion": "4", "label": True},
                                      {"prompt": "2+2=", "completion": "5", "label": 0, "source": "x"}])
    rows = read_rows(f, "unpaired")
    assert rows == [
        UnpairedRow("2+2=", "4", True, f"{f}:1"), UnpairedRow("2+2=", "5", False, f"{f}:2", {"source": "x"})
    ]


def test_pairs_become_a_desirable_and_an_undesirable_row(tmp_path):
    f = _write(tmp_path / "p.jsonl", [{"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 1.0}])
    rows = read_rows(f, "unpaired")
    assert [(r.prompt, r.completion, r.label) for r in rows] == [("Q", "good", True), ("Q", "bad", False)]
    assert all(r.where == f"{f}:1" for r in rows)


@pytest.mark.parametrize("label", ["yes", 2, None])
def test_bad_label_is_located(tmp_path, label):
    f = _write(tmp_path / "bad.jsonl", [{"prompt": "Q", "completion": "a", "label": True},
                                        {"prompt": "Q", "completion": "b", "label": label}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'label'"):
        read_rows(f, "unpaired")


def test_mismatched_pairs_cycle_completions():
    rows = [{"input_ids": [1, 2, 10, 11], "completion_mask": [0, 0, 1, 1], "prompt_ids": [1, 2]},
            {"input_ids": [3, 20], "completion_mask": [0, 1], "prompt_ids": [3]},
            {"input_ids": [4, 5, 6, 30, 31, 32], "completion_mask": [0, 0, 0, 1, 1, 1], "prompt_ids": [4, 5, 6]}]
    out = mismatched_pairs(rows, max_length=5)
    assert out[0] == {"input_ids": [1, 2, 20], "completion_mask": [0, 0, 1]}
    assert out[1] == {"input_ids": [3, 30, 31, 32], "completion_mask": [0, 1, 1, 1]}
    assert out[2] == {"input_ids": [4, 5, 6, 10, 11], "completion_mask": [0, 0, 0, 1, 1]}
    assert mismatched_pairs(rows[:1], 9) == [{"input_ids": [1, 2, 10, 11], "completion_mask": [0, 0, 1, 1]}]
    assert mismatched_pairs(rows, max_length=4)[2] == {"input_ids": [4, 5, 6, 10], "completion_mask": [0, 0, 0, 1]}


def test_datamodule_batches_and_task_rows(tok):
    task = get_task("arithmetic", min_steps=1, max_steps=2)
    dm = UnpairedPreferenceDataModule(task=task, task_sizes={"train": 6, "val": 4}, tokenizer=None, batch_size=4)
    dm.tokenizer = tok
    assert dm.label_counts("train") == (6, 6)  # every generated pair gives one row of each
    batch = dm.collator()(dm.dataset("train").items[:4])
    assert batch["kl_input_ids"].shape[0] == 4 and batch["label"] == [True, False, True, False]
    with pytest.raises(ValueError, match="batch_size"):
        UnpairedPreferenceDataModule(task=task, batch_size=1)
