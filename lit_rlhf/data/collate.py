"""Padding and batching."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

PAD_VALUES = {"input_ids": None, "labels": -100, "mask": 0}


def pad(seqs: list[list[int]], value: int, side: Literal["right", "left"] = "right") -> torch.Tensor:
    """Pad lists of ints to ``(B, T_max)``."""
    width = max(len(s) for s in seqs)
    rows = [(s + [value] * (width - len(s))) if side == "right" else ([value] * (width - len(s)) + s) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def _pad_value(key: str, pad_id: int) -> int:
    for suffix, value in PAD_VALUES.items():
        if key.endswith(suffix):
            return pad_id if value is None else value
    raise KeyError(key)


class Collator:
    """Pads every token-list field and adds an ``attention_mask`` next to each ``input_ids``.

    * ``*input_ids`` -> pad id, ``*labels`` -> -100, ``*mask`` -> 0;
    * numbers -> float tensors (``None`` -> NaN; a field that is ``None`` everywhere is left out);
    * nested float lists (soft labels) -> float tensors; anything else -> a list.

    Args:
        pad_id: the tokenizer's pad token id.
        padding_side: ``right`` for training, ``left`` for generation.
        pair_keys: ``("chosen", "rejected")`` stacks ``chosen_*`` and ``rejected_*`` into one batch
            of ``2B`` rows (chosen first) so one forward pass serves both.
    """

    def __init__(
        self, pad_id: int, padding_side: Literal["right", "left"] = "right", pair_keys: tuple[str, ...] = ()
    ) -> None:
        self.pad_id, self.padding_side, self.pair_keys = pad_id, padding_side, pair_keys

    def _is_paired(self, key: str) -> bool:
        return any(key.startswith(f"{p}_") for p in self.pair_keys)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.pair_keys:
            return self._collate(features)
        stacked = [
            {k[len(name) + 1:]: v for k, v in f.items() if k.startswith(f"{name}_")}
            for name in self.pair_keys
            for f in features
        ]
        shared = [{k: v for k, v in f.items() if not self._is_paired(k)} for f in features]
        return {**self._collate(stacked), **self._collate(shared)}

    def _collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if key.endswith(("input_ids", "labels", "mask")) and isinstance(values[0], list):
                batch[key] = pad(values, _pad_value(key, self.pad_id), self.padding_side)
                if key.endswith("input_ids"):
                    mask_key = key[: -len("input_ids")] + "attention_mask"
                    batch[mask_key] = pad([[1] * len(v) for v in values], 0, self.padding_side)
            elif all(v is None for v in values):
                continue
            elif all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
                batch[key] = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)
                if key == "label":
                    batch[key] = batch[key].long()
            elif isinstance(values[0], list) and values[0] and isinstance(values[0][0], float):
                batch[key] = torch.tensor(values, dtype=torch.float32)
            else:
                batch[key] = values
        return batch


def mismatched_pairs(features: list[dict[str, Any]], max_length: int) -> list[dict[str, list[int]]]:
    """Each row's prompt with the next row's completion (cyclically): the mismatched ``(x_i, y_{i+1})`` pairs
    whose log-ratios estimate KTO's reference point (Ethayarajh et al. 2024, §4.1). Cut to ``max_length``
    at the end. A batch of one row (a split's last, short batch) pairs the row with itself.

    Args:
        features: encoded rows with ``input_ids``, ``completion_mask`` and ``prompt_ids``.
    Returns:
        one ``{"input_ids", "completion_mask"}`` per row.
    """
    out = []
    for i, row in enumerate(features):
        other = features[(i + 1) % len(features)]
        start = other["completion_mask"].index(1) if 1 in other["completion_mask"] else len(other["input_ids"])
        completion = other["input_ids"][start:]
        prompt = row["prompt_ids"]
        ids = (prompt + completion)[:max_length]
        out.append({"input_ids": ids, "completion_mask": ([0] * len(prompt) + [1] * len(completion))[:max_length]})
    return out


class UnpairedCollator(Collator):
    """:class:`Collator` plus ``kl_input_ids`` / ``kl_attention_mask`` / ``kl_completion_mask`` of the batch's
    mismatched pairs (:func:`mismatched_pairs`)."""

    def __init__(self, pad_id: int, max_length: int) -> None:
        super().__init__(pad_id)
        self.max_length = max_length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate(features)
        kl = self._collate(mismatched_pairs(features, self.max_length))
        return {**batch, **{f"kl_{k}": v for k, v in kl.items()}}
