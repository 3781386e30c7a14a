"""Shifted-distribution responses for MetaRM (Secrets of RLHF II, §3.2).

A record holds one prompt and ``K`` responses to it, e.g. sampled by a newer policy::

    {"prompt": "7+5*2=", "responses": ["7+5=12\\n12*2=24\\n#### 24", "...", "...", "..."]}

Prompts and responses are strings or chat message lists (as in preference rows); every record of a
source has the same ``K ≥ 2``. The data path is the one of every other row type:

    file / HF dataset id -> :func:`~lit_rlhf.data.sources.iter_records` -> :func:`shifted_row` (validation)
    -> :func:`encode_shifted` (``Encoder.pair`` per response) -> :class:`ShiftedCollator`
    (:class:`~lit_rlhf.data.collate.Collator` over the flattened responses)

A batch of ``G`` prompts holds ``G·K`` sequences, prompt-major (row ``g·K + k`` is response ``k`` of
prompt ``g``), with ``group_size = K``: ``rewards.view(G, K)`` gives the MetaRM layout.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Sampler

from lit_rlhf.data.collate import Collator
from lit_rlhf.data.datamodules import ListDataset, PreferenceDataModule
from lit_rlhf.data.schemas import DataError, Text, check_text, require
from lit_rlhf.data.sources import iter_records
from lit_rlhf.data.tokenize import Encoder, TooLong, render_prompt


@dataclass
class ShiftedRow:
    """One prompt with ``K ≥ 2`` responses from the shifted distribution (no labels)."""

    prompt: Text
    responses: list[Text]
    where: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def shifted_row(raw: Any, where: str) -> ShiftedRow:
    """Validate one ``{prompt, responses: [...]}`` record; other fields go to ``meta``.

    Raises:
        DataError: naming ``where`` and the field (``prompt``, ``responses`` or ``responses[i]``).
    """
    if not isinstance(raw, dict):
        raise DataError(where, None, f"expected an object with 'prompt' and 'responses', got {type(raw).__name__}")
    prompt = check_text(require(raw, "prompt", where), "prompt", where)
    responses = require(raw, "responses", where)
    if not isinstance(responses, list):
        raise DataError(where, "responses", f"expected a list of responses, got {type(responses).__name__}")
    if len(responses) < 2:
        raise DataError(where, "responses", f"needs at least 2 responses per prompt, got {len(responses)}")
    checked = [check_text(r, f"responses[{i}]", where) for i, r in enumerate(responses)]
    meta = {k: v for k, v in raw.items() if k not in ("prompt", "responses")}
    return ShiftedRow(prompt, checked, where, meta)


def read_shifted_rows(source: str | os.PathLike[str], split: str = "train") -> list[ShiftedRow]:
    """All validated rows of a local file or Hugging Face dataset (see :func:`~lit_rlhf.data.iter_records`).

    Raises:
        DataError: a malformed record, or a record whose number of responses differs from the first one's.
    """
    rows: list[ShiftedRow] = []
    for where, raw in iter_records(source, split):
        row = shifted_row(raw, where)
        if rows and len(row.responses) != len(rows[0].responses):
            k = len(rows[0].responses)
            raise DataError(
                where, "responses",
                f"has {len(row.responses)} responses; every record needs the same number ({k}, as at {rows[0].where})",
            )
        rows.append(row)
    return rows


def encode_shifted(encoder: Encoder, row: ShiftedRow) -> dict[str, Any]:
    """Token ids of every ``prompt + response`` (``Encoder.group``); raises ``TooLong`` if any does not fit."""
    fields = [f"responses[{i}]" for i in range(len(row.responses))]
    seqs, prompt_ids = encoder.group(row.prompt, row.responses, row.where, fields)
    ids, masks = [x for x, _ in seqs], [mask for _, mask in seqs]
    return {
        "responses_input_ids": ids, "responses_completion_mask": masks, "prompt_ids": prompt_ids,
        "prompt_text": render_prompt(encoder.tokenizer, row.prompt),
    }


class ShiftedCollator:
    """Flattens ``G`` encoded groups of ``K`` responses into one padded batch of ``G·K`` sequences.

    Output: ``input_ids``, ``attention_mask``, ``completion_mask`` ``(G·K, T)``, ``group_size`` (``K``)
    and ``prompt_text`` (``G`` strings).
    """

    def __init__(self, pad_id: int, padding_side: Literal["right", "left"] = "right") -> None:
        self.collator = Collator(pad_id, padding_side)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        k = len(features[0]["responses_input_ids"])
        if any(len(f["responses_input_ids"]) != k for f in features):
            raise ValueError("every group in a shifted batch needs the same number of responses")
        flat = [
            {"input_ids": ids, "completion_mask": mask}
            for f in features
            for ids, mask in zip(f["responses_input_ids"], f["responses_completion_mask"])
        ]
        batch = self.collator(flat)
        batch["group_size"] = k
        batch["prompt_text"] = [f["prompt_text"] for f in features]
        return batch


class CyclingBatchSampler(Sampler[list[int]]):
    """Endless shuffled batches of ``batch_size`` indices; a new seeded permutation every pass.

    Under ``num_replicas > 1`` each replica cycles over its own shard (``perm[rank::num_replicas]``).
    Incomplete batches at the end of a pass are dropped, so every batch has exactly ``batch_size`` items.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        shard = len(range(rank, n, num_replicas))
        if batch_size < 1 or shard < batch_size:
            raise ValueError(
                f"cannot draw batches of {batch_size} from {n} items split over {num_replicas} replica(s)"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.num_replicas, self.rank = num_replicas, rank

    def __iter__(self) -> Iterator[list[int]]:
        epoch = 0
        while True:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.n, generator=gen).tolist()[self.rank::self.num_replicas]
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                yield order[start:start + self.batch_size]
            epoch += 1


class MetaRMDataModule(PreferenceDataModule):
    """Preference pairs (the MetaRM's ``D``) plus shifted-distribution responses (its ``S``).

    Everything of :class:`~lit_rlhf.data.PreferenceDataModule` applies to the pairs; the shifted
    responses are read, validated and encoded with the same tokenizer, ``max_length`` and truncation
    policy (a group is filtered, counted and reported if any of its responses is too long).

    Args:
        shifted: source of ``{prompt, responses: [...]}`` records (file or Hugging Face dataset id).
        shifted_batch_size: prompts per shifted batch (each brings ``K`` sequences).
        *args, **kwargs: :class:`~lit_rlhf.data.PreferenceDataModule` arguments.
    """

    def __init__(self, *args: Any, shifted: str | None = None, shifted_batch_size: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shifted, self.shifted_batch_size = shifted, shifted_batch_size
        self.shifted_rows: list[ShiftedRow] | None = None
        self.shifted_data: ListDataset | None = None

    def read_shifted(self) -> list[ShiftedRow]:
        """Validated shifted rows (cached)."""
        if self.shifted is None:
            raise ValueError(f"{type(self).__name__}: no shifted responses; set `shifted` to a file or dataset id")
        if self.shifted_rows is None:
            self.shifted_rows = read_shifted_rows(self.shifted)
        return self.shifted_rows

    def shifted_dataset(self) -> ListDataset:
        """Encoded shifted groups (cached); filtered groups are counted in ``self.filtered['shifted']``."""
        if self.shifted_data is None:
            encoder, items, dropped = self.encoder, [], Counter()
            rows = self.read_shifted()
            for row in rows:
                try:
                    items.append(encode_shifted(encoder, row))
                except TooLong:
                    dropped[f"a response longer than max_length={self.max_length}"] += 1
            self.filtered["shifted"] = dropped
            if dropped:
                why = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
                rank_zero_info(f"[lit_rlhf] shifted: kept {len(items)} of {len(rows)} groups; filtered: {why}")
            if not items:
                raise ValueError(f"{type(self).__name__}: no shifted groups left after filtering ({dict(dropped)})")
            self.shifted_data = ListDataset(items)
        return self.shifted_data

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.shifted is not None and stage in (None, "fit"):
            self.shifted_dataset()

    def shifted_dataloader(self) -> DataLoader:
        """An endless loader of shifted batches (seeded, reshuffled every pass, sharded over ranks).

        Each batch holds ``shifted_batch_size·K`` sequences with ``group_size = K``.
        """
        ds = self.shifted_dataset()
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = CyclingBatchSampler(len(ds), self.shifted_batch_size, seed=self.seed, num_replicas=world, rank=rank)
        collate = ShiftedCollator(self.resolve_tokenizer().pad_token_id, self.padding_side)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers)
