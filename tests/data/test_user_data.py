"""The data path a user walks with their own files (issue: "any data, and back out").

Each test reproduces a failure of the earlier data layer: duplicated keys kept silently, compressed bytes
read as text, ``datasets`` folders and objects refused, unknown rating levels passing validation, a
missing local name tried on the Hub, validation rows silently taken from a config's synthetic task, and an
integer ``val_check_interval`` longer than a small file's epoch.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import sys
import types

import lightning as L
import pytest
from conftest import write_jsonl

from lit_rlhf.data import PreferenceDataModule, SFTDataModule, WeakLabelDataModule
from lit_rlhf.data.schemas import DataError, PreferenceRow
from lit_rlhf.data.sources import read_rows
from lit_rlhf.tasks import Arithmetic

TOK = "lit-rlhf:tiny-llama"
PAIR = {"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}
PAIR_TEXT = json.dumps(PAIR) + "\n"


# -- duplicated keys and headers ------------------------------------------------------------------

def test_duplicated_json_key_is_a_located_error(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(PAIR_TEXT + '{"prompt": "1+1=", "chosen": " 2", "rejected": " 3", "chosen": " 11"}\n')
    with pytest.raises(DataError, match=rf"^{path}:2: field 'chosen': the key appears twice in one object"):
        read_rows(path, "preference")


def test_duplicated_key_inside_a_chat_message_names_the_nested_field(tmp_path):
    path = tmp_path / "pairs.json"
    message = '{"role": "assistant", "content": "4", "content": "5"}'
    path.write_text(f'[{PAIR_TEXT.strip()},\n {{"prompt": "2+2=", "chosen": [{message}], "rejected": " 5"}}]')
    with pytest.raises(DataError, match=rf"^{path}\[1\]: field 'chosen\[0\]\.content': the key appears twice"):
        read_rows(path, "preference")


def test_duplicated_csv_header_is_a_located_error(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected,chosen\n2+2=,4,5,6\n")
    with pytest.raises(DataError, match=rf"^{path}:1: field 'chosen': two header cells have this name"):
        read_rows(path, "preference")


def test_duplicated_parquet_column_is_a_located_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["p"]), pa.array(["a"]), pa.array(["b"]), pa.array(["c"])],
                                        names=["prompt", "chosen", "rejected", "chosen"]), path)
    with pytest.raises(DataError, match=rf"^{path}: field 'chosen': two columns have this name"):
        read_rows(path, "preference")


# -- compressed bytes, whatever the name ----------------------------------------------------------

@pytest.mark.parametrize(("name", "compress"), [
    ("pairs.jsonl", gzip.compress), ("pairs.jsonl.gz", gzip.compress), ("pairs.jsonl", bz2.compress),
    ("pairs.jsonl.xz", lzma.compress),
])
def test_compressed_jsonl_is_read_by_its_bytes(tmp_path, name, compress):
    path = tmp_path / name
    path.write_bytes(compress((PAIR_TEXT * 2).encode()))
    rows = read_rows(path, "preference")
    assert [(r.where, r.prompt, r.chosen) for r in rows] == [(f"{path}:1", "2+2=", " 4"), (f"{path}:2", "2+2=", " 4")]


def test_compressed_json_and_csv_are_read_by_their_bytes(tmp_path):
    json_path, csv_path = tmp_path / "pairs.json", tmp_path / "pairs.csv.bz2"
    json_path.write_bytes(gzip.compress(json.dumps([PAIR, {**PAIR, "chosen": " four"}]).encode()))
    csv_path.write_bytes(bz2.compress(b"prompt,chosen,rejected,margin\n2+2=, 4, 5,1.5\n"))
    assert [(r.where, r.chosen) for r in read_rows(json_path, "preference")] == [
        (f"{json_path}[0]", " 4"), (f"{json_path}[1]", " four")]
    assert read_rows(csv_path, "preference") == [PreferenceRow("2+2=", " 4", " 5", margin=1.5, where=f"{csv_path}:2")]


def test_damaged_gzip_file_is_a_located_error(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(gzip.compress((PAIR_TEXT * 50).encode())[:-30])
    with pytest.raises(DataError, match=rf"^{path}: cannot decompress \(gzip\)"):
        read_rows(path, "preference")


def test_zstd_without_its_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails as if not installed
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 16)
    with pytest.raises(DataError, match=rf"^{path}: zstd-compressed; reading it needs `pip install zstandard`"):
        read_rows(path, "preference")


# -- `datasets` folders and objects ---------------------------------------------------------------

def _dataset_dict():
    datasets = pytest.importorskip("datasets")
    train = datasets.Dataset.from_list([PAIR, {"prompt": "3+3=", "chosen": " 6", "rejected": " 7"}])
    return datasets.DatasetDict(train=train, validation=train.select([1]))


def test_save_to_disk_folders_are_sources(tmp_path):
    dd = _dataset_dict()
    dd.save_to_disk(tmp_path / "dd")
    dd["train"].save_to_disk(tmp_path / "ds")
    folder = tmp_path / "dd"
    assert [(r.where, r.chosen) for r in read_rows(folder, "preference", split="validation")] == [
        (f"{folder}[validation]#0", " 6")]
    assert [r.where for r in read_rows(f"{folder}:train", "preference")] == [f"{folder}[train]#0", f"{folder}[train]#1"]
    assert [r.chosen for r in read_rows(tmp_path / "ds", "preference")] == [" 4", " 6"]
    with pytest.raises(DataError, match=rf"^{folder}: no split 'test'; the splits are \['train', 'validation'\]"):
        read_rows(folder, "preference", split="test")


def test_dataset_objects_are_sources_of_a_data_module():
    dd = _dataset_dict()
    assert [r.where for r in read_rows(dd["train"], "preference")] == ["Dataset[train]#0", "Dataset[train]#1"]
    dm = PreferenceDataModule(train=dd["train"], val=dd, tokenizer=TOK, batch_size=2, max_length=32)
    dm.setup("fit")
    assert [r.chosen for r in dm.read("train")] == [" 4", " 6"]
    assert [(r.where, r.chosen) for r in dm.read("val")] == [("DatasetDict[validation]#0", " 6")]  # "val" finds it
    assert len(dm.dataset("val")) == 1


def test_a_data_module_reads_a_save_to_disk_folder_named_in_a_config(tmp_path):
    _dataset_dict().save_to_disk(tmp_path / "dd")
    dm = PreferenceDataModule(train=f"{tmp_path / 'dd'}:train", val=str(tmp_path / "dd"), tokenizer=TOK)
    assert [r.chosen for r in dm.read("train")] == [" 4", " 6"] and [r.chosen for r in dm.read("val")] == [" 6"]


# -- names that are neither a local file nor a loadable dataset -----------------------------------

@pytest.mark.parametrize("name", ["mydata", "data/pairs"])
def test_missing_name_with_the_hub_unreachable_says_no_such_file_or_folder(monkeypatch, name):
    def offline(*args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(FileNotFoundError, match=rf"^{name}: no such file or folder, and no Hugging Face dataset"):
        read_rows(name, "preference")


def test_missing_file_is_a_located_data_error_the_cli_reports_with_status_2(tmp_path, capsys):
    from lit_rlhf.cli import main

    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"^{missing}: no such file or folder"):
        read_rows(missing, "preference")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model=RewardModel", "--data=PreferenceDataModule", f"--data.train={missing}",
              "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=1"])
    assert exit_info.value.code == 2
    assert f"{missing}: no such file or folder" in capsys.readouterr().err


# -- rating levels --------------------------------------------------------------------------------

def _rated(tmp_path, ratings):
    return write_jsonl(tmp_path / "rated.jsonl", [{**PAIR, "rating": r} for r in ratings])


def test_unknown_rating_level_is_a_located_error_at_validation(tmp_path):
    path = _rated(tmp_path, ["better", "Significantly better", "sligthly better"])
    dm = PreferenceDataModule(train=path, tokenizer=TOK)
    with pytest.raises(DataError, match=rf"^{path}:3: field 'rating': unknown rating level 'sligthly better'"):
        dm.read("train")


def test_own_rating_levels_and_no_check(tmp_path):
    path = _rated(tmp_path, ["A", "b"])
    assert [r.rating for r in PreferenceDataModule(train=path, rating_levels=["a", "B"]).read("train")] == ["A", "b"]
    assert len(PreferenceDataModule(train=path, rating_levels=None).read("train")) == 2
    with pytest.raises(DataError, match=r":1: field 'rating': unknown rating level 'A'"):
        PreferenceDataModule(train=path).read("train")


# -- where validation rows come from --------------------------------------------------------------

def _sft_file(tmp_path, n=20):
    return write_jsonl(tmp_path / "sft.jsonl", [{"prompt": f"{i}+1=", "completion": f"{i + 1}"} for i in range(n)])


def test_own_train_file_next_to_a_task_holds_out_validation_rows_and_says_so(tmp_path, caplog):
    path = _sft_file(tmp_path)
    dm = SFTDataModule(train=path, task=Arithmetic(), task_sizes={"val": 500}, tokenizer=TOK, val_split=0.1)
    with pytest.warns(UserWarning, match=r"val = 2 rows held out of the training rows \(.*sft\.jsonl, val_split=0\.1"):
        dm.setup("fit")
    train, val = dm.read("train"), dm.read("val")
    assert (len(train), len(val)) == (18, 2)
    assert {r.where for r in train}.isdisjoint(r.where for r in val)
    assert all(r.where.startswith(path) for r in train + val)  # nothing generated by the task
    assert "test = none" in dm.describe_sources() and "gold reward / grader = Arithmetic" in dm.describe_sources()


@pytest.mark.parametrize(("val_from", "val_rows"), [("task", 7), ("none", None)])
def test_val_from_task_or_none_on_request(tmp_path, val_from, val_rows):
    dm = SFTDataModule(train=_sft_file(tmp_path), task=Arithmetic(), task_sizes={"val": 7}, tokenizer=TOK,
                       val_from=val_from)
    dm.setup("fit")
    assert len(dm.read("train")) == 20
    assert (len(dm.read("val")) if dm.has_split("val") else None) == val_rows
    assert dm.val_dataloader() == [] if val_rows is None else len(dm.val_dataloader().dataset) == 7


def test_task_only_and_file_only_keep_their_validation(tmp_path, caplog):
    dm = SFTDataModule(task=Arithmetic(), task_sizes={"train": 8, "val": 3, "test": 3}, tokenizer=TOK)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    assert (len(dm.read("train")), len(dm.read("val"))) == (8, 3)
    assert "train = generated by task Arithmetic (8 rows); val = generated by task Arithmetic (3 rows)" in caplog.text
    alone = SFTDataModule(train=_sft_file(tmp_path), tokenizer=TOK)
    alone.setup("fit")
    assert len(alone.read("train")) == 20 and not alone.has_split("val")


def test_validation_split_of_size_zero_is_no_split_not_a_filtering_error(tmp_path):
    """``task_sizes: {val: 0}`` (configs/w2s_synthetic.yaml) means "no validation", not "all filtered"."""
    dm = WeakLabelDataModule(task=Arithmetic(), task_sizes={"train": 8, "val": 0, "test": 2}, tokenizer=TOK)
    dm.setup("fit")
    assert not dm.has_split("val") and dm.val_dataloader() == []
    path = write_jsonl(tmp_path / "weak.jsonl", [{"txt": f"t{i}", "hard_label": i % 2} for i in range(20)])
    with_file = WeakLabelDataModule(train=path, task=Arithmetic(), task_sizes={"val": 0}, tokenizer=TOK)
    with pytest.warns(UserWarning, match="val = 1 rows held out"):
        with_file.setup("fit")


def test_held_out_from_one_row_is_a_clear_error(tmp_path):
    dm = SFTDataModule(train=_sft_file(tmp_path, 1), task=Arithmetic(), tokenizer=TOK)
    with pytest.raises(DataError, match=r"sft\.jsonl: 1 row\(s\): too few to hold out validation rows"):
        dm.setup("fit")


# -- integer val_check_interval longer than a small file's epoch ----------------------------------

def test_val_check_interval_longer_than_the_epoch_validates_at_its_end(tmp_path, tiny_spec, caplog):
    from lit_rlhf.modules import SFT

    path = _sft_file(tmp_path)
    dm = SFTDataModule(train=path, val=path, batch_size=8)
    trainer = L.Trainer(max_steps=4, val_check_interval=100, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path)
    with caplog.at_level(logging.INFO):
        trainer.fit(SFT(model=tiny_spec), datamodule=dm)
    assert "val_check_interval=100 is more than the 3 training batches of an epoch" in caplog.text
    assert trainer.global_step == 4 and trainer.val_check_interval == 3
    assert "val/loss" in trainer.callback_metrics


def test_no_test_file_next_to_your_training_file_is_not_filled_from_the_task(tmp_path):
    dm = SFTDataModule(train=_sft_file(tmp_path), task=Arithmetic(), tokenizer=TOK)
    assert not dm.has_split("test") and dm.test_dataloader() == []
    with pytest.raises(ValueError, match=r"no 'test' source; the training rows are your data \(.*sft\.jsonl\), so the "
                                         r"task's generated rows are not used for 'test': give data\.test$"):
        dm.read("test")
