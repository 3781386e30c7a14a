"""Online DPO (Guo et al. 2024, "Direct language model alignment from online AI feedback", Algorithm 1) on the
online RL core: each training step samples ``G ≥ 2`` completions per prompt from the *current* policy
(:meth:`~lit_rlhf.modules.rl.OnlineRL.sample`), scores them with a reward source (an annotator: the task's gold
reward, a callable judge or a ``RewardModel``), pairs the best and the worst completion of every prompt and takes
one DPO step (:func:`~lit_rlhf.losses.dpo_loss`, Rafailov et al. 2023, Eq. 7) against a reference policy.

The reference is the starting policy (a frozen copy), another policy (``reference_from``, e.g. the SFT model when
a loop of rounds starts each round from the previous round's policy), or refreshed to the current policy every
``refresh_reference_every`` steps (iterative DPO, Xu et al. 2023).
"""

from __future__ import annotations

from typing import Any

import torch

from lit_rlhf.losses import dpo_loss
from lit_rlhf.losses.dpo import DPOLossType
from lit_rlhf.models import ModelLike
from lit_rlhf.models.checkpoint import load_policy
from lit_rlhf.modules.dpo import implicit_reward_stats
from lit_rlhf.modules.rl import OnlineRL
from lit_rlhf.rollout import SamplingConfig
from lit_rlhf.rollout.experience import Samples, take
from lit_rlhf.rollout.rewards import RewardFn, RewardSpec


def best_worst_pairs(scores: torch.Tensor, group_size: int) -> tuple[list[int], list[int]]:
    """Rows of the best (chosen) and worst (rejected) completion of every group whose scores are not all equal.

    Args:
        scores: ``(B,)`` scores, ``B/G`` groups of ``G`` consecutive rows.
        group_size: ``G``.
    Returns:
        ``(chosen_rows, rejected_rows)``, one entry per kept group (ties: the first row of the best / worst score).
    """
    groups = scores.view(-1, group_size)
    best, worst = groups.argmax(-1), groups.argmin(-1)
    kept = (groups.max(-1).values > groups.min(-1).values).nonzero().flatten().tolist()
    return [g * group_size + int(best[g]) for g in kept], [g * group_size + int(worst[g]) for g in kept]


class OnlineDPO(OnlineRL):
    """DPO on pairs sampled from the current policy and labelled by a reward source at every step.

    One training step: ``G`` samples per prompt → scores → (best, worst) pair per prompt (prompts whose ``G``
    scores tie give no pair) → one optimizer step on the mean DPO loss of the pairs. Sequence log-probs are sums
    over the response tokens of ``logits / sampling.temperature`` (as TRL's ``OnlineDPOTrainer``). Logs DPO's
    ``train/loss``, ``rewards/chosen|rejected|margins|accuracies``, ``logps/chosen|rejected``, and ``reward``
    (mean score of the samples), ``score_gap`` (mean score of chosen − rejected) and ``pairs`` (pairs per step).

    Args:
        model: policy name or spec (full fine-tuning, or LoRA through ``lora``: the reference is then the base).
        sampling: decoding of the samples (``temperature`` > 0; default 1.0 and 64 new tokens).
        reward_model: a ``RewardModel`` checkpoint or exported folder that labels the pairs.
        reward_fn: any callable ``(prompts, completions) -> (B,)`` scores; none of the three = the task's gold reward.
        rewards: a weighted combination of reward sources (:class:`~lit_rlhf.rollout.rewards.Rewards`).
        group_size: samples per prompt ``G`` (≥ 2; OAIF uses 2).
        beta: β of DPO.
        loss_type: a DPO loss name of :func:`~lit_rlhf.losses.dpo_loss` (``sigmoid``, ``ipo``, ``hinge``, ...).
        label_smoothing: ε (cDPO / robust).
        reference_from: the reference policy instead of a copy of the starting one: a lit_rlhf checkpoint, run
            folder, Hugging Face folder or model name.
        refresh_reference_every: copy the current policy into the reference every this many steps (``None``: the
            reference stays fixed).
        gradient_clip_val: global gradient-norm clip.
        **kwargs: ``init_from``, optimizer and schedule (:class:`~lit_rlhf.modules.base.PolicyModule`).
    """

    path_hparams = ("reward_model", "reference_from")

    def __init__(
        self,
        model: ModelLike = "lit-rlhf:tiny-llama",
        sampling: SamplingConfig | None = None,
        reward_model: str | None = None,
        reward_fn: RewardFn | None = None,
        rewards: list[RewardSpec] | None = None,
        group_size: int = 2,
        beta: float = 0.1,
        loss_type: DPOLossType = "sigmoid",
        label_smoothing: float = 0.0,
        reference_from: str | None = None,
        refresh_reference_every: int | None = None,
        gradient_clip_val: float | None = 1.0,
        **kwargs: Any,
    ) -> None:
        if group_size < 2:
            raise ValueError(f"OnlineDPO pairs samples of the same prompt: group_size must be >= 2, got {group_size}")
        if refresh_reference_every is not None and refresh_reference_every < 1:
            raise ValueError(f"refresh_reference_every must be >= 1 or None, got {refresh_reference_every}")
        zero = torch.zeros(1)
        dpo_loss(zero, zero, zero, zero, beta, loss_type, label_smoothing, zero + 1, zero + 1)  # validates the names
        sampling = SamplingConfig.of(sampling if sampling is not None else {"temperature": 1.0, "max_new_tokens": 64})
        super().__init__(model=model, sampling=sampling, reward_model=reward_model, reward_fn=reward_fn,
                         rewards=rewards, group_size=group_size, reference=True, gradient_clip_val=gradient_clip_val,
                         **kwargs)
        self.record_hparams(ignore=("reward_fn",))
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.refresh_reference_every = refresh_reference_every
        if self.ref_model is None and (reference_from is not None or refresh_reference_every is not None):
            raise ValueError("reference_from and refresh_reference_every need a full policy: with model.lora the "
                             "reference is the base model without the adapter")
        if reference_from is not None:  # the frozen copy takes the other policy's weights (same architecture)
            self.ref_model.load_state_dict(load_policy(reference_from)[1].state_dict())
        self.pair_stats: dict[str, float] = {}
        self.labelled = 0  # prompts whose samples the reward source has labelled (checkpointed)

    # ------------------------------------------------------------------ the steps of one iteration
    def select(self, samples: Samples, metrics: dict[str, torch.Tensor]) -> Samples | None:
        """The ``P`` pairs as ``2P`` rows, chosen first then rejected (the ``[chosen; rejected]`` layout of DPO);
        ``None`` when no prompt's samples differ in score (on any rank: every rank steps together)."""
        scores = samples["scores"]
        self.labelled += len(scores) // self.group_size
        chosen, rejected = best_worst_pairs(scores, self.group_size)
        ready = bool(chosen)
        if self._trainer is not None:
            ready = self.trainer.strategy.reduce_boolean_decision(ready, all=True)
        gap = (scores[chosen] - scores[rejected]).mean().item() if chosen else 0.0
        self.pair_stats = {"reward": scores.float().mean().item(), "score_gap": gap, "pairs": float(len(chosen))}
        return take(samples, chosen + rejected) if ready else None

    def advantages(self, exp: dict[str, torch.Tensor]) -> None:
        """DPO needs no advantages (the rollout pass gives the reference log-probs only: one step on fresh pairs,
        see :attr:`~lit_rlhf.modules.rl.OnlineRL.needs_rollout_logprobs`)."""

    def loss(self, out: dict[str, torch.Tensor], mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean DPO loss of the pairs of ``mb`` (rows ``[chosen; rejected]``) from summed response log-probs."""
        mask = mb["response_mask"].float()
        policy, reference, lengths = (out["logprobs"] * mask).sum(-1), (mb["ref_logprobs"] * mask).sum(-1), mask.sum(-1)
        (pc, pr), (rc, rr), (lc, lr) = policy.chunk(2), reference.chunk(2), lengths.chunk(2)
        losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, self.beta, self.loss_type, self.label_smoothing, lc, lr)
        loss = losses.mean()
        stats = implicit_reward_stats({"chosen": chosen, "rejected": rejected, "logps_chosen": pc.detach(),
                                       "logps_rejected": pr.detach()})
        return loss, {"train/loss": loss.item(), **{k: v.item() for k, v in stats.items()}}

    def update(self) -> dict[str, torch.Tensor]:
        """One optimizer step on all pairs of the buffer (pairs stay whole: no shuffled minibatches)."""
        data = self.buffer.data
        out = self.forward_pass(self.model, data["input_ids"], data["attention_mask"], data["response_mask"].shape[1])
        loss, stats = self.loss(out, data)
        self.manual_step(loss, self.optimizers(), self.gradient_clip_val)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # manual optimisation: Lightning does not step it
            scheduler.step()
        self.update_stats = [stats]
        return {**{k: torch.tensor(v) for k, v in stats.items()},
                **{k: torch.tensor(v) for k, v in self.pair_stats.items()}}

    def after_update(self, metrics: dict[str, torch.Tensor], n_prompts: int) -> None:
        """Refresh the reference every ``refresh_reference_every`` steps."""
        every = self.refresh_reference_every
        if every is not None and self.global_step % every == 0 and self.ref_model is not None:
            self.ref_model.load_state_dict(self.model.state_dict())

    prog_bar = ("train/loss", "reward")

    # ------------------------------------------------------------------ state
    def rl_state(self) -> dict[str, Any]:
        return {**super().rl_state(), "labelled": self.labelled}

    def load_rl_state(self, state: dict[str, Any]) -> None:
        super().load_rl_state(state)
        self.labelled = int(state.get("labelled", 0))
