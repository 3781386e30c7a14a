"""Sources: jsonl/json/parquet/csv round trips, Hugging Face ids, tasks, and located error messages."""

from __future__ import annotations

import csv
import gzip
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from lit_rlhf.data.schemas import DataError, PreferenceRow
from lit_rlhf.data.sources import iter_records, read_rows, task_rows

RECORDS = [
    {
        "prompt": [{"role": "user", "content": "Say hi, politely."}],
        "chosen": [{"role": "assistant", "content": "Hello, nice to meet you!"}],
        "rejected": [{"role": "assistant", "content": "hi"}],
        "margin": 1.5,
    },
    {"prompt": "Name a colour.", "chosen": " Teal, a blue-green.", "rejected": " Seven.", "margin": 0.5},
]


def expected(where: list[str]) -> list[PreferenceRow]:
    return [
        PreferenceRow(r["prompt"], r["chosen"], r["rejected"], margin=r["margin"], where=w)
        for r, w in zip(RECORDS, where)
    ]


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


def test_jsonl_round_trip_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(RECORDS[1]) + "\n", encoding="utf-8")
    assert read_rows(path, "preference") == expected([f"{path}:1", f"{path}:3"])


def test_jsonl_gz_round_trip(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    assert read_rows(str(path), "preference") == expected([f"{path}:1", f"{path}:2"])


@pytest.mark.parametrize("wrap", [None, "data", "rows", "train"])
def test_json_round_trip(tmp_path, wrap):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(RECORDS if wrap is None else {wrap: RECORDS, "version": 2}), encoding="utf-8")
    assert read_rows(path, "preference") == expected([f"{path}[0]", f"{path}[1]"])


def test_json_file_holding_json_lines_is_read_as_jsonl(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    assert [w for w, _ in iter_records(path)] == [f"{path}:1", f"{path}:2"]


def test_json_test_split_is_not_read_from_train(tmp_path):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": RECORDS[:1], "test": RECORDS[1:]}), encoding="utf-8")
    assert [raw["prompt"] for _, raw in iter_records(path, split="test")] == ["Name a colour."]
    with pytest.raises(DataError, match=r"splits\.json: .*under \('validation', 'data', 'rows'\)"):
        list(iter_records(path, split="validation"))


def test_parquet_round_trip_gives_plain_python_values(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "pairs.parquet"
    # a parquet column has one type: one file of chat pairs, one of plain-string pairs
    pq.write_table(pa.Table.from_pylist(RECORDS[:1]), path)
    assert read_rows(path, "preference") == expected([f"{path}:row 0"])
    _, raw = next(iter_records(path))
    assert type(raw["chosen"]) is list and type(raw["chosen"][0]) is dict and type(raw["margin"]) is float
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist([RECORDS[1], RECORDS[1]]), plain)
    rows = read_rows(plain, "preference")
    assert [r.where for r in rows] == [f"{plain}:row 0", f"{plain}:row 1"]
    assert (rows[1].prompt, rows[1].chosen, rows[1].margin) == ("Name a colour.", " Teal, a blue-green.", 0.5)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})


def test_csv_round_trip_decodes_json_cells_and_numbers(tmp_path):
    path = tmp_path / "pairs.csv"
    write_csv(path, RECORDS)
    assert read_rows(path, "preference") == expected([f"{path}:2", f"{path}:3"])


def test_csv_line_numbers_follow_multi_line_cells(tmp_path):
    path = tmp_path / "sft.csv"
    write_csv(path, [{"prompt": "Write two lines.", "completion": "one\ntwo"}, {"prompt": "Hi", "completion": "Hello"}])
    rows = read_rows(path, "sft")
    assert [(r.where, r.completion) for r in rows] == [(f"{path}:2", "one\ntwo"), (f"{path}:4", "Hello")]


def test_csv_python_repr_lists_and_text_starting_with_a_bracket(tmp_path):
    path = tmp_path / "prompts.csv"
    text = 'prompt,tag\n"[{\'role\': \'user\', \'content\': \'Hi\'}]",x\n[Verse 1] Sing,[y\n'
    path.write_text(text, encoding="utf-8")
    rows = read_rows(path, "prompt")
    assert rows[0].prompt == [{"role": "user", "content": "Hi"}]
    assert (rows[1].prompt, rows[1].meta) == ("[Verse 1] Sing", {"tag": "[y"})


def test_csv_cell_count_mismatch(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,completion\nHi,Hello\nonly one cell\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:3: expected 2 cells \(prompt, completion\), got 1"):
        read_rows(path, "sft")


# --------------------------------------------------------------------------------------------
# other sources
# --------------------------------------------------------------------------------------------


def test_missing_local_paths_raise_file_not_found(tmp_path):
    for name in [str(tmp_path / "nope.jsonl"), "nope.parquet", "./data/pairs", "data/x/pairs"]:
        with pytest.raises(FileNotFoundError, match="no such file or folder"):
            iter_records(name)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unsupported data file .*pairs\.txt"):
        iter_records(path)


@pytest.mark.parametrize(
    ("name", "call", "where"),
    [
        ("Anthropic/hh-rlhf", ("Anthropic/hh-rlhf", None, "train"), "Anthropic/hh-rlhf[train]#0"),
        ("Anthropic/hh-rlhf:test", ("Anthropic/hh-rlhf", None, "test"), "Anthropic/hh-rlhf[test]#0"),
        ("openai/gsm8k:main:test", ("openai/gsm8k", "main", "test"), "openai/gsm8k[test]#0"),
    ],
)
def test_hub_ids_go_to_load_dataset(monkeypatch, name, call, where):
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"prompt": "p", "chosen": "a", "rejected": "b"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    (row,) = read_rows(name, "preference")
    assert calls == [call]
    assert (row.where, row.chosen) == (where, "a")


def test_empty_hub_split_has_no_rows(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: []))
    with pytest.raises(DataError, match=r"^org/empty\[val\]: no rows$"):
        read_rows("org/empty:val", "prompt")


class ToyTask:
    """Duck-typed :class:`~lit_rlhf.tasks.base.Task` giving step records."""

    def records(self, kind, split, n, seed=0):
        for i in range(n):
            yield f"toy[{split}]#{i}", {"prompt": f"{seed} + {i} = ?", "completions": [f"{seed + i}"], "labels": [True]}


def test_task_rows_use_the_same_validation_path():
    rows = task_rows(ToyTask(), "step", "val", 2, seed=5)
    assert [(r.where, r.prompt, r.steps, r.labels) for r in rows] == [
        ("toy[val]#0", "5 + 0 = ?", ["5"], [1]),
        ("toy[val]#1", "5 + 1 = ?", ["6"], [1]),
    ]


def test_format_detected_on_the_first_record_is_kept(tmp_path):
    """A later row missing 'prompt' is reported as missing, not re-detected as HH-RLHF."""
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(RECORDS[1]), json.dumps({"chosen": "a", "rejected": "b"})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: field 'prompt': missing"):
        read_rows(path, "preference")


# --------------------------------------------------------------------------------------------
# malformed input: the message names the file, the line and the field
# --------------------------------------------------------------------------------------------

GOOD = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()


@pytest.mark.parametrize(
    ("kind", "line", "field", "problem"),
    [
        ("preference", b'{"prompt": "p", "chosen": "a", "rej', None, "invalid JSON"),
        ("preference", b'["p", "a", "b"]', None, "invalid JSON: expected an object, got list"),
        ("preference", b'{"prompt": "p", "chosen": ["a"], "rejected": "b"}', "chosen[0]", "must be a dict"),
        ("preference", b'{"prompt": "p", "chosen": "a", "rejected": "b", "margin": "2"}', "margin", "a number"),
        ("preference", b'{"prompt": "p", "chosen": "a"}', "rejected", "missing"),
        ("preference", b'{"prompt": "", "chosen": "a", "rejected": "b"}', "prompt", "empty string"),
        ("preference", b'{"prompt": "p", "chosen": "same", "rejected": "same"}', "chosen", "identical"),
        ("preference", b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}', "prompt",
         "not valid UTF-8 (byte 0xe9)"),
        ("preference", b'{"prompt": "p", "chosen": "a", "rejected": "b", "margin": NaN}', "margin", "must be finite"),
        ("preference", b'{"prompt": "p", "chosen": "a", "rejected": "b", "soft_label": 1.5}', "soft_label", "outside"),
        ("step", b'{"prompt": "p", "completions": ["a", "b"], "labels": [true]}', "labels", "1 labels for 2"),
        ("weak", b'{"txt": "t", "hard_label": 1, "soft_label": [0.9, 0.3]}', "soft_label", "sum to 1.2"),
    ],
)
def test_malformed_jsonl_line_is_located(tmp_path, kind, line, field, problem):
    first = {
        "preference": GOOD,
        "step": b'{"prompt": "p", "completions": ["a"], "labels": [true]}',
        "weak": b'{"txt": "t", "hard_label": 0}',
    }[kind]
    path = tmp_path / "broken.jsonl"
    path.write_bytes(first + b"\n\n" + line + b"\n")
    with pytest.raises(DataError) as info:
        read_rows(path, kind)
    message = str(info.value)
    assert message.startswith(f"{path}:3")
    assert "broken.jsonl:3" in message and problem in message
    assert info.value.field == field
    if field is not None:
        assert f"field '{field}'" in message


def test_non_utf8_in_json_and_csv_is_located(tmp_path):
    files = [("bad.json", b'[\n{"prompt": "ok"},\n{"prompt": "caf\xe9"}\n]'), ("bad.csv", b"prompt\nok\ncaf\xe9\n")]
    for name, data in files:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError, match=rf"{name}:3: field 'prompt': not valid UTF-8 \(byte 0xe9\)"):
            read_rows(path, "prompt")


def test_csv_nan_and_json_errors_are_located(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected,margin\np,a,b,1\np,a,b,nan\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs\.csv:3: field 'margin': must be finite"):
        read_rows(path, "preference")
    path = tmp_path / "pairs.json"
    good, bad = '{"prompt": "p", "chosen": "a", "rejected": "b"}', '{"prompt": "p", "chosen": "a" "rejected": "b"}'
    path.write_text(f"[\n{good},\n{bad}\n]")
    with pytest.raises(DataError, match=r"pairs\.json:3: invalid JSON: Expecting ','"):
        read_rows(path, "preference")
    path.write_text(json.dumps([RECORDS[1], {**RECORDS[1], "strength": "high"}]))
    with pytest.raises(DataError, match=r"pairs\.json\[1\]: field 'strength': expected a number"):
        read_rows(path, "preference")


@pytest.mark.parametrize("name, content", [("empty.jsonl", "\n\n"), ("empty.json", "[]"), ("empty.csv", "prompt\n")])
def test_empty_file_has_no_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{str(path)}: no rows$"):
        read_rows(path, "prompt")


def test_empty_parquet_has_no_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    with pytest.raises(DataError, match="empty.parquet: no rows"):
        read_rows(path, "prompt")
