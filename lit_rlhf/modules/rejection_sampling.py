"""Rejection-sampling fine-tuning (Llama 2 §3.2.3): best-of-K samples, SFT on the winners."""

from __future__ import annotations

import random
from typing import Any, Literal

import torch

from lit_rlhf.data.collate import Collator
from lit_rlhf.losses import completion_nll
from lit_rlhf.models import ModelLike
from lit_rlhf.modules.base import PolicyModule
from lit_rlhf.rollout.generation import SamplingConfig, generate, response_mask
from lit_rlhf.rollout.rewards import RewardFn, reward_source, score_completions


class RejectionSampling(PolicyModule):
    """For each prompt batch: sample ``k`` completions per prompt, keep the best-scored one, add the winners
    to the pool, then take ``sft_steps`` SFT steps on minibatches drawn from the pool.

    Llama 2 pools the top samples of **all** previous iterations (``pool="all"``); keeping only the last
    iteration's bag (``pool="last"``) regressed in their V1–V3. Dropout: the model's own config (the SFT
    steps need no reference log-probs; sampling runs in eval mode).

    Args:
        model: policy name or spec.
        sampling: decoding of the K samples (``temperature`` > 0; see ``lit-rlhf rs-temperature``).
        k: samples per prompt.
        reward_model: a ``RewardModel`` checkpoint or exported folder used as the scorer.
        reward_fn: any callable ``(prompts, completions) -> (B,)`` scores; neither = the task's gold reward.
        pool: ``all`` iterations' winners or the ``last`` iteration's only.
        sft_steps: optimizer steps on the pool after each sampling round.
        sft_batch_size: pool examples per SFT step.
        min_score: winners scoring below this are not kept (``None`` = keep every winner).
        gradient_clip_val: gradient-norm clip of the SFT steps.
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    path_hparams = ("reward_model",)

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        k: int = 8,
        reward_model: str | None = None,
        reward_fn: RewardFn | None = None,
        pool: Literal["all", "last"] = "all",
        sft_steps: int = 4,
        sft_batch_size: int = 16,
        min_score: float | None = None,
        gradient_clip_val: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        sampling = SamplingConfig.of(sampling if sampling is not None else {"temperature": 1.0, "max_new_tokens": 64})
        if sampling.temperature <= 0 or k < 1 or sft_steps < 1 or pool not in ("all", "last"):
            raise ValueError(f"need temperature > 0, k >= 1, sft_steps >= 1, pool in (all, last); got "
                             f"{sampling.temperature}, {k}, {sft_steps}, {pool!r}")
        super().__init__(model=model, sampling=sampling, **kwargs)
        self.record_hparams(ignore=("reward_fn",))
        self.automatic_optimization = False
        self.reward_source: RewardFn | None = reward_source(reward_model, reward_fn)
        self.k, self.pool_mode, self.sft_steps, self.sft_batch_size = k, pool, sft_steps, sft_batch_size
        self.min_score, self.gradient_clip_val = min_score, gradient_clip_val
        self.pool: list[dict[str, Any]] = []  # {"input_ids", "completion_mask", "prompt", "completion", "score"}

    def best_of_k(self, batch: dict[str, Any]) -> tuple[list[dict[str, Any]], torch.Tensor]:
        """The best of ``k`` samples per prompt as SFT examples, and all scores ``(B, k)``."""
        prompt_ids, prompts = batch["prompt_ids"], list(batch["prompt_text"])
        repeated = [ids for ids in prompt_ids for _ in range(self.k)]
        texts, sequences, width = generate(self.model, self.tokenizer, repeated, self.sampling)
        task = getattr(self.trainer.datamodule, "task", None) if self._trainer is not None else None
        scores = score_completions(self.reward_source, task, [p for p in prompts for _ in range(self.k)], texts)
        scores = scores.view(len(prompts), self.k)
        tok = self.tokenizer
        lengths = response_mask(sequences[:, width:], tok.eos_token_id, tok.pad_token_id)[0].sum(-1)
        winners = []
        for i, j in enumerate(scores.argmax(-1).tolist()):
            if self.min_score is not None and scores[i, j] < self.min_score:
                continue
            row = i * self.k + j
            completion = sequences[row, width:width + int(lengths[row])].tolist()  # up to and including EOS
            ids = list(prompt_ids[i]) + completion
            winners.append({"input_ids": ids, "completion_mask": [0] * len(prompt_ids[i]) + [1] * len(completion),
                            "prompt": prompts[i], "completion": texts[row], "score": float(scores[i, j])})
        return winners, scores

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        winners, scores = self.best_of_k(batch)
        self.pool = (self.pool if self.pool_mode == "all" else []) + winners
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        collate = Collator(self.tokenizer.pad_token_id, "right")
        losses = []
        # every rank takes the same number of steps: none until each rank's pool has a winner (min_score)
        ready = self.trainer.strategy.reduce_boolean_decision(bool(self.pool), all=True)
        for _ in range(self.sft_steps if ready else 0):
            examples = random.sample(self.pool, min(self.sft_batch_size, len(self.pool)))
            mb = collate([{k: e[k] for k in ("input_ids", "completion_mask")} for e in examples])
            mb = {k: v.to(self.device) for k, v in mb.items()}
            logps, n = self.policy_logps(mb["input_ids"], mb["attention_mask"], mb["completion_mask"])
            loss = completion_nll(logps, n, "token_mean")
            self.manual_step(loss, optimizer, self.gradient_clip_val)
            if scheduler is not None:  # manual optimisation: Lightning does not step it
                scheduler.step()
            losses.append(loss.detach())
        metrics = {
            "rs/mean_score": scores.mean(), "rs/best_score": scores.max(-1).values.mean(),
            "rs/pool_size": torch.tensor(float(len(self.pool))),
        }
        if losses:
            metrics["train/loss"] = torch.stack(losses).mean()
        self.last_metrics = {k: float(v) for k, v in metrics.items()}  # of the last iteration, for callbacks
        self.log_train(metrics, len(batch["prompt_ids"]), prog_bar=("rs/best_score", "train/loss"))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rs_pool"] = self.pool

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.pool = list(checkpoint.get("rs_pool", []))
