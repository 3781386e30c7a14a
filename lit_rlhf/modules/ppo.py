"""PPO for language models (Ziegler et al. 2019; InstructGPT; "The N+ implementation details of RLHF with PPO").

PPO is a configuration of the online RL core (:class:`~lit_rlhf.modules.rl.OnlineRL`): one completion per
prompt, a critic, a reference in the reward. One training step = one PPO iteration over a batch of prompts:

1. **rollout** (no grad): sample responses with the KV cache (stops when every sequence has ended),
   then one forward pass per model gives old log-probs, values and reference log-probs; the reward
   source scores the decoded completions;
2. **rewards**: ``r_t = −β kl_t`` per token plus the (EOS-penalised, optionally normalised and clipped)
   score on the last real response token; GAE advantages (whitened) and returns;
3. **update**: ``ppo_epochs`` passes over shuffled minibatches of the rollout buffer, one optimizer
   step per minibatch with the clipped policy loss + ``vf_coef`` × clipped value loss;
4. the KL controller is updated with the batch's mean KL.

``Trainer.max_steps`` counts optimizer steps: ``iterations × ppo_epochs × num_mini_batches``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit_rlhf.losses import (
    gae,
    kl_penalty,
    masked_mean,
    ppo_policy_loss,
    ppo_value_loss,
    shape_scores,
    token_rewards,
    whiten,
)
from lit_rlhf.losses.ppo import KLKind
from lit_rlhf.models import HeadModel, ModelLike, ModelSpec, hidden_size, load_model
from lit_rlhf.models.checkpoint import portable_spec
from lit_rlhf.modules.rl import OnlineRL, disable_dropout, position_ids_of
from lit_rlhf.rollout import RunningMoments, SamplingConfig, kl_controller
from lit_rlhf.rollout.experience import Samples
from lit_rlhf.rollout.rewards import RewardFn, RewardSpec, load_reward_head

__all__ = ["PPO", "disable_dropout", "position_ids_of"]


class PPO(OnlineRL):
    """PPO with a rollout buffer, a value model, a frozen reference and any reward source.

    Args:
        model: policy name or spec (full fine-tuning, or LoRA through ``lora``).
        sampling: rollout decoding (``temperature`` > 0; log-probs use logits / temperature).
        reward_model: a ``RewardModel`` checkpoint or exported folder used as the reward source.
        reward_fn: any callable ``(prompts, completions) -> (B,)`` scores (e.g. a task's gold reward).
            With none of the three, the data module's task's gold reward is used.
        rewards: weighted reward sources (:class:`~lit_rlhf.modules.rl.OnlineRL`); a ``prm`` source's step scores
            are dense rewards on the tokens that close the steps (the outcome sources' sum is the score on the last
            token, with the EOS penalty and normalisation below).
        value_model: critic backbone name or spec (default: the policy's spec); ignored with ``value_head``.
        value_head: put the value head on the policy's last hidden state instead of a separate critic.
        value_init: initialise the critic from a reward model (``.ckpt`` or folder, as ``reward_model``).
        value_lr: learning rate of the critic's parameters (value model or value head) as their own param
            group; ``None`` = the optimizer's learning rate. A critic that is not initialised from a reward
            model starts from a random head and usually needs a higher rate than the policy (OpenRLHF's
            ``critic_learning_rate``), else its values stay near the mean return and carry no credit.
        ppo_epochs: passes over the rollout buffer per iteration.
        num_mini_batches: minibatches per pass (near-equal sizes).
        kl_coef: β (initial β with ``kl_target``).
        kl_target: target KL (nats per sequence) of the adaptive controller; ``None`` = fixed β.
        kl_horizon: horizon of the adaptive controller in episodes (prompts; each iteration passes its batch
            size): β changes by at most a factor ``1 ± 0.2 · batch / kl_horizon`` per iteration. The default is
            Ziegler et al.'s 10,000 (0.13% per iteration at 64 prompts); short runs need a few iterations'
            worth, e.g. 320 at 64 prompts (4%).
        kl_estimator: per-token KL in the reward: ``k1`` | ``k2`` | ``k3``.
        gamma: GAE γ.
        lam: GAE λ.
        clip_range: policy ratio clip ε.
        clip_range_value: value clip ε (``None`` = unclipped).
        vf_coef: weight of the value loss.
        entropy_coef: weight of an entropy bonus (0 = only logged).
        missing_eos_penalty: subtracted from the score of responses that did not end (``None`` = off).
        reward_norm: normalise scores with running mean/std (Secrets of RLHF I, PPO-max).
        reward_clip: clip (normalised) scores to ``±reward_clip``.
        whiten_advantages: whiten advantages over the batch's valid tokens.
        gradient_clip_val: global gradient-norm clip (set here: Lightning refuses it under manual optimisation).
        **kwargs: optimizer and schedule (:class:`~lit_rlhf.modules.base.LitRLHFModule`).
    """

    path_hparams = ("reward_model", "value_init")

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        reward_model: str | None = None,
        reward_fn: RewardFn | None = None,
        rewards: list[RewardSpec] | None = None,
        value_model: ModelLike | None = None,
        value_head: bool = False,
        value_init: str | None = None,
        value_lr: float | None = None,
        ppo_epochs: int = 4,
        num_mini_batches: int = 1,
        kl_coef: float = 0.05,
        kl_target: float | None = None,
        kl_horizon: int = 10000,
        kl_estimator: KLKind = "k1",
        gamma: float = 1.0,
        lam: float = 0.95,
        clip_range: float = 0.2,
        clip_range_value: float | None = 0.2,
        vf_coef: float = 0.1,
        entropy_coef: float = 0.0,
        missing_eos_penalty: float | None = None,
        reward_norm: bool = False,
        reward_clip: float | None = None,
        whiten_advantages: bool = True,
        gradient_clip_val: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        sampling = SamplingConfig.of(sampling if sampling is not None else {"temperature": 0.7, "max_new_tokens": 53})
        if value_lr is not None and value_lr <= 0:
            raise ValueError(f"value_lr must be > 0, got {value_lr}")
        super().__init__(model=model, sampling=sampling, reward_model=reward_model, reward_fn=reward_fn,
                         rewards=rewards, group_size=1, reference=True, ppo_epochs=ppo_epochs,
                         num_mini_batches=num_mini_batches, entropy_coef=entropy_coef,
                         gradient_clip_val=gradient_clip_val, **kwargs)
        self.record_hparams(ignore=("reward_fn",))
        if value_head:
            self.value_model: nn.Module | None = None
            self.value_head = nn.Linear(hidden_size(self.model), 1, bias=False)
            nn.init.normal_(self.value_head.weight, std=1.0 / (hidden_size(self.model) + 1) ** 0.5)
        else:
            self.value_head = None
            self.value_model = self._critic(ModelSpec.of(value_model or self.spec), value_init)
            disable_dropout(self.value_model)
        self.value_lr = value_lr
        self.kl_ctl = kl_controller(kl_coef, kl_target, kl_horizon)
        self.kl_estimator, self.gamma, self.lam = kl_estimator, gamma, lam
        self.clip_range, self.clip_range_value, self.vf_coef = clip_range, clip_range_value, vf_coef
        self.missing_eos_penalty, self.reward_norm, self.reward_clip = missing_eos_penalty, reward_norm, reward_clip
        self.whiten_advantages = whiten_advantages
        self.reward_stats = RunningMoments()

    def _critic(self, spec: ModelSpec, init: str | None) -> HeadModel:
        if init is None:
            return HeadModel(load_model(spec, "backbone", self.tokenizer), 1, "none", squeeze=True, bias=False)
        reward_head, _ = load_reward_head(init)  # value model initialised from the reward model (N+ details)
        critic = HeadModel(reward_head.backbone, 1, "none", squeeze=True, bias=False)
        critic.head.weight.data.copy_(reward_head.head.weight.data)
        return critic

    def param_groups(self) -> list[Any]:
        """The trainable parameters; with ``value_lr``, the critic's in a second group with that learning rate."""
        params = self.trainable_parameters()
        if self.value_lr is None:
            return params
        critic_model = self.value_head if self.value_head is not None else self.value_model
        critic = {id(p) for p in critic_model.parameters()}
        return [{"params": [p for p in params if id(p) not in critic]},
                {"params": [p for p in params if id(p) in critic], "lr": self.value_lr}]

    # ------------------------------------------------------------------ critic
    @property
    def has_critic(self) -> bool:
        return True

    @property
    def values_from_hidden(self) -> bool:
        return self.value_head is not None

    @property
    def dense_rewards(self) -> bool:
        return True

    def critic_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                      policy_out: Any, response_width: int) -> torch.Tensor:
        R = response_width
        if self.value_head is not None:
            hidden = policy_out.hidden_states[-1][:, -R - 1:-1]
            return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        values = self.value_model(input_ids, attention_mask, position_ids=position_ids)
        return values[:, -R - 1:-1].float()

    # ------------------------------------------------------------------ rewards and advantages
    def shape_rewards(self, exp: dict[str, torch.Tensor], samples: Samples) -> dict[str, torch.Tensor]:
        """``r_t = −β kl_t`` plus the EOS-penalised, normalised, clipped score on the last real token, plus dense
        step rewards (a PRM source) on the tokens that close the steps."""
        raw_scores, rmask = samples["scores"].to(self.device), exp["response_mask"]
        ended = samples["ended"].to(self.device)
        steps = self.step_token_rewards(samples, rmask)
        outcome = raw_scores if steps is None else samples["outcome_scores"].to(self.device)
        scores = shape_scores(outcome, ended, self.missing_eos_penalty)
        if self.reward_norm:
            self.reward_stats.update(scores)
            scores = shape_scores(scores, mean=self.reward_stats.mean, std=self.reward_stats.std, clip=self.reward_clip)
        elif self.reward_clip is not None:
            scores = shape_scores(scores, clip=self.reward_clip)
        logprobs, ref_logprobs = exp["logprobs"], exp["ref_logprobs"]
        beta = self.kl_ctl.value
        kl = kl_penalty(logprobs, ref_logprobs, self.kl_estimator) * rmask
        exp["rewards"] = token_rewards(scores, kl, rmask, beta)
        if steps is not None:
            exp["rewards"] = exp["rewards"] + steps
        exp["shaped_scores"] = scores
        seq_kl = (kl_penalty(logprobs, ref_logprobs, "k1") * rmask).sum(-1)
        metrics = {
            "objective/kl": seq_kl.mean(),
            "objective/kl_coef": torch.tensor(beta),
            "objective/scores": raw_scores.mean(),
            "objective/non_score_reward": (-beta * seq_kl).mean(),
            "objective/rlhf_reward": (raw_scores - beta * seq_kl).mean(),
            "response_length/mean": rmask.sum(-1).float().mean(),
            "eos/fraction": ended.float().mean(),
        }
        task = self.task
        if task is not None and self.reward_source is not None and self.reward_source != task.reward:
            metrics["objective/gold_scores"] = task.reward(samples["prompts"], samples["completions"]).float().mean()
        return metrics

    def advantages(self, exp: dict[str, torch.Tensor]) -> None:
        """GAE advantages (whitened over the batch's valid tokens) and returns."""
        rmask = exp["response_mask"]
        advantages, returns = gae(exp["rewards"], exp["values"], rmask, self.gamma, self.lam)
        exp["advantages"] = whiten(advantages, rmask) if self.whiten_advantages else advantages
        exp["returns"] = returns

    # ------------------------------------------------------------------ update
    def loss(self, out: dict[str, torch.Tensor], mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped policy loss + ``vf_coef`` × clipped value loss − ``entropy_coef`` × entropy."""
        mask = mb["response_mask"]
        pg, pg_stats = ppo_policy_loss(out["logprobs"], mb["logprobs"], mb["advantages"], mask, self.clip_range)
        vf, vf_stats = ppo_value_loss(out["values"], mb["values"], mb["returns"], mask, self.clip_range_value)
        entropy = masked_mean(out["entropy"], mask)
        loss = pg.mean() + self.vf_coef * vf.mean() - self.entropy_coef * entropy
        return loss, {
            "ratio": pg_stats["ratio"].item(), "clipfrac": pg_stats["clipfrac"].item(),
            "approxkl": pg_stats["approxkl"].item(), "loss/policy": pg.mean().item(), "loss/value": vf.mean().item(),
            "vf_clipfrac": vf_stats["clipfrac"].item(), "entropy": entropy.item(),
        }

    def summarize_update(self) -> dict[str, torch.Tensor]:
        mean = self.mean_stat
        return {
            "policy/approxkl_avg": mean("approxkl"), "policy/clipfrac_avg": mean("clipfrac"),
            "loss/policy_avg": mean("loss/policy"), "loss/value_avg": mean("loss/value"),
            "val/clipfrac_avg": mean("vf_clipfrac"), "val/ratio": mean("ratio"), "policy/entropy_avg": mean("entropy"),
        }

    def after_update(self, metrics: dict[str, torch.Tensor], n_prompts: int) -> None:
        self.kl_ctl.update(float(metrics["objective/kl"]), n_steps=n_prompts)

    prog_bar = ("objective/scores", "objective/kl")

    # ------------------------------------------------------------------ state
    state_key = "ppo_state"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters", {})
        if self.value_model is not None and hparams.get("value_init") is None:  # not the ``model`` it may now name
            hparams["value_model"] = portable_spec(hparams.get("value_model") or self.spec).to_dict()

    def rl_state(self) -> dict[str, Any]:
        return {**super().rl_state(), "kl_ctl": self.kl_ctl.state_dict(),
                "reward_stats": self.reward_stats.state_dict()}

    def load_rl_state(self, state: dict[str, Any]) -> None:
        super().load_rl_state(state)
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.reward_stats.load_state_dict(state["reward_stats"])

    def export(self, folder: str | Path, merge_lora: bool = True) -> Path:
        """The policy as a Hugging Face folder, and the critic under ``<folder>/value_model``."""
        folder = super().export(folder, merge_lora)
        if self.value_model is not None:
            self.value_model.save_pretrained(folder / "value_model")
        else:
            torch.save(self.value_head.state_dict(), folder / "value_head.pt")
        return folder
