"""Row schemas: the validated records every data source is turned into.

A *text* is either a plain string or a chat message list ``[{"role": ..., "content": ...}, ...]``.
Every row remembers ``where`` it came from (``file:line``) so later errors can point at it.
Validation failures raise :class:`DataError` naming the location and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

Message = dict[str, str]
Text = Union[str, list[Message]]

CHAT_ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """A malformed input row: ``<where>: field '<field>': <problem>``."""

    def __init__(self, where: str, field_name: str | None, problem: str) -> None:
        self.where, self.field, self.problem = where, field_name, problem
        prefix = f"{where}: field '{field_name}'" if field_name else where
        super().__init__(f"{prefix}: {problem}")


class SourceNotFound(DataError, FileNotFoundError):
    """A data source that is neither an existing file or folder nor a dataset that could be loaded."""

    def __init__(self, name: str, problem: str) -> None:
        DataError.__init__(self, name, None, problem)


# --------------------------------------------------------------------------------------------
# field validators (shared by every format adapter)
# --------------------------------------------------------------------------------------------


def shorten(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def require(raw: dict[str, Any], name: str, where: str) -> Any:
    if name not in raw or raw[name] is None:
        present = ", ".join(sorted(map(str, raw))) or "none"
        raise DataError(where, name, f"missing (fields present: {present})")
    return raw[name]


def check_text(value: Any, name: str, where: str, allow_empty: bool = False) -> Text:
    """A non-empty string or a well-formed chat message list.

    User and assistant messages must not be empty either (system messages may be).
    """
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise DataError(where, name, "empty string")
        return value
    if isinstance(value, list) and value:
        for i, msg in enumerate(value):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                raise DataError(where, f"{name}[{i}]", "chat message must be a dict with 'role' and 'content'")
            if msg["role"] not in CHAT_ROLES:
                raise DataError(
                    where, f"{name}[{i}].role", f"unknown role {msg['role']!r}; expected one of {CHAT_ROLES}"
                )
            if not isinstance(msg["content"], str):
                raise DataError(
                    where, f"{name}[{i}].content", f"expected a string, got {type(msg['content']).__name__}"
                )
            if msg["role"] in ("user", "assistant") and not msg["content"].strip():
                raise DataError(where, f"{name}[{i}].content", f"empty {msg['role']} message")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    if isinstance(value, list):
        raise DataError(where, name, "empty message list")
    raise DataError(where, name, f"expected a string or a chat message list, got {type(value).__name__}")


def check_float(
    value: Any, name: str, where: str, low: float = -math.inf, high: float = math.inf
) -> float | None:
    """An optional finite number in ``[low, high]`` (``None`` passes through)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(where, name, f"expected a number, got {type(value).__name__} {shorten(value)}")
    try:
        value = float(value)
    except OverflowError:  # an integer with hundreds of digits
        raise DataError(where, name, "the integer is too large for a float") from None
    if not math.isfinite(value):
        raise DataError(where, name, f"must be finite, got {value}")
    if not low <= value <= high:
        raise DataError(where, name, f"{value} is outside [{low}, {high}]")
    return value


def check_label(value: Any, name: str, where: str, num_classes: int | None = None) -> int:
    """An integer class label (bools accepted as 0/1)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise DataError(where, name, f"expected an integer label, got {type(value).__name__} {shorten(value)}")
    if num_classes is not None and not 0 <= value < num_classes:
        raise DataError(where, name, f"label {value} is outside [0, {num_classes - 1}]")
    return value


def check_text_pair_differs(a: Text, b: Text, where: str) -> None:
    if a == b:
        raise DataError(where, "chosen", "chosen and rejected are identical")


# --------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------


@dataclass
class SFTRow:
    """Supervised example: loss on ``completion`` only (chat: on the assistant turns)."""

    prompt: Text
    completion: Text
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreferenceRow:
    """A preference pair. ``soft_label`` = P(chosen preferred); ``rating`` is a Llama 2 level."""

    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = None
    rating: str | None = None
    soft_label: float | None = None
    strength: float | None = None
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class UnpairedRow:
    """One completion labelled desirable (``label=True``) or undesirable, with no partner (KTO's data)."""

    prompt: Text
    completion: Text
    label: bool
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepRow:
    """A step-by-step solution. ``labels[i]`` ∈ {1 correct, 0 neutral, -1 wrong} or ``None`` (unlabelled)."""

    prompt: str
    steps: list[str]
    labels: list[int | None]
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class WeakLabelRow:
    """A classification example with a hard label and optional soft label (class probabilities)."""

    text: str
    label: int
    soft_label: list[float] | None = None
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    label_field: str = field(default="label", compare=False, repr=False)  # the column ``label`` came from


@dataclass
class PromptRow:
    """A prompt for generation (PPO, rejection sampling, evaluation)."""

    prompt: Text
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


Row = Union[SFTRow, PreferenceRow, UnpairedRow, StepRow, WeakLabelRow, PromptRow]
ROW_TYPES: dict[str, type] = {
    "sft": SFTRow,
    "preference": PreferenceRow,
    "unpaired": UnpairedRow,
    "step": StepRow,
    "weak": WeakLabelRow,
    "prompt": PromptRow,
}
