"""Format adapters: raw records in the formats people publish -> validated rows.

An adapter is a pure function ``(raw, where) -> list[Row]``. Nearly every adapter returns one row; a
list lets one record expand to several (PRM800K branches). Adapters are registered in
:data:`ADAPTERS` by kind (``sft``, ``preference``, ``unpaired``, ``step``, ``weak``, ``prompt``) and format name;
:func:`detect_format` picks one from the record's keys and :func:`to_rows` applies it.

Columns an adapter does not read go into ``row.meta`` (never an error, never lost; UltraFeedback's
``messages``, a copy of ``chosen``, is the one column left out). :func:`convert` also returns them, so
that :func:`~lit_rlhf.data.sources.read_rows` reports them once per source (with a warning when one
looks like a misspelt column the format reads, e.g. ``margn``).
Every problem raises :class:`~lit_rlhf.data.schemas.DataError` naming ``where`` and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from lit_rlhf.data.schemas import (
    DataError,
    Message,
    PreferenceRow,
    PromptRow,
    Row,
    SFTRow,
    StepRow,
    Text,
    UnpairedRow,
    WeakLabelRow,
    check_float,
    check_label,
    check_text,
    check_text_pair_differs,
    require,
    shorten,
)

Adapter = Callable[[dict[str, Any], str], list[Row]]

HH_ASSISTANT = "\n\nAssistant:"
SHEPHERD_TAG = "ки"
SOFT_LABEL_SUM_TOL = 1e-3


# --------------------------------------------------------------------------------------------
# shared field helpers
# --------------------------------------------------------------------------------------------


def _field(obj: dict[str, Any], key: str, where: str, prefix: str = "") -> Any:
    """``require`` for a nested field, reported as ``prefix + key`` (e.g. ``question.problem``)."""
    try:
        return require(obj, key, where)
    except DataError as err:
        raise DataError(where, prefix + key, err.problem) from None


def _string(value: Any, name: str, where: str, allow_empty: bool = False) -> str:
    """A string (non-empty unless ``allow_empty``); chat message lists are rejected."""
    if not isinstance(value, str):
        raise DataError(where, name, f"expected a string, got {type(value).__name__}")
    return check_text(value, name, where, allow_empty=allow_empty)  # type: ignore[return-value]


def _messages(value: Any, name: str, where: str) -> list[Message]:
    """A non-empty, well-formed chat message list."""
    if not isinstance(value, list):
        raise DataError(where, name, f"expected a chat message list, got {type(value).__name__}")
    return check_text(value, name, where)  # type: ignore[return-value]


def _object(value: Any, name: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(where, name, f"expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, name: str, where: str, allow_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise DataError(where, name, f"expected a list, got {type(value).__name__}")
    if not value and not allow_empty:
        raise DataError(where, name, "empty list")
    return value


def _step_label(value: Any, name: str, where: str) -> int | None:
    """A step label: ``True``/``False`` -> 1/-1, an integer in {-1, 0, 1}, or ``None`` (unlabelled)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 1 if value else -1
    label = check_label(value, name, where)
    if label not in (-1, 0, 1):
        raise DataError(where, name, f"step label {label} is not one of -1, 0, 1")
    return label


def _soft_label(value: Any, name: str, where: str) -> list[float] | None:
    """Class probabilities: a list summing to 1, or one float P(class 1) -> ``[1 - p, p]``."""
    if value is None:
        return None
    if not isinstance(value, list):
        p = check_float(value, name, where, 0.0, 1.0)
        return [1.0 - p, p]  # type: ignore[operator]
    if len(value) < 2:
        raise DataError(where, name, f"expected at least 2 class probabilities, got {len(value)}")
    probs = [check_float(p, f"{name}[{i}]", where, 0.0, 1.0) for i, p in enumerate(value)]
    total = math.fsum(probs)  # type: ignore[arg-type]
    if abs(total - 1.0) > SOFT_LABEL_SUM_TOL:
        raise DataError(where, name, f"probabilities sum to {total:.6g}, expected 1")
    return probs  # type: ignore[return-value]


def _extras(raw: dict[str, Any], used: Iterable[str]) -> dict[str, Any]:
    """The columns an adapter did not read (they go into ``meta``); ``used`` count as read."""
    used = set(used)
    if isinstance(raw, _Reads):
        raw.asked |= used
    return {k: v for k, v in raw.items() if k not in used}


def _shared_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common prefix of two strings or lists."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _split_shared_messages(
    chosen: list[Message], rejected: list[Message], where: str
) -> tuple[list[Message], list[Message], list[Message]]:
    """Split two dialogues into (shared prompt messages, chosen rest, rejected rest)."""
    n = _shared_prefix_len(chosen, rejected)
    if n == 0:
        problem = "missing, and 'chosen'/'rejected' share no leading messages to use as the prompt"
        raise DataError(where, "prompt", problem)
    for name, rest in (("chosen", chosen[n:]), ("rejected", rejected[n:])):
        if not rest:
            raise DataError(where, name, "nothing left after removing the messages shared with the other response")
    return chosen[:n], chosen[n:], rejected[n:]


# --------------------------------------------------------------------------------------------
# sft
# --------------------------------------------------------------------------------------------


def sft_prompt_completion(raw: dict[str, Any], where: str) -> list[Row]:
    """TRL prompt-completion: ``prompt``, ``completion`` (strings or chat message lists)."""
    prompt = check_text(require(raw, "prompt", where), "prompt", where)
    completion = check_text(require(raw, "completion", where), "completion", where)
    return [SFTRow(prompt, completion, where, _extras(raw, ("prompt", "completion")))]


def sft_messages(raw: dict[str, Any], where: str) -> list[Row]:
    """A full dialogue ``messages``: the last assistant message is the completion, the rest the prompt.

    ``SFTDataModule(train_on="all_assistant")`` also trains the earlier assistant turns of the prompt.
    """
    messages = _messages(require(raw, "messages", where), "messages", where)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise DataError(where, "messages", "no assistant message to learn from")
    if last == 0:
        raise DataError(where, "messages", "no message before the assistant reply to use as the prompt")
    if last != len(messages) - 1:
        found = messages[-1]["role"]
        raise DataError(where, "messages", f"must end with the assistant reply; found {found!r} after it")
    return [SFTRow(messages[:last], [messages[last]], where, _extras(raw, ("messages",)))]


def sft_alpaca(raw: dict[str, Any], where: str) -> list[Row]:
    """Alpaca-like ``instruction``, optional ``input`` (appended after a blank line), ``output``."""
    prompt = _string(require(raw, "instruction", where), "instruction", where)
    extra = raw.get("input")
    if extra is not None and _string(extra, "input", where, allow_empty=True).strip():
        prompt = f"{prompt}\n\n{extra}"
    completion = _string(require(raw, "output", where), "output", where)
    return [SFTRow(prompt, completion, where, _extras(raw, ("instruction", "input", "output")))]


# --------------------------------------------------------------------------------------------
# preference
# --------------------------------------------------------------------------------------------

PREFERENCE_OPTIONS = ("margin", "rating", "soft_label", "strength", "strength_mean")


def _preference_row(
    raw: dict[str, Any], where: str, prompt: Text, chosen: Text, rejected: Text, used: Iterable[str], **meta: Any
) -> PreferenceRow:
    """Build a row with the optional ``margin``/``rating``/``soft_label``/``strength`` columns validated."""
    rating = raw.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, (str, int)):
            raise DataError(where, "rating", f"expected a string or an integer, got {type(rating).__name__}")
        rating = _string(str(rating), "rating", where)
    # `strength_mean` is what `lit-rlhf strength` writes (ensemble mean preference difference)
    strength_key = "strength" if raw.get("strength") is not None else "strength_mean"
    return PreferenceRow(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=check_float(raw.get("margin"), "margin", where),
        rating=rating,
        soft_label=check_float(raw.get("soft_label"), "soft_label", where, 0.0, 1.0),
        strength=check_float(raw.get(strength_key), strength_key, where),
        where=where,
        meta={**_extras(raw, (*used, *PREFERENCE_OPTIONS)), **meta},
    )


def preference_trl(raw: dict[str, Any], where: str) -> list[Row]:
    """TRL: ``prompt``, ``chosen``, ``rejected`` (strings or message lists).

    Without ``prompt`` ("implicit prompt"), ``chosen``/``rejected`` are full dialogues and their shared
    leading messages become the prompt.
    """
    chosen = check_text(require(raw, "chosen", where), "chosen", where)
    rejected = check_text(require(raw, "rejected", where), "rejected", where)
    check_text_pair_differs(chosen, rejected, where)
    if raw.get("prompt") is not None:
        prompt = check_text(raw["prompt"], "prompt", where)
    elif isinstance(chosen, list) and isinstance(rejected, list):
        prompt, chosen, rejected = _split_shared_messages(chosen, rejected, where)
    else:
        raise DataError(where, "prompt", "missing; plain-string pairs need a prompt (HH-RLHF transcripts: format 'hh')")
    return [_preference_row(raw, where, prompt, chosen, rejected, ("prompt", "chosen", "rejected"))]


HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
HH_CHAT_HINT = "read the file with format 'hh_chat' (turns as chat messages, loss on the assistant turns only)"


def _split_hh(chosen: str, rejected: str, where: str) -> tuple[str, str, str]:
    """Cut two HH transcripts after the last ``\n\nAssistant:`` of their shared part.

    Raises:
        DataError: the transcripts differ before their final assistant turn (a reply would hold later
            ``Human:`` turns, which a plain-text completion cannot keep out of the loss), or a reply is empty.
    """
    shared = chosen[: _shared_prefix_len(chosen, rejected)]
    cut = shared.rfind(HH_ASSISTANT)
    if cut < 0:
        raise DataError(where, "chosen", f"no {HH_ASSISTANT.strip()!r} turn shared by 'chosen' and 'rejected'")
    cut += len(HH_ASSISTANT)
    prompt, chosen_reply, rejected_reply = chosen[:cut], chosen[cut:], rejected[cut:]
    for name, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if HH_TURN.search(reply):
            turns = len(HH_TURN.findall(reply)) + 1
            problem = (f"'chosen' and 'rejected' differ before their last turn, so this reply holds {turns} turns "
                       f"(later 'Human:' turns included); {HH_CHAT_HINT}")
            raise DataError(where, name, problem)
        if not reply.strip():
            raise DataError(where, name, "empty assistant reply after the shared transcript")
    return prompt, chosen_reply, rejected_reply


def preference_hh(raw: dict[str, Any], where: str) -> list[Row]:
    """Anthropic HH-RLHF: ``chosen``/``rejected`` full ``\n\nHuman:``/``\n\nAssistant:`` transcripts.

    The prompt is the shared transcript up to and including its last ``\n\nAssistant:``; the rest of
    each transcript is the reply (kept as strings, leading space included, as in TRL and the DPO code).
    A pair whose transcripts differ before the final reply is an error pointing to :func:`preference_hh_chat`.
    """
    chosen = _string(require(raw, "chosen", where), "chosen", where)
    rejected = _string(require(raw, "rejected", where), "rejected", where)
    check_text_pair_differs(chosen, rejected, where)
    prompt, chosen, rejected = _split_hh(chosen, rejected, where)
    return [_preference_row(raw, where, prompt, chosen, rejected, ("chosen", "rejected"))]


def hh_messages(transcript: str, name: str, where: str) -> list[Message]:
    """``"\n\nHuman: a\n\nAssistant: b"`` -> ``[user a, assistant b]`` (contents stripped)."""
    pieces = HH_TURN.split(transcript)
    if pieces[0].strip() or len(pieces) < 3:
        raise DataError(where, name, "expected a transcript of '\n\nHuman:' / '\n\nAssistant:' turns from the start")
    messages = [{"role": HH_ROLES[role], "content": text.strip()} for role, text in zip(pieces[1::2], pieces[2::2])]
    return check_text(messages, name, where)  # type: ignore[return-value]


def preference_hh_chat(raw: dict[str, Any], where: str) -> list[Row]:
    """Anthropic HH-RLHF transcripts as chat: every row's prompt and replies are message lists.

    The prompt is the longest shared run of turns that ends with a ``Human`` turn; ``chosen`` and
    ``rejected`` are the remaining turns of each transcript. Usually that is the final assistant reply,
    but transcripts that differ earlier keep their later turns (``[assistant, user, assistant]``): the
    data modules put the loss on assistant turns only, so the human turns are context, never targets.
    """
    chosen = hh_messages(_string(require(raw, "chosen", where), "chosen", where), "chosen", where)
    rejected = hh_messages(_string(require(raw, "rejected", where), "rejected", where), "rejected", where)
    check_text_pair_differs(chosen, rejected, where)
    n = _shared_prefix_len(chosen, rejected)
    while n > 0 and chosen[n - 1]["role"] != "user":
        n -= 1
    if n == 0:
        raise DataError(where, "chosen", "'chosen' and 'rejected' share no leading 'Human:' turn to use as the prompt")
    for name, rest in (("chosen", chosen[n:]), ("rejected", rejected[n:])):
        if not rest or rest[0]["role"] != "assistant":
            raise DataError(where, name, "no assistant reply after the shared transcript")
    return [_preference_row(raw, where, chosen[:n], chosen[n:], rejected[n:], ("chosen", "rejected"))]


def preference_ultrafeedback_margin(raw: dict[str, Any], where: str) -> list[Row]:
    """UltraFeedback-binarized with ``margin = score_chosen - score_rejected`` (``RewardModel(margin="column")``
    then uses the score gap as the Llama 2 margin; a ``margin`` column, if any, is overridden)."""
    rows = preference_ultrafeedback(raw, where)
    for row in rows:
        row.margin = row.meta["score_diff"]  # type: ignore[union-attr]
    return rows


def preference_ultrafeedback(raw: dict[str, Any], where: str) -> list[Row]:
    """UltraFeedback-binarized: ``chosen``/``rejected`` with the user turn, ``score_chosen``, ``score_rejected``.

    The shared leading messages become the prompt (the ``prompt`` column is used only when nothing is
    shared). ``score_chosen - score_rejected`` goes to ``meta["score_diff"]``; ``margin`` stays ``None``.
    The ``messages`` column (a copy of ``chosen``) is not kept.
    """
    chosen = _messages(require(raw, "chosen", where), "chosen", where)
    rejected = _messages(require(raw, "rejected", where), "rejected", where)
    check_text_pair_differs(chosen, rejected, where)
    prompt: Text
    if raw.get("prompt") is not None and _shared_prefix_len(chosen, rejected) == 0:
        prompt = check_text(raw["prompt"], "prompt", where)
    else:
        prompt, chosen, rejected = _split_shared_messages(chosen, rejected, where)
    score_chosen = check_float(require(raw, "score_chosen", where), "score_chosen", where)
    score_rejected = check_float(require(raw, "score_rejected", where), "score_rejected", where)
    used = ("prompt", "chosen", "rejected", "messages", "score_chosen", "score_rejected")
    scores = {"score_chosen": score_chosen, "score_rejected": score_rejected}
    row = _preference_row(raw, where, prompt, chosen, rejected, used, **scores)
    row.meta["score_diff"] = score_chosen - score_rejected  # type: ignore[operator]
    return [row]


# --------------------------------------------------------------------------------------------
# step labels
# --------------------------------------------------------------------------------------------


def unpaired_trl(raw: dict[str, Any], where: str) -> list[Row]:
    """TRL's unpaired preference format: ``prompt``, ``completion`` and a boolean ``label`` (desirable or not)."""
    prompt = check_text(require(raw, "prompt", where), "prompt", where)
    completion = check_text(require(raw, "completion", where), "completion", where)
    label = require(raw, "label", where)
    if isinstance(label, int) and not isinstance(label, bool) and label in (0, 1):
        label = bool(label)
    if not isinstance(label, bool):
        raise DataError(where, "label", f"expected true/false (desirable or not), got {shorten(label)}")
    return [UnpairedRow(prompt, completion, label, where, _extras(raw, ("prompt", "completion", "label")))]


def unpaired_from_pairs(raw: dict[str, Any], where: str) -> list[Row]:
    """A preference pair (any preference format) as two unpaired rows: chosen desirable, rejected undesirable."""
    rows = ADAPTERS["preference"][detect_format("preference", raw, where)](raw, where)
    return [UnpairedRow(r.prompt, completion, label, r.where, dict(r.meta))
            for r in rows for completion, label in ((r.chosen, True), (r.rejected, False))]


def step_trl(raw: dict[str, Any], where: str) -> list[Row]:
    """TRL stepwise: ``prompt``, ``completions`` (one string per step), ``labels`` (bool -> 1/-1, or -1/0/1)."""
    prompt = _string(require(raw, "prompt", where), "prompt", where)
    completions = _list(require(raw, "completions", where), "completions", where)
    steps = [_string(s, f"completions[{i}]", where) for i, s in enumerate(completions)]
    labels = _list(require(raw, "labels", where), "labels", where, allow_empty=True)
    if len(labels) != len(steps):
        raise DataError(where, "labels", f"has {len(labels)} labels for {len(steps)} completions")
    labels = [_step_label(v, f"labels[{i}]", where) for i, v in enumerate(labels)]
    return [StepRow(prompt, steps, labels, where, _extras(raw, ("prompt", "completions", "labels")))]


def _prm_completion(step: dict[str, Any], index: int, prefix: str, where: str) -> tuple[str, int | None]:
    """(text, rating) of ``step["completions"][index]``."""
    name = f"{prefix}.completions[{index}]"
    completion = _object(step["completions"][index], name, where)
    text = _string(_field(completion, "text", where, f"{name}."), f"{name}.text", where)
    return text, _step_label(completion.get("rating"), f"{name}.rating", where)


def _prm800k(raw: dict[str, Any], where: str, branches: bool) -> list[Row]:
    """Walk PRM800K ``label.steps`` along the chosen (or human) completions; see :func:`step_prm800k`."""
    question = _object(require(raw, "question", where), "question", where)
    problem = _string(_field(question, "problem", where, "question."), "question.problem", where)
    label = _object(require(raw, "label", where), "label", where)
    steps = _list(_field(label, "steps", where, "label."), "label.steps", where, allow_empty=True)
    finish_reason = label.get("finish_reason")
    meta = {
        **_extras(raw, ("question", "label")),
        "finish_reason": finish_reason,
        "ground_truth_answer": question.get("ground_truth_answer"),
    }
    texts: list[str] = []
    labels: list[int | None] = []
    rows: list[Row] = []
    for i, step in enumerate(steps):
        prefix = f"label.steps[{i}]"
        step = _object(step, prefix, where)
        n = len(_list(step.get("completions") or [], f"{prefix}.completions", where, allow_empty=True))
        chosen, human = step.get("chosen_completion"), step.get("human_completion")
        if chosen is not None and (isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < n):
            raise DataError(where, f"{prefix}.chosen_completion", f"{chosen!r} is not an index into {n} completions")
        if branches:
            for j in range(n):
                if j != chosen:
                    text, rating = _prm_completion(step, j, prefix, where)
                    rows.append(StepRow(problem, [*texts, text], [*labels, rating], where, {**meta, "branch_step": i}))
        if chosen is not None:
            text, rating = _prm_completion(step, chosen, prefix, where)
        elif human is not None:
            human_text = human.get("text") if isinstance(human, dict) else human
            text, rating = _string(human_text, f"{prefix}.human_completion", where), 1
        else:
            if finish_reason == "found_error" and not branches:
                for j in range(n):
                    text, rating = _prm_completion(step, j, prefix, where)
                    if rating == -1:
                        texts.append(text)
                        labels.append(-1)
                        break
            break
        texts.append(text)
        labels.append(rating)
    if not texts:
        raise DataError(where, "label.steps", f"no labelled step (finish_reason={finish_reason!r})")
    return [StepRow(problem, texts, labels, where, meta), *rows]


def step_prm800k(raw: dict[str, Any], where: str) -> list[Row]:
    """PRM800K phase 1/2: one row, the labelled trajectory.

    Each step is the chosen completion (label = its rating in {-1, 0, 1}, ``None`` if unrated) or the
    human completion (label 1). The walk stops at the first step with neither; when
    ``finish_reason == "found_error"`` that step's first completion rated -1 ends the trajectory with
    label -1. ``meta`` keeps ``finish_reason``, ``ground_truth_answer`` and the top-level columns.
    """
    return _prm800k(raw, where, branches=False)


def step_prm800k_branches(raw: dict[str, Any], where: str) -> list[Row]:
    """PRM800K expanded like TRL's conversion: the trajectory plus one row per unchosen alternative.

    An alternative at step ``i`` gives the row ``trajectory[:i] + [alternative]`` (``meta["branch_step"] = i``).
    """
    return _prm800k(raw, where, branches=True)


def step_math_shepherd(raw: dict[str, Any], where: str) -> list[Row]:
    """Math-Shepherd: ``input`` with the tag ``ки`` after every step, ``label`` = the same text with ``+``/``-`` tags.

    The prompt is the text before the first step, which starts at the last ``Step 1:`` (any case) before
    the first tag, so a question that itself says "step 1:" stays whole; without a ``Step 1:`` the prompt
    is the first line. Steps keep their ``Step k:`` heading. ``+`` -> 1, ``-`` -> -1.
    """
    text = _string(require(raw, "input", where), "input", where)
    label = _string(require(raw, "label", where), "label", where)
    marked = text.replace(SHEPHERD_TAG, "\x00")  # one character per tag, so positions line up with `label`
    tags = [i for i, c in enumerate(marked) if c == "\x00"]
    if not tags:
        raise DataError(where, "input", f"no step tag {SHEPHERD_TAG!r}")
    if len(label) != len(marked):
        problem = f"has {len(label)} characters, expected {len(marked)} ('input' with each {SHEPHERD_TAG!r} as '+'/'-')"
        raise DataError(where, "label", problem)
    signs = [label[i] for i in tags]
    unmarked = [k + 1 for k, s in enumerate(signs) if s not in ("+", "-")]
    if unmarked:
        raise DataError(where, "label", f"no '+'/'-' at the tag of step(s) {unmarked} of {len(tags)}")
    starts = list(re.finditer(r"step 1:", marked[: tags[0]], re.IGNORECASE))
    end = starts[-1].start() if starts else marked.find("\n")
    if end <= 0:
        raise DataError(where, "input", "cannot find the prompt: no 'Step 1:' and no line break before the steps")
    if tags[0] < end:
        raise DataError(where, "input", "a step tag appears inside the prompt (before the first line break)")
    *pieces, tail = marked[end:].split("\x00")
    steps = [p.strip() for p in pieces]
    if any(not s for s in steps):
        raise DataError(where, "input", "empty step between two step tags")
    if tail.strip():
        raise DataError(where, "input", f"text after the last step tag has no label: {tail.strip()[:40]!r}")
    labels: list[int | None] = [1 if s == "+" else -1 for s in signs]
    return [StepRow(marked[:end].strip(), steps, labels, where, _extras(raw, ("input", "label")))]


# --------------------------------------------------------------------------------------------
# weak labels
# --------------------------------------------------------------------------------------------


def _class(value: Any, name: str, where: str, num_classes: int | None) -> int:
    """A class id ``>= 0`` (and ``< num_classes`` when known; the data module checks its ``num_classes``)."""
    label = check_label(value, name, where, num_classes)
    if label < 0:
        raise DataError(where, name, f"label {label} is negative; classes are 0, 1, ...")
    return label


def _weak_row(
    raw: dict[str, Any], where: str, text_key: str, label_key: str, used: Iterable[str], **meta: Any
) -> WeakLabelRow:
    text = _string(require(raw, text_key, where), text_key, where)
    soft = _soft_label(raw.get("soft_label"), "soft_label", where)
    label = _class(require(raw, label_key, where), label_key, where, len(soft) if soft else None)
    extras = _extras(raw, (*used, text_key, label_key, "soft_label"))
    return WeakLabelRow(text, label, soft, where, {**extras, **meta}, label_field=label_key)


def weak_w2s(raw: dict[str, Any], where: str) -> list[Row]:
    """OpenAI weak-to-strong jsonl: ``txt``, ``hard_label``, optional ``soft_label`` (probabilities), ``gt_label``."""
    gt = raw.get("gt_label")
    meta = {} if gt is None else {"gt_label": _class(gt, "gt_label", where, None)}
    return [_weak_row(raw, where, "txt", "hard_label", ("gt_label",), **meta)]


def weak_text_label(raw: dict[str, Any], where: str) -> list[Row]:
    """``text``, ``label``, optional ``soft_label`` (a float P(class 1) or a probability list)."""
    return [_weak_row(raw, where, "text", "label", ())]


# --------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------


def prompt_prompt(raw: dict[str, Any], where: str) -> list[Row]:
    """``prompt``: a string or a chat message list."""
    prompt = check_text(require(raw, "prompt", where), "prompt", where)
    return [PromptRow(prompt, where, _extras(raw, ("prompt",)))]


def prompt_messages(raw: dict[str, Any], where: str) -> list[Row]:
    """``messages``: a final assistant message is dropped from the prompt and kept as ``meta["reference"]``."""
    messages = _messages(require(raw, "messages", where), "messages", where)
    meta = _extras(raw, ("messages",))
    if messages[-1]["role"] == "assistant":
        meta["reference"] = messages.pop()["content"]
        if not messages:
            raise DataError(where, "messages", "only an assistant message, no prompt")
    return [PromptRow(messages, where, meta)]


def prompt_question(raw: dict[str, Any], where: str) -> list[Row]:
    """``question`` (or ``problem``): a string."""
    key = "question" if raw.get("question") is not None else "problem"
    prompt = _string(require(raw, key, where), key, where)
    return [PromptRow(prompt, where, _extras(raw, (key,)))]


# --------------------------------------------------------------------------------------------
# registry and detection
# --------------------------------------------------------------------------------------------

ADAPTERS: dict[str, dict[str, Adapter]] = {
    "sft": {"prompt_completion": sft_prompt_completion, "messages": sft_messages, "alpaca": sft_alpaca},
    "preference": {
        "trl": preference_trl,
        "hh": preference_hh,
        "hh_chat": preference_hh_chat,
        "ultrafeedback": preference_ultrafeedback,
        "ultrafeedback_margin": preference_ultrafeedback_margin,
    },
    "unpaired": {"trl": unpaired_trl, "paired": unpaired_from_pairs},
    "step": {
        "trl": step_trl,
        "prm800k": step_prm800k,
        "prm800k_branches": step_prm800k_branches,
        "math_shepherd": step_math_shepherd,
    },
    "weak": {"w2s": weak_w2s, "text_label": weak_text_label},
    "prompt": {"prompt": prompt_prompt, "messages": prompt_messages, "question": prompt_question},
}


class Rule(NamedTuple):
    """How :func:`detect_format` recognises a format: all ``keys`` present (not null) and ``test`` true."""

    format: str
    keys: tuple[str, ...]
    note: str = ""
    test: Callable[[dict[str, Any]], bool] | None = None

    def matches(self, raw: dict[str, Any]) -> bool:
        return all(raw.get(k) is not None for k in self.keys) and (self.test is None or self.test(raw))

    def describe(self) -> str:
        return f"{self.format} ({' + '.join(self.keys)}{', ' + self.note if self.note else ''})"


# Per kind, in order; the first matching rule wins.
DETECTION: dict[str, list[Rule]] = {
    "sft": [
        Rule("prompt_completion", ("prompt", "completion")),
        Rule("messages", ("messages",)),
        Rule("alpaca", ("instruction", "output")),
    ],
    "preference": [
        Rule("ultrafeedback", ("chosen", "rejected", "score_chosen", "score_rejected"), "chat message lists",
             lambda r: isinstance(r["chosen"], list)),
        Rule("trl", ("prompt", "chosen", "rejected")),
        Rule("hh", ("chosen", "rejected"), "HH-RLHF transcripts", lambda r: isinstance(r["chosen"], str)),
        Rule("trl", ("chosen", "rejected"), "dialogues with a shared prompt"),
    ],
    "unpaired": [
        Rule("trl", ("prompt", "completion", "label")),
        Rule("paired", ("chosen", "rejected"), "each pair split into a desirable and an undesirable row"),
    ],
    "step": [
        Rule("trl", ("prompt", "completions", "labels")),
        Rule("prm800k", ("question", "label"), "label.steps", lambda r: isinstance(r["label"], dict)),
        Rule("math_shepherd", ("input", "label")),
    ],
    "weak": [
        Rule("w2s", ("txt", "hard_label")),
        Rule("text_label", ("text", "label")),
    ],
    "prompt": [
        Rule("prompt", ("prompt",)),
        Rule("messages", ("messages",)),
        Rule("question", ("question",)),
        Rule("question", ("problem",)),
    ],
}


def _check_kind(kind: str) -> None:
    if kind not in ADAPTERS:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {sorted(ADAPTERS)}")


def detect_format(kind: str, raw: dict[str, Any], where: str) -> str:
    """The name of the first ``kind`` format (see :data:`DETECTION`) whose fields ``raw`` has.

    Raises:
        DataError: no format matches. The message lists the fields present and the formats known; when
            some format's fields are partly present, the error names that format's first missing field.
    """
    _check_kind(kind)
    rules = DETECTION[kind]
    for rule in rules:
        if rule.matches(raw):
            return rule.format
    present = ", ".join(sorted(map(str, raw))) or "none"
    known = "; ".join(rule.describe() for rule in rules)
    problem = f"no {kind} format matches the fields present ({present}); expected one of: {known}"
    closest = max(rules, key=lambda rule: sum(raw.get(k) is not None for k in rule.keys))
    missing = [k for k in closest.keys if raw.get(k) is None]
    if len(missing) == len(closest.keys):
        raise DataError(where, None, problem)
    raise DataError(where, missing[0], f"missing for format '{closest.format}'; {problem}")


class _Reads(dict):
    """A record that remembers the columns looked up in it (``[]``, ``get`` and ``in``)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        super().__init__(raw)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.asked.add(key)  # type: ignore[arg-type]
        return super().__contains__(key)


class Converted(NamedTuple):
    """What :func:`convert` makes of one record."""

    rows: list[Row]
    asked: frozenset[str]  # the columns the adapter looked for (present or not)
    unused: frozenset[str]  # the record's columns it did not read


def convert(kind: str, raw: Any, where: str, format: str = "auto") -> Converted:
    """Validate one raw record of ``kind`` into rows (with ``format`` or the detected one), and tell
    which of its columns the adapter did not read."""
    _check_kind(kind)
    if not isinstance(raw, dict):
        raise DataError(where, None, f"expected an object (dict), got {type(raw).__name__}")
    if format == "auto":
        format = detect_format(kind, raw, where)
    if format not in ADAPTERS[kind]:
        raise ValueError(f"unknown {kind} format {format!r}; expected 'auto' or one of {sorted(ADAPTERS[kind])}")
    record = _Reads(raw)
    rows = ADAPTERS[kind][format](record, where)
    return Converted(rows, frozenset(record.asked), frozenset(raw.keys() - record.asked))


def to_rows(kind: str, raw: Any, where: str, format: str = "auto") -> list[Row]:
    """Validate one raw record of ``kind`` into rows, with ``format`` or the detected one."""
    return convert(kind, raw, where, format).rows
