"""Supervised fine-tuning (loss on completion / assistant tokens only)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric, SumMetric

from lit_rlhf.losses import completion_nll
from lit_rlhf.models import ModelLike
from lit_rlhf.modules.base import PolicyModule, StepModule, StepOutput, StepSplit
from lit_rlhf.rollout.generation import SamplingConfig


class SFT(StepModule, PolicyModule):
    """Supervised fine-tuning of a causal LM.

    Trains ``-Σ log π(completion | prompt)`` averaged over completion tokens. Validation (and test) logs
    ``val/loss`` (the token mean over the whole epoch) and ``val/perplexity``; when the data module has a task
    it also samples completions for the first ``gold_eval_batches`` batches and logs ``val/gold_reward`` (e.g.
    the arithmetic answer accuracy). Dropout: the model's own config, however the model was loaded.

    Args:
        model: model name or spec.
        sampling: decoding settings for the gold evaluation.
        gold_eval_batches: validation batches to sample and score (0 = off).
        **kwargs: optimizer and schedule, see :class:`~lit_rlhf.modules.base.LitRLHFModule`.
    """

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        gold_eval_batches: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, sampling=sampling, **kwargs)
        self.record_hparams()
        self.gold_eval_batches = gold_eval_batches
        self.val_nll, self.val_tokens, self.val_gold = SumMetric(), SumMetric(), MeanMetric()

    def loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL of the batch's completion tokens and their number (two scalars).

        Their ratio is the training loss; evaluation sums both over the epoch first, so its ``loss`` is the
        token mean of the whole split. Override this to weight tokens or examples otherwise.
        """
        logps, num_tokens = self.policy_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        return completion_nll(logps, num_tokens, "sum"), num_tokens.sum()

    def step(self, batch: dict[str, Any], split: StepSplit) -> StepOutput:
        """Token-mean NLL. In evaluation the sums go to the epoch totals (logged at the epoch's end, not per batch)
        and the first ``gold_eval_batches`` batches are sampled and scored by the task."""
        nll, num_tokens = self.loss(batch)
        out = StepOutput(nll / num_tokens.clamp(min=1), {}, len(batch["input_ids"]))
        if split == "train":
            out.metrics["loss"] = out.loss.detach()
            return out
        self.val_nll.update(nll)
        self.val_tokens.update(num_tokens)
        task = getattr(self.trainer.datamodule, "task", None) if self._trainer is not None else None
        if task is not None and self.val_gold.update_count < self.gold_eval_batches:
            completions = self.generate(batch["prompt_ids"])
            self.val_gold.update(task.reward(batch["prompt_text"], completions).to(self.device))
        return out

    def reset_eval_totals(self) -> None:
        # reset at the epoch's start (not end) so metric states are created in the current grad mode
        for metric in (self.val_nll, self.val_tokens, self.val_gold):
            metric.reset()

    def log_eval_totals(self, split: StepSplit) -> None:
        nll, tokens = self.val_nll.compute(), self.val_tokens.compute().clamp(min=1)
        # the metrics are already reduced over ranks; sync_dist only keeps Lightning from warning
        self.log(self.metric_name(split, "loss"), nll / tokens, prog_bar=True, sync_dist=True)
        self.log(self.metric_name(split, "perplexity"), torch.exp(nll / tokens), sync_dist=True)
        if self.val_gold.update_count:
            self.log(self.metric_name(split, "gold_reward"), self.val_gold.compute(), prog_bar=True, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self.reset_eval_totals()

    def on_validation_epoch_end(self) -> None:
        self.log_eval_totals("val")

    def on_test_epoch_start(self) -> None:
        self.reset_eval_totals()

    def on_test_epoch_end(self) -> None:
        self.log_eval_totals("test")
