"""Sources: local files, Hugging Face datasets and tasks -> raw records -> validated rows.

Every record comes with ``where`` (``file:line``, ``file[index]``, ``file:row N`` or ``id[split]#index``)
so that a bad row is reported at its place. All sources end in the same :func:`to_rows` path.
"""

from __future__ import annotations

import ast
import bz2
import csv
import difflib
import gzip
import io
import json
import lzma
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_rlhf.data.formats import convert, detect_format
from lit_rlhf.data.schemas import DataError, Row, SourceNotFound

if TYPE_CHECKING:
    from lit_rlhf.tasks.base import Task

Record = tuple[str, dict[str, Any]]
# a path or name (see :func:`iter_records`), or a ``datasets.Dataset`` / ``DatasetDict`` object
Source = Union[str, "os.PathLike[str]", Any]

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# A compressed file is recognised by its first bytes, whatever its name; these suffixes are stripped before
# the format suffix is read (``pairs.jsonl.gz`` is JSON Lines).
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
# CSV cells of these columns are turned into numbers when they parse as one.
CSV_NUMERIC_FIELDS = frozenset(
    {"margin", "soft_label", "strength", "hard_label", "label", "gt_label", "score_chosen", "score_rejected"}
)


def iter_records(source: Source, split: str = "train") -> Iterator[Record]:
    """An iterator of ``(where, record)`` over a local file, a saved or in-memory dataset, or a Hub dataset.

    Local files: ``.jsonl`` (``where = "path:LINE"``, 1-based, blank lines skipped), ``.json`` (a list of
    objects, or an object with the list under ``split``/``"data"``/``"rows"``; ``where = "path[INDEX]"``),
    ``.parquet`` (``where = "path:row N"``, 0-based), ``.csv`` (header row; ``where = "path:LINE"``, the
    file line where the record starts). gzip, bz2, xz (and zstd, with ``zstandard`` installed) files are
    recognised by their first bytes, whatever their name (``pairs.jsonl.gz``, or gzip bytes in
    ``pairs.jsonl``). A folder written by ``datasets.save_to_disk`` (``where = "folder[split]#INDEX"``), or
    ``"folder:split"``. A ``datasets.Dataset`` / ``DatasetDict`` object (``where = "Dataset[split]#INDEX"``).
    Anything else is a Hugging Face dataset: ``"id"``, ``"id:split"`` or ``"id:config:split"`` (a split in
    the string overrides ``split``); ``where = "id[split]#INDEX"``.

    Raises:
        SourceNotFound: (a :class:`DataError` and a ``FileNotFoundError``) ``source`` looks like a local path
            (a known suffix, ``/``, ``.`` or ``~`` at the start, or more than one ``/``) but does not exist, or
            it names neither a local file or folder nor a Hub dataset that can be loaded (e.g. offline).
        DataError: a malformed file, line or record, or a source without records ("no rows").
    """
    if not isinstance(source, (str, os.PathLike)):
        label, records = _dataset_object_records(source, split)
        return _require_rows(records, label)
    name = os.fspath(source)
    path = Path(name).expanduser()
    if path.is_file():
        return _require_rows(_file_records(path, split), str(path))
    saved = _saved_dataset(path, split) or _saved_dataset(*_split_suffix(name, split))
    if saved is not None:
        folder, split = saved
        return _require_rows(_saved_records(folder, split), f"{folder}[{split}]")
    if path.is_dir() or not _looks_like_path(name):
        dataset_id, config, split = _parse_hub_name(name, split)
        return _require_rows(_hub_records(dataset_id, config, split), f"{dataset_id}[{split}]")
    raise SourceNotFound(name, f"no such file or folder (local files end in {', '.join(SUFFIXES)}, optionally "
                         "compressed; Hugging Face datasets are named 'owner/name[:config][:split]')")


def read_rows(source: Source, kind: str, format: str = "auto", split: str = "train") -> list[Row]:
    """All validated rows of ``kind`` from a file, a dataset folder or object, or a Hub dataset (see
    :func:`iter_records`).

    With ``format="auto"`` the format is detected from the first record and used for the whole source.
    Columns the format does not read are kept in ``row.meta`` and reported once (see :func:`report_unused`).
    """
    return _rows(iter_records(source, split), kind, format, source_name(source))


def text_prompts(source: Source, reader: str, task: Task | None = None) -> list[str]:
    """The plain-text prompts of a prompt source (any prompt format :func:`read_rows` reads), for a ``reader`` that
    scores text (a task's grader, a reward function): a row of chat messages, or a first prompt that ``task``'s
    grader cannot read, is a located :class:`DataError`."""
    rows = read_rows(source, "prompt")
    chat = [row.where for row in rows if not isinstance(row.prompt, str)]
    if chat:
        raise DataError(chat[0], "prompt", f"{reader} takes plain-text prompts; {len(chat)} row(s) of "
                        f"{source_name(source)} are chat messages")
    if task is not None and rows:
        check_grades(task, rows[0].prompt, rows[0].where, "give the task your prompts come from, or none "
                     "(--task null) where your own reward scores them")
    return [row.prompt for row in rows]


def check_grades(task: Task, prompt: str, where: str, advice: str) -> None:
    """Raise a located :class:`DataError` (at ``where``, with ``advice``) when ``task``'s grader cannot read
    ``prompt`` (your own prompts next to a task, e.g. movie reviews under an arithmetic grader)."""
    try:
        task.reward([prompt], [""])
    except ValueError as err:
        raise DataError(where, "prompt", f"the task {type(task).__name__} cannot grade this prompt ({err}): "
                        f"{advice}") from err


def source_name(source: Source) -> str:
    """How ``source`` is named in messages: its path or id, or ``Dataset``/``DatasetDict`` for an object."""
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def task_rows(task: Task, kind: str, split: str, n: int, seed: int = 0) -> list[Row]:
    """``n`` validated rows of ``kind`` generated by ``task`` (the same path as file data).

    A task without ``unpaired`` data gives it from its preference pairs (each pair as two rows).
    """
    generated = "preference" if kind == "unpaired" and "unpaired" not in task.kinds else kind
    return _rows(task.records(generated, split, n, seed), kind, "auto")  # type: ignore[arg-type]


def _rows(records: Iterable[Record], kind: str, format: str, source: str | None = None) -> list[Row]:
    """Validated rows; with a ``source`` name, its unread columns are reported."""
    rows: list[Row] = []
    asked: set[str] = set()
    present: set[str] = set()
    unused: Counter[str] = Counter()
    for where, raw in records:
        if format == "auto" and isinstance(raw, dict):
            format = detect_format(kind, raw, where)
        converted = convert(kind, raw, where, format)
        rows.extend(converted.rows)
        asked |= converted.asked
        present |= raw.keys()
        unused.update(converted.unused)
    if source is not None and unused:
        report_unused(source, f"{kind} format '{format}'", unused, asked, present)
    return rows


def report_unused(
    source: str, reader: str, unused: Counter[str], asked: Iterable[str], present: Iterable[str] = ()
) -> str:
    """Report columns of ``source`` that ``reader`` did not read (with how many records have each).

    One info line lists them. A column that looks like a misspelling of a column ``reader`` reads and
    ``source`` lacks (``margn`` for ``margin``, ``Chosen`` for ``chosen``) makes it a warning, since its
    values are not used. Returns the message.
    """
    known = sorted(asked)
    lines = [f"{name!r} ({n} records)" for name, n in sorted(unused.items())]
    message = f"[lit_rlhf] {source}: {reader} does not read the column(s) {', '.join(lines)}; they are kept in row.meta"
    lacking = {name.lower().replace("-", "_"): name for name in set(asked) - set(present)}
    typos = {
        name: difflib.get_close_matches(name.lower().replace("-", "_"), sorted(lacking), n=1, cutoff=0.85)
        for name in sorted(unused)
    }
    typos = {name: lacking[close[0]] for name, close in typos.items() if close}
    if typos:
        hints = ", ".join(f"{name!r} (did you mean {close!r}?)" for name, close in typos.items())
        message += f". Possibly misspelt: {hints}; columns read: {', '.join(known)}"
        rank_zero_warn(message)
    else:
        rank_zero_info(message)
    return message


def _looks_like_path(name: str) -> bool:
    return (
        name.endswith(SUFFIXES)
        or name.startswith(("/", ".", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def _require_rows(records: Iterator[Record], label: str) -> Iterator[Record]:
    empty = True
    for record in records:
        empty = False
        yield record
    if empty:
        raise DataError(label, None, "no rows")


# --------------------------------------------------------------------------------------------
# local files
# --------------------------------------------------------------------------------------------


def _file_records(path: Path, split: str) -> Iterator[Record]:
    name = path.name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    if name.endswith(".jsonl"):
        return _jsonl_records(path)
    if name.endswith(".json"):
        return _json_records(path, split)
    if name.endswith(".parquet"):
        return _parquet_records(path)
    if name.endswith(".csv"):
        return _csv_records(path)
    raise ValueError(f"unsupported data file {str(path)!r}; expected one of {', '.join(SUFFIXES)}")


def compression(path: Path) -> str | None:
    """``gzip``, ``bz2``, ``xz`` or ``zstd`` when the file starts with that format's magic bytes, else ``None``."""
    with open(path, "rb") as stream:
        head = stream.read(6)
    return next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None)


def _open_bytes(path: Path) -> io.BufferedIOBase:
    """``path`` opened for reading bytes, decompressed when its first bytes say it is compressed."""
    kind = compression(path)
    if kind is None:
        return open(path, "rb")
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise DataError(str(path), None, "zstd-compressed; reading it needs `pip install zstandard`") from None
        return zstandard.open(path, "rb")  # type: ignore[return-value]
    return {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[kind](path, "rb")  # type: ignore[return-value]


def _read_bytes(path: Path) -> bytes:
    """All bytes of ``path`` (decompressed); a damaged compressed file is a located error."""
    with _open_bytes(path) as stream:
        try:
            return stream.read()
        except (OSError, EOFError, lzma.LZMAError) as err:
            raise DataError(str(path), None, f"cannot decompress ({compression(path)}): {err}") from None


# --------------------------------------------------------------------------------------------
# text that is not valid UTF-8 / Unicode: located down to the field
# --------------------------------------------------------------------------------------------

# Undecodable bytes are read as U+DC80..U+DCFF (``surrogateescape``) and JSON escapes such as "\ud800"
# give unpaired surrogates; both would crash the tokenizer later, so they are found and reported here.
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _decode(data: bytes, encoding: str = "utf-8") -> tuple[str, UnicodeDecodeError | None]:
    """``data`` as text; undecodable bytes become surrogate escapes and the first error is returned."""
    try:
        return data.decode(encoding), None
    except UnicodeDecodeError as err:
        return data.decode(encoding, errors="surrogateescape"), err


def _visible(text: str) -> str:
    """``text`` with surrogates escaped, safe to print."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_at(value: Any, prefix: str = "") -> tuple[str, str] | None:
    """``(field path, character)`` of the first string in ``value`` holding a surrogate, or ``None``."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (prefix, found.group()) if found else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{prefix}.{_visible(str(key))}" if prefix else _visible(str(key))
            hit = _surrogate_at(key, name) or _surrogate_at(item, name)
            if hit:
                return hit
    if isinstance(value, list):
        for i, item in enumerate(value):
            hit = _surrogate_at(item, f"{prefix}[{i}]")
            if hit:
                return hit
    return None


def _check_unicode(value: Any, where: str) -> None:
    """Raise naming the field of the first undecodable byte or unpaired surrogate in ``value``."""
    hit = _surrogate_at(value)
    if hit is None:
        return
    field, char = hit
    code = ord(char)
    problem = (
        f"not valid UTF-8 (byte {code - 0xDC00:#04x})" if 0xDC80 <= code <= 0xDCFF
        else f"unpaired surrogate \\u{code:04x} (not valid Unicode text)"
    )
    raise DataError(where, field or None, problem)


def _utf8_error(where: str, data: bytes, err: UnicodeDecodeError) -> DataError:
    return DataError(where, None, f"not valid UTF-8 (byte {data[err.start]:#04x} at offset {err.start})")


# --------------------------------------------------------------------------------------------
# JSON and JSON Lines
# --------------------------------------------------------------------------------------------


def _open_fields(text: str) -> list[str | int] | None:
    """The keys and indices open at the end of a JSON text that was cut short (``None`` if nothing is open).

    ``'{"a": "x", "b": [{"c": "y'`` -> ``["b", 0, "c"]``; a cut inside a key or between fields ends the
    path at the enclosing object.
    """
    stack: list[list[Any]] = []  # [kind, key/index, started]: objects hold their current key
    in_string = escaped = False
    start = 0
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if stack and stack[-1][0] == "{" and stack[-1][1] is None:
                    stack[-1][2] = text[start:i + 1]  # a key, once a ':' follows
            continue
        if stack and stack[-1][0] == "[" and not char.isspace() and char not in ",]":
            stack[-1][2] = True
        if char == '"':
            in_string, start = True, i
        elif char in "{[":
            stack.append([char, None if char == "{" else 0, None if char == "{" else False])
        elif char in "}]" and stack:
            stack.pop()
        elif char == ":" and stack and stack[-1][0] == "{" and stack[-1][2] is not None:
            stack[-1][1], stack[-1][2] = _key(stack[-1][2]), None
        elif char == "," and stack:
            if stack[-1][0] == "{":
                stack[-1][1] = stack[-1][2] = None
            else:
                stack[-1][1], stack[-1][2] = stack[-1][1] + 1, False
    if not stack:
        return None
    path: list[str | int] = []
    for kind, key, started in stack:
        if key is None or (kind == "[" and not started):
            break
        path.append(key)
    return path


def _key(quoted: str) -> str:
    """A JSON object key from its quoted text (as written if its escapes are invalid)."""
    try:
        return json.loads(quoted)
    except ValueError:
        return quoted[1:-1]


def _field_name(path: list[str | int]) -> str | None:
    """``["chosen", 0, "content"]`` -> ``"chosen[0].content"``."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return _visible(name) or None


def _json_error(text: str, err: ValueError, where: str, in_list: bool = False) -> DataError:
    """A located error for invalid JSON; a text cut short names the field it ends in.

    Args:
        in_list: ``text`` holds a list of records: field paths start inside the record.
    """
    if not isinstance(err, json.JSONDecodeError):  # e.g. an integer with more than 4300 digits
        return DataError(where, None, f"invalid JSON: {err}")
    # the text ends inside a string (JSON strings cannot hold a line break) or at an unfinished value
    ends_early = err.msg.startswith("Unterminated string") or err.pos >= len(text.rstrip())
    path = _open_fields(text) if ends_early else None
    if path is None:
        return DataError(where, None, f"invalid JSON: {err.msg} (column {err.colno})")
    if in_list:
        path = path[next((i + 1 for i, p in enumerate(path) if isinstance(p, int)), len(path)):]
    return DataError(
        where, _field_name(path), "invalid JSON: the text stops before the record is complete (truncated file?)"
    )


class _Duplicated(dict):
    """A JSON object that had a key twice (``key``: the first repeated one); the last value was kept."""

    key: str = ""


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of every JSON parse: a ``_Duplicated`` when a key appears twice."""
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    duplicated = _Duplicated(value)
    duplicated.key = key
    return duplicated


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_object_pairs)


def _duplicate_at(value: Any, prefix: str = "") -> str | None:
    """The field path of the first key written twice in one object of ``value`` (``None`` if none)."""
    if isinstance(value, _Duplicated):
        return _visible(f"{prefix}.{value.key}" if prefix else value.key)
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((hit for name, item in items if (hit := _duplicate_at(item, name)) is not None), None)


def _check_duplicates(value: Any, where: str) -> None:
    field = _duplicate_at(value)
    if field is not None:
        problem = "the key appears twice in one object (JSON keeps only the last value; which is meant?)"
        raise DataError(where, field, problem)


def _parse_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = _loads(text)
    except ValueError as err:
        raise _json_error(text, err, where) from None
    if not isinstance(value, dict):
        raise DataError(where, None, f"invalid JSON: expected an object, got {type(value).__name__}")
    _check_duplicates(value, where)
    return dict(value)


def _jsonl_records(path: Path) -> Iterator[Record]:
    with _open_bytes(path) as stream:
        try:
            yield from _jsonl_lines(path, stream)
        except (OSError, EOFError, lzma.LZMAError) as err:
            raise DataError(str(path), None, f"cannot decompress ({compression(path)}): {err}") from None


def _jsonl_lines(path: Path, lines: Iterable[bytes]) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        text, bad = _decode(line)
        text = text.removeprefix("\ufeff").rstrip("\r\n")
        if not text.strip():
            continue
        try:
            raw = _parse_object(text, where)
        except DataError:
            if bad:  # undecodable bytes outside any string
                raise _utf8_error(where, line, bad) from None
            raise
        if bad or _ESCAPED_SURROGATE.search(text):
            _check_unicode(raw, where)
        yield where, raw


def _line_of(data: bytes | str, offset: int) -> int:
    return data[:offset].count(b"\n" if isinstance(data, bytes) else "\n") + 1


def _json_records(path: Path, split: str) -> Iterator[Record]:
    data = _read_bytes(path)
    text, bad = _decode(data, "utf-8-sig")
    bad_where = f"{path}:{_line_of(data, bad.start)}" if bad else ""
    if not text.strip():
        return
    try:
        value = _loads(text)
    except ValueError as err:
        if getattr(err, "msg", "") == "Extra data":  # JSON Lines saved as .json
            yield from _jsonl_lines(path, io.BytesIO(data))
            return
        if bad:
            raise DataError(bad_where, None, "not valid UTF-8") from None
        where = f"{path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else str(path)
        raise _json_error(text, err, where, in_list=True) from None
    check = bad is not None or _ESCAPED_SURROGATE.search(text) is not None
    if isinstance(value, dict):
        if isinstance(value, _Duplicated):
            raise DataError(str(path), value.key, "the key appears twice in the top-level object")
        keys = (split, "data", "rows")
        key = next((k for k in keys if isinstance(value.get(k), list)), None)
        if key is None:
            raise DataError(str(path), None, f"expected a list of objects, or an object with the list under {keys}")
        value = value[key]
    if not isinstance(value, list):
        raise DataError(str(path), None, f"expected a list of objects, got {type(value).__name__}")
    for index, raw in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(raw, dict):
            raise DataError(where, None, f"expected an object, got {type(raw).__name__}")
        if check:
            _check_unicode(raw, bad_where or where)
        _check_duplicates(raw, where)
        yield where, dict(raw)


def _parquet_records(path: Path) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(str(path), None, f"cannot read parquet: {err}") from None
    names = table.schema_arrow.names
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise DataError(str(path), twice, "two columns have this name (which one is meant?)")
    index = 0
    for batch in table.iter_batches():
        for raw in batch.to_pylist():  # plain Python values (lists, dicts, None)
            yield f"{path}:row {index}", raw
            index += 1


def _csv_cell(column: str, cell: str) -> Any:
    """Empty -> ``None``; ``[...]``/``{...}`` -> decoded (JSON or Python literal); numbers in numeric columns."""
    if cell == "":
        return None
    if cell[0] in "[{":
        for parse in (json.loads, ast.literal_eval):
            try:
                return parse(cell)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                pass
    if column in CSV_NUMERIC_FIELDS:
        for number in (int, float):
            try:
                return number(cell)
            except ValueError:
                pass
    return cell


def _csv_records(path: Path) -> Iterator[Record]:
    data = _read_bytes(path)
    text, bad = _decode(data, "utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    if bad:
        _check_unicode(header, f"{path}:1")
    twice = next((name for i, name in enumerate(header) if name in header[:i]), None)
    if twice is not None:
        raise DataError(f"{path}:1", twice, "two header cells have this name (which column is meant?)")
    start = reader.line_num + 1
    for cells in reader:
        where = f"{path}:{start}"
        start = reader.line_num + 1
        if not cells:
            continue
        if len(cells) != len(header):
            raise DataError(where, None, f"expected {len(header)} cells ({', '.join(header)}), got {len(cells)}")
        if bad:
            _check_unicode(dict(zip(header, cells)), where)
        yield where, {column: _csv_cell(column, cell) for column, cell in zip(header, cells)}


# --------------------------------------------------------------------------------------------
# Hugging Face datasets
# --------------------------------------------------------------------------------------------


def _hub_records(dataset_id: str, config: str | None, split: str) -> Iterator[Record]:
    import datasets  # lazy: only Hugging Face sources need it

    try:
        dataset = datasets.load_dataset(dataset_id, config, split=split)
    except (ConnectionError, FileNotFoundError) as err:  # offline, unreachable or unknown on the Hub
        problem = (f"no such file or folder, and no Hugging Face dataset of that name could be loaded "
                   f"({type(err).__name__}: {err}). Local files end in {', '.join(SUFFIXES)}")
        raise SourceNotFound(dataset_id, problem) from None
    for index, raw in enumerate(dataset):
        yield f"{dataset_id}[{split}]#{index}", raw


# --------------------------------------------------------------------------------------------
# `datasets` objects and folders written by `save_to_disk`
# --------------------------------------------------------------------------------------------

SPLIT_ALIASES = {"validation": ("validation", "val", "valid", "dev"), "val": ("val", "validation", "valid", "dev")}


def _split_suffix(name: str, split: str) -> tuple[Path, str]:
    """``"folder:split"`` -> ``(folder, split)``; anything else -> ``(name, split)``."""
    head, sep, tail = name.rpartition(":")
    return (Path(head).expanduser(), tail) if sep and head and tail and "/" not in tail else (Path(name), split)


def _saved_dataset(path: Path, split: str) -> tuple[Path, str] | None:
    """``(folder, split)`` when ``path`` is a folder written by ``Dataset``/``DatasetDict.save_to_disk``."""
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        return path, split
    return None


def _pick_split(dataset: Any, split: str, label: str) -> tuple[Any, str]:
    """``(dataset, split)``: a ``DatasetDict``'s split (``val`` and ``validation`` are one), or the dataset."""
    if not hasattr(dataset, "keys") or not callable(dataset.keys):  # a Dataset: every split is the whole of it
        return dataset, split
    names = list(dataset.keys())
    chosen = next((name for name in SPLIT_ALIASES.get(split, (split,)) if name in names), None)
    if chosen is None:
        raise DataError(label, None, f"no split {split!r}; the splits are {names}")
    return dataset[chosen], chosen


def _saved_records(folder: Path, split: str) -> Iterator[Record]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(folder))
    except (OSError, ValueError) as err:
        raise DataError(str(folder), None, f"cannot load the saved dataset: {err}") from None
    dataset, split = _pick_split(dataset, split, str(folder))
    for index, raw in enumerate(dataset):
        yield f"{folder}[{split}]#{index}", raw


def _dataset_object_records(dataset: Any, split: str) -> tuple[str, Iterator[Record]]:
    """``(label, records)`` of an in-memory ``datasets.Dataset`` or ``DatasetDict`` (a split of it)."""
    kind = type(dataset).__name__
    if not hasattr(dataset, "column_names"):
        raise TypeError(f"a data source is a path, a dataset name or a datasets.Dataset/DatasetDict; got {kind}")
    dataset, split = _pick_split(dataset, split, kind)
    label = f"{kind}[{split}]"

    def records() -> Iterator[Record]:
        for index, raw in enumerate(dataset):
            yield f"{label}#{index}", raw

    return label, records()


def _parse_hub_name(name: str, split: str) -> tuple[str, str | None, str]:
    """``id``, ``id:split`` or ``id:config:split`` -> (id, config, split)."""
    parts = name.split(":")
    if len(parts) == 1:
        return name, None, split
    if len(parts) == 2:
        return parts[0], None, parts[1]
    if len(parts) == 3:
        return parts[0], parts[1] or None, parts[2]
    raise ValueError(f"cannot parse dataset {name!r}; expected 'id', 'id:split' or 'id:config:split'")
