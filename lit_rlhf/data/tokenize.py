"""Rows -> token ids. One place decides how prompts, completions, chat and truncation are encoded.

Every encoder returns a plain dict of lists (ready for :class:`~lit_rlhf.data.collate.Collator`) or
raises :class:`TooLong` so the data module can count and report the filtered row.

Chat rows are rendered with the tokenizer's chat template (tokenizers without one get
:data:`~lit_rlhf.models.tokenizer.DEFAULT_CHAT_TEMPLATE` from ``load_tokenizer``). The loss mask of a
dialogue comes from :func:`chat_ids`: it renders growing prefixes of the dialogue and diffs their token
ids, so each assistant turn's tokens are exactly those the template adds for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lit_rlhf.data.schemas import (
    DataError,
    Message,
    PreferenceRow,
    PromptRow,
    SFTRow,
    StepRow,
    Text,
    UnpairedRow,
    WeakLabelRow,
)

Truncation = Literal["drop", "truncate_prompt", "error"]
TrainOn = Literal["all_assistant", "last_assistant"]


class TooLong(Exception):
    """The row does not fit ``max_length`` under the chosen truncation policy."""


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def as_dialogue(prompt: Text, completion: Text) -> tuple[list[Message], int]:
    """``prompt + completion`` as one message list (strings become a user / an assistant turn), and the
    index of the first completion message."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    reply = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
    return messages + reply, len(messages)


def render_prompt(tokenizer: Any, prompt: Text) -> str:
    """Plain prompts as they are; chat prompts through the chat template with the generation prompt."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def render_completion(tokenizer: Any, prompt: Text, completion: Text, where: str = "") -> str:
    """The completion text exactly as it follows the rendered prompt.

    A chat completion (or a string answering a chat prompt) is rendered with the template and the
    rendered prompt is cut off its front.
    """
    if isinstance(prompt, str) and isinstance(completion, str):
        return completion
    messages, start = as_dialogue(prompt, completion)
    head = tokenizer.apply_chat_template(messages[:start], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(head):
        raise DataError(where, "completion", "the chat template does not render the prompt as a prefix of the dialogue")
    return full[len(head):]


def chat_ids(
    tokenizer: Any, messages: list[Message], trained: Sequence[bool], where: str = "", field: str = "messages"
) -> tuple[list[int], list[int], list[int]]:
    """Token ids of a rendered dialogue, its loss mask, and where each assistant turn starts.

    For every assistant message ``i`` the dialogue is rendered up to ``i`` with the generation prompt
    (``head``) and up to ``i`` included (``full``); the tokens ``full`` adds to ``head`` are message
    ``i``'s (its text and the template's end-of-turn tokens) and get mask ``trained[i]``. Everything
    else (system/user turns, role headers) gets 0. Each rendering must extend the token ids of the
    previous one (the prefix property); templates that rewrite earlier turns break it.

    Args:
        tokenizer: a tokenizer with a chat template.
        messages: the dialogue.
        trained: one flag per message; only assistant messages can be trained.
        where: row location for errors.
        field: field name for errors.
    Returns:
        ``(ids, mask, starts)``: ``starts[k]`` = number of tokens before the ``k``-th assistant message's
        own tokens (i.e. the length of its prompt, generation header included).
    Raises:
        DataError: a rendering is not an extension of the previous one (names the message and token).
    """
    ids: list[int] = []
    mask: list[int] = []
    starts: list[int] = []

    def extend(upto: int, generation: bool, value: int) -> None:
        try:
            text = tokenizer.apply_chat_template(messages[:upto], tokenize=False, add_generation_prompt=generation)
        except Exception as err:  # jinja raises its own error types (e.g. a template that rejects a role order)
            raise DataError(where, field, f"the chat template cannot render messages[:{upto}]: {err}") from err
        new = _ids(tokenizer, text, special=False)
        if new[: len(ids)] != ids:
            k = next((k for k, (a, b) in enumerate(zip(new, ids)) if a != b), min(len(new), len(ids)))
            what = f"messages[:{upto}]" + (" with the generation prompt" if generation else "")
            raise DataError(
                where, field,
                f"the chat template breaks the prefix property needed for loss masks: {what} does not extend the "
                f"tokens rendered before it (first difference at token {k} of {len(ids)}: "
                f"{tokenizer.decode(new[k:k + 8])!r} vs {tokenizer.decode(ids[k:k + 8])!r})",
            )
        mask.extend([value] * (len(new) - len(ids)))
        ids[:] = new

    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            extend(i, True, 0)
            starts.append(len(ids))
            extend(i + 1, False, int(bool(trained[i])))
    extend(len(messages), False, 0)  # anything after the last assistant turn
    return ids, mask, starts


class Encoder:
    """Tokenises rows for one tokenizer, ``max_length`` and truncation policy.

    Args:
        tokenizer: a Hugging Face tokenizer.
        max_length: longest sequence (prompt + completion) in tokens.
        truncation: ``drop`` (count and report), ``truncate_prompt`` (keep the prompt's end), ``error``.
    """

    def __init__(self, tokenizer: Any, max_length: int = 512, truncation: Truncation = "drop") -> None:
        self.tokenizer, self.max_length, self.truncation = tokenizer, max_length, truncation
        self.cut = 0  # rows cut to fit under ``truncate_prompt`` (the data module reports the count)

    # -- building blocks --------------------------------------------------------------------
    def prompt_ids(self, prompt: Text) -> list[int]:
        """Prompt tokens; plain prompts get the tokenizer's BOS, rendered chat text already has it."""
        return _ids(self.tokenizer, render_prompt(self.tokenizer, prompt), special=isinstance(prompt, str))

    def completion_ids(self, prompt: Text, completion: Text, where: str) -> list[int]:
        """Completion tokens; plain completions end with EOS (or SEP), chat ones with the template's own end."""
        ids = _ids(self.tokenizer, render_completion(self.tokenizer, prompt, completion, where), special=False)
        if isinstance(prompt, str) and isinstance(completion, str):
            end = self.tokenizer.eos_token_id
            end = self.tokenizer.sep_token_id if end is None else end  # encoders (BERT) end with [SEP]
            ids = ids + ([end] if end is not None else [])
        return ids

    def excess(self, lengths: Sequence[int], prompt_len: int, where: str, fields: Sequence[str]) -> int:
        """How many tokens to cut off the front of sequences that share a ``prompt_len``-token prompt.

        0 if the longest fits. Under ``truncate_prompt`` the prompt's start is cut, the same for every
        sequence, as long as one prompt token is left (completions are never cut); otherwise the row is
        counted as too long (``drop``, raises :class:`TooLong`) or stops the run (``error``, a
        :class:`DataError` naming ``prompt`` if the prompt alone fills ``max_length``, else the field of
        the longest sequence).
        """
        longest = max(lengths)
        excess = longest - self.max_length
        if excess <= 0:
            return 0
        if self.truncation == "truncate_prompt" and excess < prompt_len:
            self.cut += 1
            return excess
        if self.truncation == "error":
            if prompt_len >= self.max_length:
                problem = f"{prompt_len} prompt tokens leave no room for the completion in max_length={self.max_length}"
                raise DataError(where, "prompt", problem)
            field = fields[list(lengths).index(longest)]
            problem = (
                f"{longest} tokens ({prompt_len} prompt + {longest - prompt_len} {field}) "
                f"exceed max_length={self.max_length}"
            )
            raise DataError(where, field, problem)
        raise TooLong(where)

    def fit(
        self, ids: list[int], mask: list[int], prompt_len: int, where: str, field: str = "completion"
    ) -> tuple[list[int], list[int], int]:
        """Apply the truncation policy (see :meth:`excess`) to a sequence whose first ``prompt_len`` tokens are
        the prompt."""
        cut = self.excess([len(ids)], prompt_len, where, [field])
        return ids[cut:], mask[cut:], prompt_len - cut

    def limit(self, ids: list[int], where: str, field: str, keep: Literal["start", "end"] | None) -> list[int]:
        """Hold one sequence to ``max_length``: cut it (keeping its ``keep`` side, if it may be cut) under
        ``truncate_prompt``, else count it as too long (``drop``) or stop (``error``)."""
        if len(ids) <= self.max_length:
            return ids
        if self.truncation == "error":
            raise DataError(where, field, f"{len(ids)} tokens exceed max_length={self.max_length}")
        if self.truncation == "truncate_prompt" and keep is not None:
            self.cut += 1
            return ids[-self.max_length:] if keep == "end" else ids[: self.max_length]
        raise TooLong(where)

    def pair(
        self,
        prompt: Text,
        completion: Text,
        where: str,
        train_on: TrainOn = "last_assistant",
        field: str = "completion",
    ) -> tuple[list[int], list[int], list[int]]:
        """``(input_ids, completion_mask, prompt_ids)`` after truncation (see :meth:`excess`).

        Plain strings: prompt then completion (+EOS), mask on the completion. Chat (either side a message
        list): the dialogue from :func:`chat_ids`, mask on the completion's assistant turns
        (``last_assistant``) or on every assistant turn (``all_assistant``); ``prompt_ids`` end where the
        completion's first assistant turn starts.
        """
        ids, mask, prompt_len = self.fit(*self.joined(prompt, completion, where, train_on), where, field)
        return ids, mask, ids[:prompt_len]

    def group(
        self, prompt: Text, completions: Sequence[Text], where: str, fields: Sequence[str]
    ) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        """``[(input_ids, completion_mask), ...]`` of several completions of one prompt, and the prompt ids.

        A prompt that must be cut is cut by the same tokens in every sequence, so they keep sharing it.
        """
        joined = [self.joined(prompt, c, where, "last_assistant") for c in completions]
        prompt_len = joined[0][2]
        cut = self.excess([len(ids) for ids, _, _ in joined], prompt_len, where, fields)
        return [(ids[cut:], mask[cut:]) for ids, mask, _ in joined], joined[0][0][cut:prompt_len]

    def joined(self, prompt: Text, completion: Text, where: str, train_on: TrainOn) -> tuple[list[int], list[int], int]:
        """``(input_ids, completion_mask, prompt_len)`` of :meth:`pair` before truncation."""
        if isinstance(prompt, str) and isinstance(completion, str):
            p, c = self.prompt_ids(prompt), self.completion_ids(prompt, completion, where)
            ids, mask, prompt_len = p + c, [0] * len(p) + [1] * len(c), len(p)
        else:
            messages, start = as_dialogue(prompt, completion)
            if messages[start]["role"] != "assistant":
                raise DataError(
                    where, "completion", f"must start with an assistant message, got {messages[start]['role']!r}"
                )
            if train_on not in ("all_assistant", "last_assistant"):
                raise ValueError(f"train_on must be 'all_assistant' or 'last_assistant', got {train_on!r}")
            trained = [train_on == "all_assistant" or i >= start for i in range(len(messages))]
            ids, mask, starts = chat_ids(self.tokenizer, messages, trained, where)
            prompt_len = starts[sum(m["role"] == "assistant" for m in messages[:start])]
        return ids, mask, prompt_len

    # -- one encoder per row type -----------------------------------------------------------
    def sft(self, row: SFTRow, train_on: TrainOn = "last_assistant") -> dict[str, Any]:
        """Prompt + completion with the loss mask of :meth:`pair`."""
        ids, mask, prompt_ids = self.pair(row.prompt, row.completion, row.where, train_on)
        return {
            "input_ids": ids, "completion_mask": mask, "prompt_ids": prompt_ids,
            "prompt_text": render_prompt(self.tokenizer, row.prompt),
        }

    def preference(self, row: PreferenceRow) -> dict[str, Any]:
        """Chosen and rejected sequences (see :meth:`group`: a cut prompt stays the same in both)."""
        seqs, prompt_ids = self.group(row.prompt, [row.chosen, row.rejected], row.where, ["chosen", "rejected"])
        (chosen, chosen_mask), (rejected, rejected_mask) = seqs
        return {
            "chosen_input_ids": chosen, "chosen_completion_mask": chosen_mask,
            "rejected_input_ids": rejected, "rejected_completion_mask": rejected_mask,
            "margin": row.margin, "soft_label": row.soft_label, "strength": row.strength, "rating": row.rating,
            "gold_label": row.meta.get("gold_label"),
            "prompt_ids": prompt_ids, "prompt_text": render_prompt(self.tokenizer, row.prompt),
        }

    def unpaired(self, row: UnpairedRow) -> dict[str, Any]:
        """Prompt + completion (mask on the completion) and its label; ``prompt_ids`` for mismatched KL pairs."""
        ids, mask, prompt_ids = self.pair(row.prompt, row.completion, row.where)
        return {"input_ids": ids, "completion_mask": mask, "prompt_ids": prompt_ids, "label": row.label,
                "prompt_text": render_prompt(self.tokenizer, row.prompt)}

    def prompt(self, row: PromptRow) -> dict[str, Any]:
        ids = self.limit(self.prompt_ids(row.prompt), row.where, "prompt", keep="end")
        return {"input_ids": ids, "prompt_ids": ids, "prompt_text": render_prompt(self.tokenizer, row.prompt),
                "meta": row.meta}

    def weak(self, row: WeakLabelRow, num_classes: int) -> dict[str, Any]:
        ids = self.limit(_ids(self.tokenizer, row.text, special=True), row.where, "text", keep="start")
        if not 0 <= row.label < num_classes:
            raise DataError(
                row.where, row.label_field,
                f"label {row.label} is outside [0, {num_classes - 1}] (num_classes={num_classes})",
            )
        gold = row.meta.get("gt_label")
        if isinstance(gold, int) and not 0 <= gold < num_classes:
            raise DataError(
                row.where, "gt_label", f"label {gold} is outside [0, {num_classes - 1}] (num_classes={num_classes})"
            )
        soft = row.soft_label if row.soft_label is not None else [float(k == row.label) for k in range(num_classes)]
        if len(soft) != num_classes:
            raise DataError(row.where, "soft_label", f"has {len(soft)} classes, expected {num_classes}")
        return {"input_ids": ids, "label": row.label, "soft_label": soft}

    def steps(self, row: StepRow, separator: str, label_of: dict[int, int], supervise: str) -> dict[str, Any]:
        """Prompt + steps, each followed by ``separator``; a step's label sits on its last token.

        Args:
            label_of: maps a step rating (1, 0, -1) to a class id, or to ``-100`` (ignore).
            supervise: ``first_error`` (steps up to and including the first wrong one), ``all``, ``last``.
        """
        sep = _ids(self.tokenizer, separator, special=False)
        if not sep:
            raise ValueError(f"the step separator {separator!r} tokenises to no tokens")
        ids = self.prompt_ids(row.prompt) + sep
        prompt_len = len(ids)
        labels = [-100] * len(ids)
        ratings = list(row.labels)
        if supervise == "first_error" and -1 in ratings:
            ratings = ratings[: ratings.index(-1) + 1]
        elif supervise == "last":
            ratings = [None] * (len(ratings) - 1) + ratings[-1:]
        for i, step in enumerate(row.steps):
            step_ids = _ids(self.tokenizer, step, special=False) + sep
            rating = ratings[i] if i < len(ratings) else None
            ids += step_ids
            labels += [-100] * (len(step_ids) - 1) + [-100 if rating is None else label_of[rating]]
        self.limit(ids, row.where, "prompt" if prompt_len >= self.max_length else "completions", keep=None)
        return {"input_ids": ids, "labels": labels, "prompt_text": row.prompt}
