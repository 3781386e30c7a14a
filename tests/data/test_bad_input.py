"""Malformed input: every file of ``tests/data/bad/`` is a located error or a counted, reported filter.

A bad file raises :class:`DataError` naming the file, the 1-based line (or the file alone when it has no
rows) and the field, at data-module setup (reading, validation and encoding). Over-length rows and
unread columns are not errors: they are counted and reported, and the rows kept are exactly the valid
ones. See ``tests/data/bad/README.md``.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import write_jsonl

from lit_rlhf.data import (
    DataError,
    PreferenceDataModule,
    PromptDataModule,
    SFTDataModule,
    StepLabelDataModule,
    WeakLabelDataModule,
)

BAD = Path(__file__).parent / "bad"
TOK = "lit-rlhf:tiny-llama"  # byte tokenizer: one token per byte, plus BOS (prompt) and EOS (completion)
MODULES = {
    "preference": PreferenceDataModule, "sft": SFTDataModule, "step": StepLabelDataModule,
    "weak": WeakLabelDataModule, "prompt": PromptDataModule,
}


class Bad(NamedTuple):
    line: int | None  # 1-based line named in the error; None: the file as a whole
    field: str | None  # None: the problem is not in one field (e.g. a line that is not an object)
    problem: str  # part of the message


TRUNCATED = "the text stops before the record is complete (truncated file?)"
ERRORS: dict[str, Bad] = {
    # preference pairs
    "preference/truncated.jsonl": Bad(3, "rejected", TRUNCATED),
    "preference/not_an_object.jsonl": Bad(2, None, "expected an object, got list"),
    "preference/wrong_type_chosen_number.jsonl": Bad(3, "chosen", "expected a string or a chat message list, got int"),
    "preference/wrong_type_chosen_list_of_strings.jsonl": Bad(2, "chosen[0]", "chat message must be a dict"),
    "preference/wrong_type_margin_string.jsonl": Bad(2, "margin", "expected a number, got str '2'"),
    "preference/rating_wrong_type.jsonl": Bad(2, "rating", "expected a string or an integer, got list"),
    "preference/missing_rejected.jsonl": Bad(2, "rejected", "missing (fields present: chosen, prompt)"),
    "preference/empty_chosen.jsonl": Bad(3, "chosen", "empty string"),
    "preference/empty_chat_reply.jsonl": Bad(2, "rejected[0].content", "empty assistant message"),
    "preference/identical_pair.jsonl": Bad(2, "chosen", "chosen and rejected are identical"),
    "preference/non_utf8.jsonl": Bad(3, "rejected", "not valid UTF-8 (byte 0xe9)"),
    "preference/unpaired_surrogate.jsonl": Bad(2, "chosen", "unpaired surrogate \\ud800"),
    "preference/nan_margin.jsonl": Bad(2, "margin", "must be finite, got nan"),
    "preference/inf_soft_label.jsonl": Bad(2, "soft_label", "must be finite, got inf"),
    "preference/soft_label_out_of_range.jsonl": Bad(2, "soft_label", "1.5 is outside [0.0, 1.0]"),
    "preference/huge_integer_margin.jsonl": Bad(2, "margin", "too large for a float"),
    "preference/ultrafeedback_nan_score.jsonl": Bad(2, "score_rejected", "must be finite, got nan"),
    "preference/empty.jsonl": Bad(None, None, "no rows"),
    # supervised fine-tuning
    "sft/truncated.jsonl": Bad(3, "completion", TRUNCATED),
    "sft/wrong_type_completion.jsonl": Bad(2, "completion", "got int"),
    "sft/missing_completion.jsonl": Bad(2, "completion", "missing"),
    "sft/empty_completion.jsonl": Bad(3, "completion", "empty string"),
    "sft/empty_chat_reply.jsonl": Bad(2, "messages[1].content", "empty assistant message"),
    "sft/non_utf8.jsonl": Bad(2, "prompt", "not valid UTF-8 (byte 0xe9)"),
    "sft/empty.json": Bad(None, None, "no rows"),
    # step labels (TRL stepwise, PRM800K, Math-Shepherd)
    "step/truncated.jsonl": Bad(2, "completions[1]", TRUNCATED),
    "step/length_mismatch.jsonl": Bad(3, "labels", "has 2 labels for 3 completions"),
    "step/label_out_of_range.jsonl": Bad(2, "labels[1]", "step label 2 is not one of -1, 0, 1"),
    "step/nan_label.jsonl": Bad(2, "labels[0]", "expected an integer label, got float nan"),
    "step/wrong_type_completions.jsonl": Bad(2, "completions", "expected a list, got str"),
    "step/empty_step.jsonl": Bad(2, "completions[1]", "empty string"),
    "step/non_utf8.jsonl": Bad(2, "completions[1]", "not valid UTF-8 (byte 0xc3)"),
    "step/prm800k_rating_out_of_range.jsonl": Bad(
        3, "label.steps[0].completions[0].rating", "step label 5 is not one of"
    ),
    "step/math_shepherd_label_mismatch.jsonl": Bad(2, "label", "has 21 characters, expected 36"),
    # weak labels (num_classes=2)
    "weak/nan_soft_label.jsonl": Bad(3, "soft_label[0]", "must be finite, got nan"),
    "weak/soft_label_out_of_range.jsonl": Bad(2, "soft_label", "1.2 is outside [0.0, 1.0]"),
    "weak/hard_label_out_of_range.jsonl": Bad(2, "hard_label", "label 2 is outside [0, 1] (num_classes=2)"),
    "weak/gt_label_out_of_range.jsonl": Bad(2, "gt_label", "label 3 is outside [0, 1] (num_classes=2)"),
    "weak/wrong_type_text.jsonl": Bad(2, "txt", "expected a string, got int"),
    "weak/empty_text.jsonl": Bad(2, "text", "empty string"),
    "weak/float_label.jsonl": Bad(2, "label", "expected an integer label, got float 0.5"),
    "weak/non_utf8.csv": Bad(3, "text", "not valid UTF-8 (byte 0xef)"),
    # prompts
    "prompt/wrong_type_prompt.jsonl": Bad(2, "prompt", "got int"),
    "prompt/empty_prompt.jsonl": Bad(3, "prompt", "empty string"),
    "prompt/non_utf8.json": Bad(3, "prompt", "not valid UTF-8 (byte 0xe9)"),
    "prompt/truncated.json": Bad(4, "prompt", TRUNCATED),
    "prompt/empty.jsonl": Bad(None, None, "no rows"),
}
LONG_ROWS = ["preference/long_rows.jsonl", "sft/long_rows.jsonl", "step/long_rows.jsonl", "prompt/long_rows.jsonl"]
FILTERED = [*LONG_ROWS, "preference/unknown_columns.jsonl"]
MAX_LENGTH = 48


def setup(path: Path, kind: str, **kwargs) -> PreferenceDataModule:
    """A data module of ``kind`` on ``path``, set up for fitting (read, validated and encoded)."""
    dm = MODULES[kind](train=str(path), tokenizer=TOK, **kwargs)
    dm.setup("fit")
    return dm


def test_every_corpus_file_has_an_expectation():
    files = sorted(str(p.relative_to(BAD)) for p in BAD.rglob("*") if p.is_file() and p.name != "README.md")
    assert files == sorted([*ERRORS, *FILTERED])


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_file_raises_a_data_error_naming_file_line_and_field(name):
    path, case = BAD / name, ERRORS[name]
    with pytest.raises(DataError) as info:
        setup(path, path.parent.name)
    err, message = info.value, str(info.value)
    assert type(err) is DataError
    where = str(path) if case.line is None else f"{path}:{case.line}"
    assert (err.where, err.field) == (where, case.field)
    assert message.startswith(f"{where}: ")  # file and 1-based line first
    assert f"field '{case.field}'" in message if case.field else "field" not in message
    assert case.problem in message
    message.encode("utf-8")  # printable: no undecodable bytes or surrogates leak into the message


@pytest.mark.parametrize("name", sorted(n for n, c in ERRORS.items() if c.line and n.endswith((".jsonl", ".csv"))))
def test_without_its_bad_line_the_file_loads(name, tmp_path):
    """Each file has exactly one bad line: without it, every other row loads and encodes."""
    path = BAD / name
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[ERRORS[name].line - 1]
    good = tmp_path / path.name
    good.write_bytes(b"".join(lines))
    dm = setup(good, path.parent.name)
    records = sum(1 for line in lines if line.strip()) - (path.suffix == ".csv")  # less the csv header
    assert len(dm.rows["train"]) == len(dm.datasets["train"]) == records > 0
    assert dm.filtered["train"] == Counter()


# -- over-length rows: counted and reported (drop), prompts cut (truncate_prompt), or an error ------------

# kind -> (lines kept, lines dropped) at max_length=48 with truncation="drop"
DROPPED = {
    "preference": ([1, 3], [2, 4]),  # 2: prompt alone too long; 4: chosen reply too long
    "sft": ([1, 4], [2, 3]),  # 2: prompt too long; 3: completion alone too long
    "step": ([1, 3], [2]),
    "prompt": ([1, 3], [2]),
}


@pytest.mark.parametrize("name", LONG_ROWS)
def test_over_length_rows_are_dropped_counted_and_reported(name, caplog):
    path, kind = BAD / name, name.split("/")[0]
    kept, dropped = DROPPED[kind]
    with caplog.at_level(logging.INFO):
        dm = setup(path, kind, max_length=MAX_LENGTH)
    assert dm.filtered["train"] == Counter({f"longer than max_length={MAX_LENGTH}": len(dropped)})
    assert [dm.rows["train"][i].where for i in dm.kept_rows["train"]] == [f"{path}:{n}" for n in kept]
    assert len(dm.datasets["train"]) == len(kept)
    places = ", ".join(f"{path}:{n}" for n in dropped)
    total = len(kept) + len(dropped)
    report = (f"train: kept {len(kept)} of {total} rows; "
              f"filtered: {len(dropped)} longer than max_length={MAX_LENGTH} (at {places})")
    assert report in caplog.text


def completion_ids(item: dict, prefix: str = "") -> list[int]:
    ids, mask = item[f"{prefix}input_ids"], item[f"{prefix}completion_mask"]
    return [t for t, m in zip(ids, mask) if m]


def test_truncate_prompt_cuts_the_shared_prompt_never_the_replies(caplog):
    path = BAD / "preference/long_rows.jsonl"
    with caplog.at_level(logging.INFO):
        dm = setup(path, "preference", max_length=MAX_LENGTH, truncation="truncate_prompt")
    # line 2 (long prompt) is kept with its prompt's start cut; line 4 (reply alone too long) is still dropped
    assert [dm.rows["train"][i].where for i in dm.kept_rows["train"]] == [f"{path}:{n}" for n in (1, 2, 3)]
    assert dm.filtered["train"] == Counter({f"longer than max_length={MAX_LENGTH}": 1})
    assert f"train: cut the start of 1 of 4 rows to fit max_length={MAX_LENGTH}" in caplog.text
    item = dm.datasets["train"].items[1]
    prompt = item["prompt_ids"]
    assert max(len(item["chosen_input_ids"]), len(item["rejected_input_ids"])) == MAX_LENGTH
    # chosen and rejected keep the same (cut) prompt and their whole replies
    assert item["chosen_input_ids"][: len(prompt)] == item["rejected_input_ids"][: len(prompt)] == prompt
    tok = dm.tokenizer
    assert tok.decode(prompt).endswith("before you answer: name a colour.")
    assert tok.decode(completion_ids(item, "chosen_"), skip_special_tokens=True) == " Teal."
    assert tok.decode(completion_ids(item, "rejected_"), skip_special_tokens=True) == " Seven."


def test_truncate_prompt_never_empties_a_completion():
    path = BAD / "sft/long_rows.jsonl"
    dm = setup(path, "sft", max_length=MAX_LENGTH, truncation="truncate_prompt")
    # line 2: prompt cut, completion whole; line 3: the completion alone does not fit -> dropped, counted
    assert [dm.rows["train"][i].where for i in dm.kept_rows["train"]] == [f"{path}:{n}" for n in (1, 2, 4)]
    assert dm.filtered["train"] == Counter({f"longer than max_length={MAX_LENGTH}": 1})
    item = dm.datasets["train"].items[1]
    assert len(item["input_ids"]) == MAX_LENGTH
    assert dm.tokenizer.decode(completion_ids(item), skip_special_tokens=True) == "31"


@pytest.mark.parametrize(
    ("name", "field"),
    [("preference/long_rows.jsonl", "prompt"), ("sft/long_rows.jsonl", "prompt"),
     ("step/long_rows.jsonl", "prompt"), ("prompt/long_rows.jsonl", "prompt")],
)
def test_over_length_rows_are_located_errors_under_truncation_error(name, field):
    path = BAD / name
    with pytest.raises(DataError) as info:
        setup(path, name.split("/")[0], max_length=MAX_LENGTH, truncation="error")
    assert (info.value.where, info.value.field) == (f"{path}:2", field)
    assert f"max_length={MAX_LENGTH}" in str(info.value)


def test_a_reply_too_long_names_its_field_under_truncation_error(tmp_path):
    # 12 prompt bytes + BOS, 75 reply bytes + EOS
    rows = [{"prompt": "Name a tree.", "chosen": " Oak.", "rejected": " a tall broad-leaved tree" * 3}]
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'rejected': 89 tokens \(13 prompt \+ 76 rejected\)"):
        setup(Path(write_jsonl(tmp_path / "t.jsonl", rows)), "preference", max_length=MAX_LENGTH, truncation="error")


# -- unread columns: kept in row.meta and reported; a likely misspelling is a warning ------------------------

def test_misspelt_column_is_kept_and_warned_about():
    path = BAD / "preference/unknown_columns.jsonl"
    with pytest.warns(UserWarning) as record:
        dm = setup(path, "preference")
    message = str(record[0].message)
    assert (f"{path}: preference format 'trl' does not read the column(s) "
            "'id' (2 records), 'margn' (2 records)") in message
    assert "'margn' (did you mean 'margin'?)" in message
    rows = dm.rows["train"]
    assert [(r.margin, r.meta) for r in rows] == [(None, {"id": 1, "margn": 2.0}), (None, {"id": 2, "margn": 0.5})]
    assert len(dm.datasets["train"]) == 2


def test_extra_columns_are_reported_without_a_warning(tmp_path, caplog):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1.0, "source": "x", "prompt_id": 7}] * 2
    path = write_jsonl(tmp_path / "extra.jsonl", rows)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO):
        warnings.simplefilter("error")  # 'prompt_id' is not taken for a misspelt 'prompt': the file has 'prompt'
        dm = setup(Path(path), "preference")
    assert (f"{path}: preference format 'trl' does not read the column(s) "
            "'prompt_id' (2 records), 'source' (2 records)") in caplog.text
    assert dm.rows["train"][0].meta == {"source": "x", "prompt_id": 7}
