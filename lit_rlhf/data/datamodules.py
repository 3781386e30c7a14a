"""LightningDataModules. One path for every source:

    file / HF dataset id / task generator -> raw records -> format adapter + validation -> rows
    -> :class:`~lit_rlhf.data.tokenize.Encoder` -> :class:`~lit_rlhf.data.collate.Collator` -> batches

The tokenizer is, by default, the one of the LightningModule being trained (``trainer.lightning_module
.tokenizer``), so a config names the model only once.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from lit_rlhf.data.collate import Collator, UnpairedCollator
from lit_rlhf.data.sampling import LengthGroupedBatchSampler, ResumableLoader
from lit_rlhf.data.schemas import DataError, PromptRow, Row
from lit_rlhf.data.sources import Source, read_rows, source_name, task_rows
from lit_rlhf.data.strength import apply_strength_treatments
from lit_rlhf.data.tokenize import Encoder, TooLong, TrainOn, Truncation
from lit_rlhf.losses.reward import LLAMA2_MARGINS
from lit_rlhf.tasks.base import Task

Split = Literal["train", "val", "test", "predict"]
ValFrom = Literal["auto", "task", "train", "none"]
RATING_LEVELS = list(LLAMA2_MARGINS["small"])  # the Llama 2 preference rating levels


class ListDataset(Dataset):
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class RowDataModule(L.LightningDataModule, ABC):
    """Base data module: reads, validates, encodes and batches one kind of row.

    A subclass names its row ``kind`` (the schema sources are read into) and implements :meth:`encode`.

    Args:
        train: training source: a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file (compressed or not),
            a folder written by ``datasets.save_to_disk`` (``folder`` or ``folder:split``), a Hugging Face
            dataset id (``id``, ``id:split`` or ``id:config:split``) or, from Python, a ``datasets.Dataset`` /
            ``DatasetDict``. ``None`` = generate from ``task``.
        val: validation source (same forms).
        test: test source (same forms).
        task: a ground-truth task; it generates the splits when ``train`` is not given and provides the gold
            reward for evaluation.
        task_sizes: number of rows the task generates per split (0 = no such split).
        val_from: where validation rows come from when ``val`` is not given: ``auto`` = the task when the
            training rows are the task's too; when ``train`` is your data and a task is configured (the
            config meant to validate), ``val_split`` of your training rows are held out; otherwise no
            validation. ``train`` = always hold out; ``task`` = the task's generator even next to your
            training data; ``none`` = no validation. The choice is logged (see :meth:`describe_sources`).
            A test split comes from ``test`` or, when the training rows are the task's, from the task.
        val_split: the fraction of the training rows held out for validation (at least one row).
        format: the input format, or ``auto`` to detect it from the fields of each record.
        tokenizer: a model name whose tokenizer to use; ``None`` = the trained module's tokenizer.
        max_length: maximum tokens per sequence.
        truncation: what to do with longer rows: ``drop`` (counted and reported), ``truncate_prompt``
            or ``error``.
        batch_size: training batch size (per device).
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        group_by_length: length-grouped shuffled training batches (else plain shuffled batches). Either way
            the order depends only on ``seed`` and the epoch, and a run resumed mid-epoch from a checkpoint
            sees exactly the batches the interrupted run had left, in the same order.
        num_workers: DataLoader workers.
        seed: shuffling and task-generation seed.
    """

    kind: str = ""
    pair_keys: tuple[str, ...] = ()
    padding_side: Literal["right", "left"] = "right"

    def __init__(
        self,
        train: Source | None = None,
        val: Source | None = None,
        test: Source | None = None,
        task: Task | None = None,
        task_sizes: dict[str, int] | None = None,
        val_from: ValFrom = "auto",
        val_split: float = 0.05,
        format: str = "auto",
        tokenizer: str | None = None,
        max_length: int = 512,
        truncation: Truncation = "drop",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        group_by_length: bool = True,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.sources = {"train": train, "val": val, "test": test}
        self.task = task
        self.task_sizes = {"train": 1000, "val": 100, "test": 100, **(task_sizes or {})}
        if val_from not in ("auto", "task", "train", "none"):
            raise ValueError(f"val_from must be 'auto', 'task', 'train' or 'none', got {val_from!r}")
        if not 0.0 < val_split < 1.0:
            raise ValueError(f"val_split must be in (0, 1), got {val_split}")
        self.val_from, self.val_split = val_from, val_split
        self._held_out: list[Row] | None = None
        self.format, self.tokenizer_name = format, tokenizer
        self.max_length, self.truncation = max_length, truncation
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.group_by_length, self.num_workers, self.seed = group_by_length, num_workers, seed
        self.tokenizer: Any = None
        self.rows: dict[str, list[Row]] = {}
        self.datasets: dict[str, ListDataset] = {}
        self.filtered: dict[str, Counter] = {}
        self.kept_rows: dict[str, list[int]] = {}  # indices into self.rows[split] of the encoded items
        self._train_loader: ResumableLoader | None = None
        self._train_loader_state: dict[str, int] | None = None  # from a checkpoint, for the next train loader

    # -- sources ----------------------------------------------------------------------------
    def origin(self, split: str) -> Literal["source", "task", "held_out"] | None:
        """Where the rows of ``split`` come from: its own ``source``, the ``task``'s generator, ``held_out``
        of the training rows (validation only), or ``None`` (no such split). See ``val_from``."""
        sources = getattr(self, "sources", {})
        if sources.get(split) is not None:
            return "source"
        generated = "task" if self.task is not None and self.task_sizes.get(split, 1) > 0 else None
        own_train = sources.get("train") is not None
        if split == "train":
            return "task" if self.task is not None else None
        if split != "val":
            return None if own_train else generated
        mode = self.val_from
        if mode == "auto":
            mode = "train" if own_train and self.task is not None else ("none" if own_train else "task")
        if mode == "train":
            return "held_out" if own_train or self.task is not None else None
        return generated if mode == "task" else None

    def has_split(self, split: str) -> bool:
        return self.origin(split) is not None

    def read(self, split: str) -> list[Row]:
        """Validated rows of ``split`` (cached)."""
        if split not in self.rows:
            origin = self.origin(split)
            if origin == "held_out":
                self.read("train")
                self.rows[split] = self._held_out or []
            else:
                rows = self._load(split, origin)
                if split == "train" and self.origin("val") == "held_out":
                    rows, self._held_out = self._hold_out(rows)
                self.rows[split] = rows
        return self.rows[split]

    def _load(self, split: str, origin: str | None) -> list[Row]:
        if origin == "source":
            hf_split = {"val": "validation"}.get(split, split)  # used for hub ids / DatasetDicts without a split
            return read_rows(self.sources[split], self.kind, self.format, split=hf_split)
        if origin == "task":
            seed = self.seed + {"train": 0, "val": 1, "test": 2}.get(split, 3)
            return task_rows(self.task, self.kind, split, self.task_sizes[split], seed=seed)  # type: ignore[arg-type]
        if self.task is not None and getattr(self, "sources", {}).get("train") is not None:
            raise ValueError(f"{type(self).__name__}: no '{split}' source; the training rows are your data "
                             f"({self._name('train')}), so the task's generated rows are not used for '{split}': "
                             f"give data.{split}" + (" or set data.val_from" if split == "val" else ""))
        raise ValueError(f"{type(self).__name__}: no '{split}' source and no task to generate it")

    def _hold_out(self, rows: list[Row]) -> tuple[list[Row], list[Row]]:
        """``(train, val)``: ``val_split`` of ``rows`` (at least one, seeded choice) held out for validation."""
        if len(rows) < 2:
            raise DataError(self._name("train"), None, f"{len(rows)} row(s): too few to hold out validation rows; "
                            "give data.val or set data.val_from=none")
        n = min(len(rows) - 1, max(1, round(self.val_split * len(rows))))
        held = set(random.Random(self.seed).sample(range(len(rows)), n))
        return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]

    def _name(self, split: str) -> str:
        source = getattr(self, "sources", {}).get(split)
        return source_name(source) if source is not None else f"task {type(self.task).__name__}"

    def describe_sources(self) -> str:
        """One line saying where each split's rows come from (logged at ``setup``)."""
        parts = []
        for split in ("train", "val", "test"):
            origin, n = self.origin(split), len(self.rows[split]) if split in self.rows else None
            count = "" if n is None else f" ({n} rows)"
            if origin == "source":
                parts.append(f"{split} = {self._name(split)}{count}")
            elif origin == "task":
                parts.append(f"{split} = generated by {self._name(split)}{count}")
            elif origin == "held_out":
                parts.append(f"{split} = {n or '?'} rows held out of the training rows ({self._name('train')}, "
                             f"val_split={self.val_split}; give data.val or set data.val_from to change)")
            elif n:  # rows handed over in code (e.g. by lit-rlhf w2s to each of its runs)
                parts.append(f"{split} = {n} rows given by the caller")
            else:
                parts.append(f"{split} = none")
        if self.task is not None:
            parts.append(f"gold reward / grader = {type(self.task).__name__}")
        return "[lit_rlhf] data: " + "; ".join(parts)

    def _mixes_sources(self) -> bool:
        """Your training rows next to validation rows that are not yours (held out or generated)."""
        return self.origin("train") == "source" and self.origin("val") in ("held_out", "task")

    # -- encoding ---------------------------------------------------------------------------
    def resolve_tokenizer(self) -> Any:
        if self.tokenizer is None:
            if self.tokenizer_name is not None:
                from lit_rlhf.models import load_tokenizer

                self.tokenizer = load_tokenizer(self.tokenizer_name)
            elif self.trainer is not None and getattr(self.trainer.lightning_module, "tokenizer", None) is not None:
                self.tokenizer = self.trainer.lightning_module.tokenizer
            else:
                raise ValueError(
                    f"{type(self).__name__} needs a tokenizer: pass `tokenizer=` or attach it to a trainer"
                )
        return self.tokenizer

    @property
    def encoder(self) -> Encoder:
        return Encoder(self.resolve_tokenizer(), self.max_length, self.truncation)

    @abstractmethod
    def encode(self, row: Row, encoder: Encoder) -> dict[str, Any]:
        """One row -> a dict of token lists (raise :class:`TooLong` to filter it)."""

    def dataset(self, split: str) -> ListDataset:
        """Encoded split; filtered rows are counted in ``self.filtered[split]`` and reported (with the
        first places they come from), as are prompts cut to fit (``truncate_prompt``)."""
        if split not in self.datasets:
            encoder, items, kept, dropped, at = self.encoder, [], [], Counter(), []
            rows = self.read(split)
            for i, row in enumerate(rows):
                try:
                    items.append(self.encode(row, encoder))
                    kept.append(i)
                except TooLong:
                    dropped[f"longer than max_length={self.max_length}"] += 1
                    at.append(row.where)
            self.filtered[split], self.kept_rows[split] = dropped, kept
            if dropped:
                why = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
                first = ", ".join(at[:3]) + (", ..." if len(at) > 3 else "")
                rank_zero_info(
                    f"[lit_rlhf] {split}: kept {len(items)} of {len(rows)} rows; filtered: {why} (at {first})"
                )
            if encoder.cut:
                rank_zero_info(
                    f"[lit_rlhf] {split}: cut the start of {encoder.cut} of {len(rows)} rows "
                    f"to fit max_length={self.max_length}"
                )
            if not rows:
                raise ValueError(f"{type(self).__name__}: the '{split}' split has no rows ({self._name(split)})")
            if not items:
                why = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
                raise ValueError(f"{type(self).__name__}: no '{split}' rows left after filtering: "
                                 f"all {len(rows)} were filtered ({why})")
            self.datasets[split] = ListDataset(items)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
        for split in splits.get(stage or "fit", ["train", "val", "test"]):
            if split == "train" or self.has_split(split):
                self.dataset(split)
        (rank_zero_warn if self._mixes_sources() else rank_zero_info)(self.describe_sources())

    # -- loaders ----------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        """Move the tensors of a collated batch; leave its text and token lists alone.

        Lightning's default walks every element of nested lists (prompt token ids, texts), which
        costs milliseconds per step on CPU for nothing.
        """
        if isinstance(batch, dict):
            return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def collator(self) -> Collator:
        return Collator(self.resolve_tokenizer().pad_token_id, self.padding_side, self.pair_keys)

    def lengths(self, items: list[dict[str, Any]]) -> list[int]:
        key = "input_ids" if "input_ids" in items[0] else f"{self.pair_keys[0]}_input_ids"
        return [len(x[key]) for x in items]

    def train_dataloader(self) -> ResumableLoader:
        """Seeded shuffled (length-grouped) batches, sharded over the ranks, resumable mid-epoch."""
        ds = self.dataset("train")
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = LengthGroupedBatchSampler(
            self.lengths(ds.items), self.batch_size, seed=self.seed, num_replicas=world, rank=rank,
            **({} if self.group_by_length else {"group_factor": 1}),
        )
        loader = ResumableLoader(ds, batch_sampler=sampler, collate_fn=self.collator(), num_workers=self.num_workers)
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader = loader
        self._fit_val_check_interval(len(sampler))
        return loader

    def _fit_val_check_interval(self, batches: int) -> None:
        """An integer ``trainer.val_check_interval`` larger than an epoch (a config written for a bigger
        data set run on a small file) becomes "validate at the end of every epoch", with a log line,
        where Lightning would stop with an error."""
        trainer = self.trainer
        interval = getattr(trainer, "val_check_interval", None)
        if trainer is None or isinstance(interval, bool) or not isinstance(interval, int):
            return
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif isinstance(limit, float) and limit < 1.0:
            batches = int(batches * limit)
        if 0 < batches < interval and trainer.check_val_every_n_epoch is not None and trainer.limit_val_batches:
            rank_zero_info(f"[lit_rlhf] trainer.val_check_interval={interval} is more than the {batches} training "
                           f"batches of an epoch: validating at the end of every epoch ({batches} batches) instead")
            trainer.val_check_interval = batches

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position (epoch, batches consumed), saved in checkpoints."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_loader_state = state_dict.get("train_loader")

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.eval_batch_size, shuffle=False,
                          collate_fn=self.collator(), num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val") if self.has_split("val") else []

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader("test") if self.has_split("test") else []

    def predict_dataloader(self) -> DataLoader | list:
        return self.test_dataloader()

    # -- evaluation prompts -----------------------------------------------------------------
    def eval_prompts(self, split: str = "val", limit: int | None = None) -> list[str]:
        """Rendered prompts of ``split`` (for gold evaluation by sampling)."""
        items = self.dataset(split).items[:limit]
        return [x["prompt_text"] for x in items]


class SFTDataModule(RowDataModule):
    """Prompt/completion or chat rows for supervised fine-tuning (loss on completion tokens).

    Chat rows are rendered with the tokenizer's chat template; a ``messages`` row's completion is its
    last assistant reply.

    Args:
        train_on: which assistant turns of a chat row carry loss: ``last_assistant`` (the completion) or
            ``all_assistant`` (every assistant turn of the dialogue, prompt included). System and user
            turns never do.
    """

    kind = "sft"

    def __init__(self, *args: Any, train_on: TrainOn = "last_assistant", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_on = train_on

    def encode(self, row, encoder):
        return encoder.sft(row, self.train_on)


class PreferenceDataModule(RowDataModule):
    """Preference pairs; a batch holds ``2B`` sequences: ``B`` chosen then ``B`` rejected.

    Args:
        flip_fraction: swap chosen/rejected of the lowest-strength fraction of the training pairs
            (needs a ``strength``/``strength_mean`` column, e.g. from ``lit-rlhf strength``).
        soft_label_bands: ``[low_quantile, high_quantile, soft_label]`` triples applied to training
            pairs by strength quantile (see :func:`lit_rlhf.data.strength.apply_strength_treatments`).
        rating_levels: the ``rating`` values a pair may carry (compared case-insensitively); another value
            is an error naming its file and line. Default: the four Llama 2 levels, the keys of
            ``RewardModel(rating_margins="small"|"large")``. With your own ``rating_margins`` table, list its
            keys here; ``null`` accepts any rating.
    """

    kind = "preference"
    pair_keys = ("chosen", "rejected")

    def __init__(
        self,
        *args: Any,
        flip_fraction: float = 0.0,
        soft_label_bands: list[tuple[float, float, float]] | None = None,
        rating_levels: list[str] | None = RATING_LEVELS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.flip_fraction, self.soft_label_bands = flip_fraction, soft_label_bands
        self.rating_levels = None if rating_levels is None else list(rating_levels)

    def read(self, split: str) -> list[Row]:
        fresh = split not in self.rows
        rows = super().read(split)
        if fresh:
            check_ratings(rows, self.rating_levels)
        if fresh and split == "train" and (self.flip_fraction or self.soft_label_bands):
            rows, counts = apply_strength_treatments(rows, self.flip_fraction, self.soft_label_bands)
            self.rows[split] = rows
            rank_zero_info(f"[lit_rlhf] train: strength treatments on {len(rows)} pairs: {dict(counts)}")
        return rows

    def encode(self, row, encoder):
        return encoder.preference(row)

    def lengths(self, items):
        return [max(len(x["chosen_input_ids"]), len(x["rejected_input_ids"])) for x in items]


class UnpairedPreferenceDataModule(RowDataModule):
    """Unpaired desirable / undesirable completions for KTO: TRL's ``prompt, completion, label`` rows, or any
    preference file (each pair becomes a desirable and an undesirable row). Batches also carry the mismatched
    prompt/completion pairs of KTO's reference point (``kl_*`` fields, see
    :func:`~lit_rlhf.data.collate.mismatched_pairs`), so ``batch_size`` must be at least 2.
    """

    kind = "unpaired"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.batch_size < 2 or self.eval_batch_size < 2:
            raise ValueError(f"{type(self).__name__}: batch_size and eval_batch_size must be >= 2 (KTO's reference "
                             f"point pairs each prompt with another row's completion), got {self.batch_size}, "
                             f"{self.eval_batch_size}")

    def encode(self, row, encoder):
        return encoder.unpaired(row)

    def collator(self) -> UnpairedCollator:
        return UnpairedCollator(self.resolve_tokenizer().pad_token_id, self.max_length)

    def label_counts(self, split: str = "train") -> tuple[int, int]:
        """``(desirable, undesirable)`` rows of ``split`` (after filtering)."""
        items = self.dataset(split).items
        desirable = sum(bool(x["label"]) for x in items)
        return desirable, len(items) - desirable


def check_ratings(rows: list[Row], levels: list[str] | None) -> None:
    """Raise a located :class:`DataError` for the first row whose ``rating`` is not one of ``levels``."""
    if levels is None:
        return
    known = {str(level).lower() for level in levels}
    for row in rows:
        rating = getattr(row, "rating", None)
        if rating is not None and str(rating).lower() not in known:
            raise DataError(row.where, "rating", f"unknown rating level {rating!r}; expected one of {list(levels)} "
                            "(data.rating_levels lists the levels of your own rating_margins table)")


class PromptDataModule(RowDataModule):
    """Prompts for generation (PPO, rejection sampling, evaluation); batches are left-padded."""

    kind = "prompt"
    padding_side = "left"

    def encode(self, row: PromptRow, encoder):
        return encoder.prompt(row)


class WeakLabelDataModule(RowDataModule):
    """Text classification with hard and soft (weak) labels.

    Args:
        num_classes: number of classes (soft labels are length ``num_classes``).
    """

    kind = "weak"

    def __init__(self, *args: Any, num_classes: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_classes = num_classes

    def encode(self, row, encoder):
        """Token ids, ``label``, ``soft_label`` (the training target) and ``gold_label`` (``gt_label`` if the
        row has one, as weak-label files do, else ``label``)."""
        return {**encoder.weak(row, self.num_classes), "gold_label": row.meta.get("gt_label", row.label)}


STEP_CLASSES = {
    2: {"positive": {1: 1, 0: 1, -1: 0}, "negative": {1: 1, 0: 0, -1: 0}, "ignore": {1: 1, 0: -100, -1: 0}},
    3: {"positive": {1: 2, 0: 1, -1: 0}, "negative": {1: 2, 0: 1, -1: 0}, "ignore": {1: 2, 0: 1, -1: 0}},
}


class StepLabelDataModule(RowDataModule):
    """Step-labelled solutions for process reward models.

    Args:
        step_separator: text appended after every step; the step's label sits on its last token.
        num_classes: 2 (correct / wrong) or 3 (negative=0 / neutral=1 / positive=2).
        neutral: with 2 classes, a neutral (0) rating counts as ``positive``, ``negative`` or is ``ignore``d.
        supervise: ``first_error`` (steps up to and including the first wrong one), ``all`` or ``last``.
    """

    kind = "step"

    def __init__(
        self,
        *args: Any,
        step_separator: str = "\n",
        num_classes: Literal[2, 3] = 2,
        neutral: Literal["positive", "negative", "ignore"] = "positive",
        supervise: Literal["first_error", "all", "last"] = "first_error",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.step_separator, self.num_classes = step_separator, num_classes
        self.neutral, self.supervise = neutral, supervise

    def encode(self, row, encoder):
        return encoder.steps(row, self.step_separator, STEP_CLASSES[self.num_classes][self.neutral], self.supervise)
