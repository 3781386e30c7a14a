"""Supervised fine-tuning (loss on completion / assistant tokens only)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MeanMetric, SumMetric

from lit_rlhf.models import ModelLike
from lit_rlhf.modules.base import PolicyModule
from lit_rlhf.rollout.generation import SamplingConfig


class SFT(PolicyModule):
    """Supervised fine-tuning of a causal LM.

    Trains ``-Σ log π(completion | prompt)`` averaged over completion tokens. Validation logs
    ``val/loss`` and ``val/perplexity``; when the data module has a task it also samples completions
    for the first ``gold_eval_batches`` validation batches and logs ``val/gold_reward`` (e.g. the
    arithmetic answer accuracy).

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
        """Token-mean NLL and token count of a batch."""
        logps, num_tokens = self.policy_logps(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        return -logps.sum(), num_tokens.sum()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        nll, num_tokens = self.loss(batch)
        loss = nll / num_tokens.clamp(min=1)
        self.check_finite(loss)
        self.log_train({"train/loss": loss}, len(batch["input_ids"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        # reset here (not at epoch end) so metric states are created in the current grad mode
        for metric in (self.val_nll, self.val_tokens, self.val_gold):
            metric.reset()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        nll, num_tokens = self.loss(batch)
        self.val_nll.update(nll)
        self.val_tokens.update(num_tokens)
        task = getattr(self.trainer.datamodule, "task", None) if self._trainer is not None else None
        if task is not None and batch_idx < self.gold_eval_batches:
            completions = self.generate(batch["prompt_ids"])
            self.val_gold.update(task.reward(batch["prompt_text"], completions).to(self.device))

    def on_validation_epoch_end(self) -> None:
        nll, tokens = self.val_nll.compute(), self.val_tokens.compute().clamp(min=1)
        # the metrics are already reduced over ranks; sync_dist only keeps Lightning from warning
        self.log("val/loss", nll / tokens, prog_bar=True, sync_dist=True)
        self.log("val/perplexity", torch.exp(nll / tokens), sync_dist=True)
        if self.val_gold.update_count:
            self.log("val/gold_reward", self.val_gold.compute(), prog_bar=True, sync_dist=True)
