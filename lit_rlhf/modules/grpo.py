"""Critic-free group RL on the online RL core: GRPO, Dr. GRPO, RLOO, REINFORCE++, with DAPO's and GSPO's options.

One training step samples ``G`` completions for each prompt of the batch, scores them, turns the scores into
advantages with the chosen estimator (no critic) and takes ``num_iterations × num_mini_batches`` optimizer
steps with the clipped policy-gradient loss. With ``dynamic_sampling`` (DAPO) groups whose rewards are all
equal are dropped and later batches refill the update, so a step may sample several batches before it updates.

Estimators (``advantage``):

* ``grpo`` — DeepSeekMath §4.1.2: ``(r − mean_group) / std`` (``scale_rewards`` group | batch | none);
  KL to the reference as a k3 loss term with weight ``beta``.
* ``dr_grpo`` — Liu et al. 2025: ``r − mean_group``, losses summed and divided by the generation budget.
* ``rloo`` — Ahmadian et al. 2024: leave-one-out baseline; ``beta`` puts ``−β Σ_t KL_t`` into the reward.
* ``reinforce_pp`` — Hu 2025: per-token ``−β KL_t`` in the reward, returns normalised over the batch;
  ``reinforce_pp_baseline`` subtracts the group mean of the scores first.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_rlhf.losses import (
    AGGREGATIONS,
    group_advantages,
    group_std,
    kl_loss,
    kl_penalty,
    masked_mean,
    policy_gradient_loss,
    reinforce_pp_advantages,
    rloo_advantages,
)
from lit_rlhf.losses.group import Aggregation, Level, Scale
from lit_rlhf.losses.ppo import KLKind
from lit_rlhf.models import ModelLike
from lit_rlhf.modules.rl import OnlineRL
from lit_rlhf.rollout import SamplingConfig
from lit_rlhf.rollout.experience import Samples, concat, take
from lit_rlhf.rollout.rewards import RewardFn, RewardSpec

Advantage = Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"]
ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
KL_IN_LOSS = ("grpo", "dr_grpo")  # the others put the KL penalty into the reward


class GRPO(OnlineRL):
    """Group-relative policy optimisation and its critic-free relatives.

    Args:
        model: policy name or spec (full fine-tuning, or LoRA through ``lora``).
        sampling: rollout decoding (``temperature`` > 0; default 1.0 and 64 new tokens).
        reward_model: a ``RewardModel`` checkpoint or exported folder used as the reward source.
        reward_fn: any callable ``(prompts, completions) -> (B,)`` scores (a tensor or list of floats); none of the
            three = the task's gold reward.
        rewards: weighted reward sources (:class:`~lit_rlhf.modules.rl.OnlineRL`); a ``prm`` source gives dense
            step rewards to ``reinforce_pp``, and the ``aggregate`` of its step scores to the other estimators.
        group_size: completions per prompt ``G`` (≥ 2; 1 is allowed for ``reinforce_pp``, whose baseline is the
            batch's: REINFORCE++ as Hu (2025) defines it, one completion per prompt).
        advantage: ``grpo`` | ``dr_grpo`` | ``rloo`` | ``reinforce_pp`` | ``reinforce_pp_baseline``.
        scale_rewards: ``grpo``'s std division: ``group`` | ``batch`` | ``none`` (TRL's ``scale_rewards``).
        beta: KL coefficient; 0 = no reference model is kept. A k3 loss term for ``grpo``/``dr_grpo``, a
            penalty in the reward for the others.
        kl_estimator: the KL estimator (default ``k3`` in the loss, ``k1`` in the reward).
        clip_low: ε_low of the ratio clip.
        clip_high: ε_high (DAPO's clip-higher, e.g. 0.28); ``None`` = ``clip_low``.
        loss_level: ``token`` ratios, or GSPO's length-normalised ``sequence`` ratio.
        aggregation: ``token_mean`` (DAPO, TRL's default), ``sequence_mean`` (GRPO) or ``constant`` (Dr. GRPO:
            divide by ``sampling.max_new_tokens``); ``None`` = ``constant`` for ``dr_grpo``, else ``token_mean``.
        dynamic_sampling: DAPO: drop groups whose rewards are all equal; refill from the next batches.
        max_sampling_batches: the refill cap: after this many batches the update uses the groups it has.
        num_iterations: passes over each batch of samples (μ; TRL's ``num_iterations``). With 1 every
            minibatch is on-policy (ratio exactly 1).
        num_mini_batches: optimizer steps per pass; with ``shared_prefix`` (the default) each minibatch holds whole
            groups, so its prompts are encoded once and the rollout pass runs in the first pass's minibatches.
        gradient_clip_val: global gradient-norm clip.
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        reward_model: str | None = None,
        reward_fn: RewardFn | None = None,
        rewards: list[RewardSpec] | None = None,
        group_size: int = 8,
        advantage: Advantage = "grpo",
        scale_rewards: Scale = "group",
        beta: float = 0.0,
        kl_estimator: KLKind | None = None,
        clip_low: float = 0.2,
        clip_high: float | None = None,
        loss_level: Level = "token",
        aggregation: Aggregation | None = None,
        dynamic_sampling: bool = False,
        max_sampling_batches: int = 3,
        num_iterations: int = 1,
        num_mini_batches: int = 1,
        gradient_clip_val: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        if advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {advantage!r}")
        aggregation = aggregation or ("constant" if advantage == "dr_grpo" else "token_mean")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
        if loss_level not in ("token", "sequence"):
            raise ValueError(f"loss_level must be 'token' or 'sequence', got {loss_level!r}")
        if group_size < 1 or (group_size == 1 and advantage != "reinforce_pp"):
            raise ValueError(f"group_size must be >= 2 (advantages compare a prompt's completions; only 'reinforce_pp' "
                             f"takes one completion per prompt), got {group_size} for advantage={advantage!r}")
        if dynamic_sampling and group_size < 2:
            raise ValueError("dynamic_sampling drops groups whose rewards are all equal: it needs group_size >= 2")
        if beta < 0 or clip_low <= 0 or (clip_high is not None and clip_high <= 0) or max_sampling_batches < 1:
            raise ValueError(f"need beta >= 0, clip_low > 0, clip_high > 0 and max_sampling_batches >= 1; got {beta}, "
                             f"{clip_low}, {clip_high}, {max_sampling_batches}")
        sampling = SamplingConfig.of(sampling if sampling is not None else {"temperature": 1.0, "max_new_tokens": 64})
        super().__init__(model=model, sampling=sampling, reward_model=reward_model, reward_fn=reward_fn,
                         rewards=rewards, group_size=group_size, reference=beta > 0, ppo_epochs=num_iterations,
                         num_mini_batches=num_mini_batches, gradient_clip_val=gradient_clip_val, **kwargs)
        self.record_hparams(ignore=("reward_fn",))
        self.advantage, self.scale_rewards, self.beta = advantage, scale_rewards, beta
        self.kl_in_loss = advantage in KL_IN_LOSS
        self.kl_estimator: KLKind = kl_estimator or ("k3" if self.kl_in_loss else "k1")
        self.clip_low, self.clip_high, self.loss_level, self.aggregation = clip_low, clip_high, loss_level, aggregation
        self.dynamic_sampling, self.max_sampling_batches = dynamic_sampling, max_sampling_batches
        self.pending: Samples | None = None  # kept groups waiting for the update (dynamic sampling)
        self.pending_batches, self.dropped_groups, self.empty_updates = 0, 0, 0
        self.sampled: list[dict[str, float]] = []  # reward statistics of every batch sampled for the next update

    # ------------------------------------------------------------------ select (dynamic sampling)
    def select(self, samples: Samples, metrics: dict[str, torch.Tensor]) -> Samples | None:
        """Record the batch's reward statistics; with ``dynamic_sampling`` keep only groups with reward spread
        and return them once a prompt batch's worth is there (or the refill cap is reached)."""
        scores = samples["scores"]
        stats = {"reward": scores.float().mean().item(),
                 "completions/mean_length": sum(len(r) for r in samples["responses"]) / len(samples["responses"]),
                 "completions/clipped_ratio": (~samples["ended"]).float().mean().item()}
        std = group_std(scores, self.group_size) if self.group_size > 1 else None  # a group of one has no spread
        if std is not None:
            stats.update({"reward_std": std.mean().item(), "frac_reward_zero_std": (std == 0).float().mean().item()})
        self.sampled.append(stats)
        if not self.dynamic_sampling:
            return samples
        G, target = self.group_size, len(scores) // self.group_size
        kept = [g for g in range(len(std)) if std[g] > 0]
        self.dropped_groups += len(std) - len(kept)
        part = take(samples, [g * G + j for g in kept for j in range(G)])
        self.pending = part if self.pending is None else concat([self.pending, part])
        self.pending_batches += 1
        have = len(self.pending["scores"]) // G
        strategy = self.trainer.strategy if self._trainer is not None else None
        ready = have >= target or self.pending_batches >= self.max_sampling_batches
        if strategy is not None:  # every rank updates at the same step (same number of optimizer steps)
            ready = strategy.reduce_boolean_decision(ready, all=True)
        if not ready:
            return None
        usable = have * G >= self.num_mini_batches
        if strategy is not None:
            usable = strategy.reduce_boolean_decision(usable, all=True)
        chosen = take(self.pending, list(range(min(have, target) * G))) if usable else None
        metrics["dynamic_sampling/batches"] = torch.tensor(float(self.pending_batches))
        metrics["dynamic_sampling/dropped_groups"] = torch.tensor(float(self.dropped_groups))
        metrics["dynamic_sampling/kept_groups"] = torch.tensor(float(min(have, target)))
        self.pending, self.pending_batches, self.dropped_groups = None, 0, 0
        if chosen is None:
            self.empty_updates += 1  # no rank may step alone: every rank drops this fill
            self.sampled = []
        return chosen

    @property
    def needs_rollout_logprobs(self) -> bool:
        """Also when the KL to the reference enters the reward (``rloo``, ``reinforce_pp`` with ``beta`` > 0)."""
        return super().needs_rollout_logprobs or (self.has_reference and not self.kl_in_loss)

    # ------------------------------------------------------------------ rewards and advantages
    @property
    def dense_rewards(self) -> bool:
        return self.advantage == "reinforce_pp"

    def shape_rewards(self, exp: dict[str, torch.Tensor], samples: Samples) -> dict[str, torch.Tensor]:
        """Scores as rewards; ``rloo`` subtracts ``β Σ_t KL_t``; ``reinforce_pp`` keeps the per-token KL and the
        dense step rewards (outcome sources on the last token, step sources on the tokens closing the steps)."""
        scores, mask = samples["scores"].to(self.device).float(), exp["response_mask"]
        exp["rewards"] = scores
        steps = self.step_token_rewards(samples, mask)
        if steps is not None:
            exp["rewards"], exp["step_rewards"] = samples["outcome_scores"].to(self.device).float(), steps
        if self.has_reference and not self.kl_in_loss:
            kl = kl_penalty(exp["logprobs"], exp["ref_logprobs"], self.kl_estimator) * mask
            exp["kl"] = kl
            if self.advantage == "rloo":
                exp["rewards"] = scores - self.beta * kl.sum(-1)
        return {}

    def advantages(self, exp: dict[str, torch.Tensor]) -> None:
        G, rewards = self.group_size, exp["rewards"]
        if self.advantage == "grpo":
            adv = group_advantages(rewards, G, self.scale_rewards)
        elif self.advantage == "dr_grpo":
            adv = group_advantages(rewards, G, "none")
        elif self.advantage == "rloo":
            adv = rloo_advantages(rewards, G)
        else:
            adv = reinforce_pp_advantages(rewards, exp["response_mask"], exp.get("kl"), self.beta,
                                          G if self.advantage == "reinforce_pp_baseline" else None,
                                          step_rewards=exp.get("step_rewards"))
        if adv.dim() == 1:  # one advantage per sequence, stored per token (the buffer's minibatches are row slices)
            adv = adv.unsqueeze(-1) * exp["response_mask"].float()
        exp["advantages"] = adv

    # ------------------------------------------------------------------ update
    def loss(self, out: dict[str, torch.Tensor], mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped policy-gradient loss (+ β × k3 KL for ``grpo``/``dr_grpo``)."""
        mask, budget = mb["response_mask"], self.sampling.max_new_tokens
        pg, st = policy_gradient_loss(out["logprobs"], mb["logprobs"], mb["advantages"], mask, self.clip_low,
                                      self.clip_high, self.loss_level, self.aggregation, budget)
        loss = pg.mean()
        stats = {"ratio": st["ratio"].item(), "clipfrac": st["clipfrac"].item(), "clip_low": st["clip_low"].item(),
                 "clip_high": st["clip_high"].item(), "clip_region": st["clip_region"].item(),
                 "approxkl": st["approxkl"].item(), "loss/policy": loss.item(),
                 "entropy": masked_mean(out["entropy"], mask).item()}
        if self.has_reference:
            kl, mean_kl = kl_loss(out["logprobs"], mb["ref_logprobs"], mask, "k3", self.aggregation, budget)
            if self.kl_in_loss:
                loss = loss + self.beta * kl.mean()
            stats["kl"] = mean_kl.item()
        stats["loss"] = loss.item()
        return loss, stats

    def summarize_update(self) -> dict[str, torch.Tensor]:
        mean = self.mean_stat
        metrics = {
            "loss": mean("loss"), "entropy": mean("entropy"), "clip_ratio/low_mean": mean("clip_low"),
            "clip_ratio/high_mean": mean("clip_high"), "clip_ratio/region_mean": mean("clip_region"),
            "policy/clipfrac_avg": mean("clipfrac"), "policy/approxkl_avg": mean("approxkl"),
            "val/ratio": mean("ratio"),
        }
        if self.has_reference:
            metrics["kl"] = mean("kl")
        for key in self.sampled[0] if self.sampled else ():
            metrics[key] = torch.tensor(sum(s[key] for s in self.sampled) / len(self.sampled))
        self.sampled = []
        return metrics

    prog_bar = ("reward", "frac_reward_zero_std")

    # ------------------------------------------------------------------ state
    def rl_state(self) -> dict[str, Any]:
        return {**super().rl_state(), "pending": self.pending, "pending_batches": self.pending_batches,
                "dropped_groups": self.dropped_groups, "empty_updates": self.empty_updates, "sampled": self.sampled}

    def load_rl_state(self, state: dict[str, Any]) -> None:
        super().load_rl_state(state)
        self.pending, self.pending_batches = state["pending"], state["pending_batches"]
        self.dropped_groups, self.empty_updates = state["dropped_groups"], state["empty_updates"]
        self.sampled = list(state["sampled"])
