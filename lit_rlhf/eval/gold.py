"""Evaluation of a policy against a task's gold reward, by sampling."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lit_rlhf.data.collate import pad
from lit_rlhf.data.sources import check_grades
from lit_rlhf.models import sequence_logps
from lit_rlhf.rollout.generation import SamplingConfig, generate

LogpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]
"""``(input_ids, attention_mask, completion_mask) -> summed completion log-probs (B,)`` (``None``: unavailable)."""


@dataclass
class GoldResult:
    """Sampled completions (texts and token ids) and their gold rewards."""

    prompts: list[str]
    completions: list[str]
    rewards: torch.Tensor
    completion_ids: list[list[int]] | None = None

    @property
    def mean(self) -> float:
        """Mean gold reward (NaN when empty)."""
        return float(self.rewards.mean()) if len(self.rewards) else float("nan")


def completion_token_ids(
    sequences: torch.Tensor, width: int, eos_id: int | None, pad_id: int | None
) -> list[list[int]]:
    """The generated tokens of each row of ``generate``'s output: up to and including the first EOS,
    else without the trailing padding (a sequence stopped by a stop string)."""
    out = []
    for row in sequences[:, width:].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        else:
            while row and row[-1] == pad_id:
                row.pop()
        out.append(row)
    return out


@torch.no_grad()
def sequence_log_ratios(
    policy: LogpsFn, reference: LogpsFn, prompt_ids: list[list[int]], completion_ids: list[list[int]],
    pad_id: int, batch_size: int = 64, device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """``log π(y|x) − log π_ref(y|x)`` per (prompt, completion), from right-padded batches.

    Averaged over completions sampled from π (temperature 1, no top-p/top-k), this is the Monte-Carlo
    estimate of the sequence KL(π‖π_ref). Returns ``None`` when ``reference`` gives ``None``.
    """
    out = []
    for start in range(0, len(prompt_ids), batch_size):
        prompts, completions = prompt_ids[start:start + batch_size], completion_ids[start:start + batch_size]
        ids = pad([p + c for p, c in zip(prompts, completions)], pad_id).to(device)
        attention = pad([[1] * (len(p) + len(c)) for p, c in zip(prompts, completions)], 0).to(device)
        completion = pad([[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)], 0).to(device)
        ref = reference(ids, attention, completion)
        if ref is None:
            return None
        out.append((policy(ids, attention, completion) - ref).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def sample_and_score(
    model: torch.nn.Module,
    tokenizer: Any,
    task: Any,
    prompt_ids: list[list[int]],
    prompts: list[str],
    sampling: SamplingConfig,
    batch_size: int = 64,
) -> GoldResult:
    """Sample a completion for each prompt and score it with ``task.reward``.

    Args:
        model: causal LM.
        tokenizer: its tokenizer.
        task: anything with ``reward(prompts, completions) -> Tensor (B,)``.
        prompt_ids: token ids of each prompt (as the model saw them in training).
        prompts: the prompt texts handed to the gold reward.
        sampling: decoding settings.
        batch_size: prompts per ``generate`` call.
    """
    completions: list[str] = []
    ids: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        texts, sequences, width = generate(model, tokenizer, prompt_ids[start:start + batch_size], sampling)
        completions += texts
        ids += completion_token_ids(sequences, width, tokenizer.eos_token_id, tokenizer.pad_token_id)
    rewards = task.reward(prompts, completions).float().cpu() if prompts else torch.zeros(0)
    return GoldResult(prompts, completions, rewards, ids)


def _gather_objects(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_task_grades(dm: Any, split: str) -> None:
    """Raise a located :class:`~lit_rlhf.data.DataError` when ``dm.task`` cannot grade the first prompt of ``split``
    (your own rows next to a config's task, e.g. movie reviews under an arithmetic grader), before any sampling."""
    rows, kept = dm.read(split), getattr(dm, "kept_rows", {}).get(split)
    where = rows[kept[0] if kept else 0].where if rows else split
    check_grades(dm.task, dm.dataset(split).items[0]["prompt_text"], where, "GoldEval scores the model's answers "
                 "with data.task: set it to the task your prompts come from, or to null (no gold evaluation)")


class GoldEval(L.Callback):
    """Samples completions for held-out prompts and scores them with the data module's task.

    Runs before training, every ``every_n_steps`` optimizer steps (if set) and after training; logs
    ``gold/reward`` and, when a reference policy is available, ``gold/kl`` (mean sequence log-ratio
    ``log π(y|x) − log π_ref(y|x)`` of the sampled completions: a Monte-Carlo estimate of KL(π‖π_ref) when
    sampling at temperature 1 without top-p/top-k) to every logger, a sample table (``gold/samples``) to
    loggers that have ``log_table`` (W&B), prints the before → after figures, and writes them to
    ``gold_eval.json`` in the trainer's log folder. Prompts are sharded over ranks and gathered.

    Args:
        split: data split whose prompts to use.
        num_prompts: how many prompts (the first ones of the split).
        sampling: decoding settings (default greedy, 64 new tokens).
        every_n_steps: also evaluate during training.
        batch_size: prompts per generation call.
        table_rows: rows in the logged sample table.
        reference: for ``gold/kl``: ``auto`` = the module's own reference (``reference_logps``, e.g. DPO's
            frozen copy or LoRA-disabled base; none for SFT or precomputed DPO), ``snapshot`` = a frozen copy
            of the policy taken when training starts (works for every policy method, costs one model),
            ``none`` = no ``gold/kl``.
        distinct_prompts: skip repeated prompts (preference data holds several pairs per prompt).
    """

    def __init__(
        self,
        split: str = "val",
        num_prompts: int = 200,
        sampling: SamplingConfig | None = None,
        every_n_steps: int | None = None,
        batch_size: int = 64,
        table_rows: int = 16,
        reference: Literal["auto", "snapshot", "none"] = "auto",
        distinct_prompts: bool = False,
    ) -> None:
        if reference not in ("auto", "snapshot", "none"):
            raise ValueError(f"reference must be 'auto', 'snapshot' or 'none', got {reference!r}")
        self.split, self.num_prompts, self.every_n_steps = split, num_prompts, every_n_steps
        self.sampling = SamplingConfig.of(sampling)
        self.batch_size, self.table_rows, self.reference = batch_size, table_rows, reference
        self.distinct_prompts = distinct_prompts
        self.history: list[dict[str, float]] = []
        self._snapshot: torch.nn.Module | None = None
        self.active = True  # off for a run whose data has no task (nothing to score against)

    def _logps_fns(self, pl_module: L.LightningModule) -> tuple[LogpsFn, LogpsFn | None]:
        """Policy and reference log-prob functions (reference ``None``: no ``gold/kl``)."""
        def policy(*args: torch.Tensor) -> torch.Tensor:
            return sequence_logps(pl_module.model, *args)[0]

        if self._snapshot is not None:
            return policy, lambda *args: sequence_logps(self._snapshot, *args)[0]
        if self.reference == "auto" and hasattr(pl_module, "reference_logps"):
            return policy, pl_module.reference_logps
        return policy, None

    def log_ratios(
        self, pl_module: L.LightningModule, prompt_ids: list[list[int]], result: GoldResult
    ) -> torch.Tensor | None:
        """Per-completion ``log π − log π_ref`` of ``result`` (``None`` without a reference)."""
        policy, reference = self._logps_fns(pl_module)
        if reference is None or result.completion_ids is None:
            return None
        model = pl_module.model
        was_training = model.training
        model.eval()
        try:
            return sequence_log_ratios(policy, reference, prompt_ids, result.completion_ids,
                                       pl_module.tokenizer.pad_token_id, self.batch_size, pl_module.device)
        finally:
            model.train(was_training)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        dm = trainer.datamodule
        if dm is None or getattr(dm, "task", None) is None:
            raise ValueError("GoldEval needs a data module with a `task` (its gold reward)")
        items, seen = [], set()
        for x in dm.dataset(self.split).items:
            if len(items) < self.num_prompts and not (self.distinct_prompts and x["prompt_text"] in seen):
                seen.add(x["prompt_text"])
                items.append(x)
        mine = items[trainer.global_rank:: trainer.world_size]
        prompt_ids = [x["prompt_ids"] for x in mine]
        result = sample_and_score(pl_module.model, pl_module.tokenizer, dm.task, prompt_ids,
                                  [x["prompt_text"] for x in mine], self.sampling, self.batch_size)
        ratios = self.log_ratios(pl_module, prompt_ids, result)
        columns = ["prompt", "completion", "reward"] + (["log_ratio"] if ratios is not None else [])
        mine_rows = [list(r) for r in zip(result.prompts, result.completions, result.rewards.tolist(),
                                          *([ratios.tolist()] if ratios is not None else []))]
        rows = [r for part in _gather_objects(mine_rows) for r in part]
        metrics = {"gold/reward": sum(r[2] for r in rows) / max(len(rows), 1)}
        if ratios is not None:
            metrics["gold/kl"] = sum(r[3] for r in rows) / max(len(rows), 1)
        step = trainer.global_step
        self.history.append({"step": step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            if hasattr(logger, "log_table") and trainer.is_global_zero:
                logger.log_table("gold/samples", columns=columns, data=rows[: self.table_rows], step=step)
        shown = ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items())
        rank_zero_info(f"[lit_rlhf] step {step}: {shown} over {len(rows)} prompts")
        return metrics["gold/reward"]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(trainer.datamodule, "task", None) is None:  # e.g. a shipped config run on the user's own prompts
            self.active = False
            rank_zero_warn("[lit_rlhf] GoldEval is off for this run: the data has no `task`, so there is no gold "
                           "reward to score against (set data.task, or leave GoldEval out of trainer.callbacks)")
            return
        check_task_grades(trainer.datamodule, self.split)
        if self.reference == "snapshot" and self._snapshot is None:
            self._snapshot = copy.deepcopy(pl_module.model).requires_grad_(False).eval()
        self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # the last batch is left to on_train_end
        due = self.active and self.every_n_steps and step % self.every_n_steps == 0 and not trainer.is_last_batch
        if due and self.history[-1]["step"] != step:  # once per optimizer step (gradient accumulation)
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        if not self.history or self.history[-1]["step"] != trainer.global_step:  # max_steps may end mid-epoch
            self.evaluate(trainer, pl_module)
        before, after = self.history[0]["gold/reward"], self.history[-1]["gold/reward"]
        kl = self.history[-1].get("gold/kl")
        rank_zero_info(f"[lit_rlhf] gold/reward before training {before:.4f} -> after {after:.4f}"
                       + (f" at gold/kl {kl:.4f}" if kl is not None else ""))
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must ask
        if trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "gold_eval.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            summary = {"before": before, "after": after, "kl_after": kl, "history": self.history}
            path.write_text(json.dumps(summary, indent=2))

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
