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

    def __init__(self, pad_id: int, padding_side: Literal["right", "left"] = "right", pair_keys: tuple[str, ...] = ()) -> None:
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
