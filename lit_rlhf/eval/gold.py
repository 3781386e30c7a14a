"""Evaluation of a policy against a task's gold reward, by sampling."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info

from lit_rlhf.rollout.generation import SamplingConfig, generate


@dataclass
class GoldResult:
    """Sampled completions and their gold rewards."""

    prompts: list[str]
    completions: list[str]
    rewards: torch.Tensor

    @property
    def mean(self) -> float:
        return float(self.rewards.mean()) if len(self.rewards) else float("nan")


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
    for start in range(0, len(prompt_ids), batch_size):
        texts, _, _ = generate(model, tokenizer, prompt_ids[start:start + batch_size], sampling)
        completions += texts
    rewards = task.reward(prompts, completions).float().cpu() if prompts else torch.zeros(0)
    return GoldResult(prompts, completions, rewards)


def _gather_objects(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class GoldEval(L.Callback):
    """Samples completions for held-out prompts and scores them with the data module's task.

    Runs before training, every ``every_n_steps`` optimizer steps (if set) and after training; logs
    ``gold/reward`` to every logger, a sample table (``gold/samples``) to loggers that have
    ``log_table`` (W&B), prints the before → after figures, and writes them to ``gold_eval.json``
    in the trainer's log folder. Prompts are sharded over ranks and gathered.

    Args:
        split: data split whose prompts to use.
        num_prompts: how many prompts (the first ones of the split).
        sampling: decoding settings (default greedy, 64 new tokens).
        every_n_steps: also evaluate during training.
        batch_size: prompts per generation call.
        table_rows: rows in the logged sample table.
    """

    def __init__(
        self,
        split: str = "val",
        num_prompts: int = 200,
        sampling: SamplingConfig | None = None,
        every_n_steps: int | None = None,
        batch_size: int = 64,
        table_rows: int = 16,
    ) -> None:
        self.split, self.num_prompts, self.every_n_steps = split, num_prompts, every_n_steps
        self.sampling = SamplingConfig.of(sampling)
        self.batch_size, self.table_rows = batch_size, table_rows
        self.history: list[dict[str, float]] = []

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        dm = trainer.datamodule
        if dm is None or getattr(dm, "task", None) is None:
            raise ValueError("GoldEval needs a data module with a `task` (its gold reward)")
        items = dm.dataset(self.split).items[: self.num_prompts]
        mine = items[trainer.global_rank:: trainer.world_size]
        result = sample_and_score(
            pl_module.model, pl_module.tokenizer, dm.task, [x["prompt_ids"] for x in mine],
            [x["prompt_text"] for x in mine], self.sampling, self.batch_size,
        )
        rows = [r for part in _gather_objects(list(zip(result.prompts, result.completions, result.rewards.tolist())))
                for r in part]
        mean = sum(r[2] for r in rows) / max(len(rows), 1)
        step = trainer.global_step
        self.history.append({"step": step, "gold/reward": mean})
        for logger in trainer.loggers:
            logger.log_metrics({"gold/reward": mean}, step=step)
            if hasattr(logger, "log_table") and trainer.is_global_zero:
                logger.log_table("gold/samples", columns=["prompt", "completion", "reward"],
                                 data=[list(r) for r in rows[: self.table_rows]], step=step)
        rank_zero_info(f"[lit_rlhf] step {step}: gold/reward = {mean:.4f} over {len(rows)} prompts")
        return mean

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # the last batch is left to on_train_end
        due = self.every_n_steps and step % self.every_n_steps == 0 and not trainer.is_last_batch
        if due and self.history[-1]["step"] != step:  # once per optimizer step (gradient accumulation)
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(trainer, pl_module)
        before, after = self.history[0]["gold/reward"], self.history[-1]["gold/reward"]
        rank_zero_info(f"[lit_rlhf] gold/reward before training {before:.4f} -> after {after:.4f}")
        log_dir = trainer.log_dir  # a collective call under DDP: every rank must ask
        if trainer.is_global_zero and log_dir:
            path = Path(log_dir) / "gold_eval.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"before": before, "after": after, "history": self.history}, indent=2))

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
