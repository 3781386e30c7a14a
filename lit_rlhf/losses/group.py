"""Critic-free group RL: group-relative advantages, leave-one-out baselines, REINFORCE++, and one clipped
policy-gradient loss with the aggregations of GRPO, DAPO and Dr. GRPO and GSPO's sequence-level ratio.

Conventions: ``rewards (B,)`` are ordered as ``B/G`` groups of ``G`` completions of the same prompt
(``rewards.view(B // G, G)``); token tensors are ``(B, T)`` over completion tokens with ``mask`` 1 on real
tokens. Advantages of a whole sequence may be given as ``(B,)`` and are broadcast over its tokens.
"""

from __future__ import annotations

from typing import Literal

import torch

from lit_rlhf.losses.ppo import KLKind, _check_shapes, kl_penalty, masked_mean, token_rewards, whiten

Scale = Literal["group", "batch", "none"]
Level = Literal["token", "sequence"]
Aggregation = Literal["token_mean", "sequence_mean", "constant"]
AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``rewards (B,)`` as ``(B/G, G)``; a clear error when ``B`` is not a multiple of ``G``."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be (B,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    return rewards.float().view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: Scale = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages of GRPO (Shao et al. 2024, DeepSeekMath §4.1.2, outcome supervision).

    ``Â_i = (r_i − mean(r_group)) / (std(r_group) + eps)``, the same for every token of completion ``i``.
    ``scale``: ``group`` divides by the group's std (GRPO); ``batch`` by the std of the whole batch (TRL's
    ``scale_rewards="batch"``); ``none`` does not divide (Dr. GRPO, Liu et al. 2025 §3.1: the std division
    biases towards too easy and too hard questions). Std is Bessel-corrected (``torch.std``, as TRL).

    Args:
        rewards: ``(B,)`` outcome rewards, ``B/G`` groups of ``G``.
        group_size: ``G``.
        scale: ``group`` | ``batch`` | ``none``.
        eps: added to the std.
    Returns:
        ``(B,)`` advantages (0 for every member of a group whose rewards are all equal).
    """
    grouped = _groups(rewards, group_size)
    centered = grouped - grouped.mean(-1, keepdim=True)
    if scale == "none":
        return centered.flatten()
    if scale == "group":
        std = grouped.std(-1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
    elif scale == "batch":
        std = rewards.float().std() if rewards.numel() > 1 else torch.zeros(())
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return (centered / (std + eps)).flatten()


def group_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Std of each group's rewards ``(B/G,)``, Bessel-corrected (TRL's ``reward_std``; 0 = no learning signal).

    Args:
        rewards: ``(B,)``, ``B/G`` groups of ``G ≥ 2``.
        group_size: ``G``.
    Returns:
        ``(B/G,)``.
    """
    return _groups(rewards, group_size).std(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, "Back to Basics", Eq. 5).

    The baseline of sample ``i`` is the mean reward of the other ``k − 1`` samples of its prompt:
    ``Â_i = r_i − 1/(k−1) Σ_{j≠i} r_j = k/(k−1) · (r_i − mean_j r_j)``. A KL penalty, if any, is already in
    ``rewards`` (sequence-level ``R − β Σ_t KL_t``).

    Args:
        rewards: ``(B,)``, ``B/k`` groups of ``k ≥ 2``.
        group_size: ``k``.
    Returns:
        ``(B,)``.
    """
    if group_size < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got group_size={group_size}")
    grouped = _groups(rewards, group_size)
    others = (grouped.sum(-1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).flatten()


def reinforce_pp_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    beta: float = 0.0,
    group_size: int | None = None,
    gamma: float = 1.0,
    step_rewards: torch.Tensor | None = None,
) -> torch.Tensor:
    """REINFORCE++ advantages (Hu 2025, arXiv 2501.03262, §3.1–3.3).

    Token rewards as in PPO, ``r_t = −β KL_t`` plus the outcome reward on the last real token; returns
    ``G_t = Σ_{s≥t} γ^{s−t} r_s``; advantages normalised over every valid token of the (global) batch,
    ``Â = (G − mean) / std``. With ``group_size`` (REINFORCE++-baseline) each outcome reward first has its
    group's mean subtracted. ``step_rewards`` (dense process rewards, e.g. a PRM's step scores on the tokens
    that close the steps, :func:`~lit_rlhf.losses.place_step_rewards`) are added to ``r_t`` before the returns.

    Args:
        rewards: ``(B,)`` outcome rewards.
        mask: ``(B, T)`` completion mask (valid tokens a prefix of each row).
        kl: ``(B, T)`` per-token KL estimates (``None`` = no KL term).
        beta: KL coefficient β.
        group_size: subtract the group mean first (``None`` = no baseline).
        gamma: discount γ (1 in the paper).
        step_rewards: ``(B, T)`` dense per-token rewards added to the token rewards (``None`` = none).
    Returns:
        ``(B, T)`` advantages, 0 on padding.
    """
    if group_size is not None:
        grouped = _groups(rewards, group_size)
        rewards = (grouped - grouped.mean(-1, keepdim=True)).flatten()
    kl = torch.zeros(mask.shape, device=mask.device) if kl is None else kl
    shaped = token_rewards(rewards, kl, mask, beta)
    if step_rewards is not None:
        _check_shapes(mask, step_rewards=step_rewards)
        shaped = shaped + step_rewards.float() * mask.float()
    returns = torch.zeros_like(shaped)
    running = torch.zeros_like(shaped[:, 0])
    for t in reversed(range(shaped.shape[1])):
        running = shaped[:, t] + gamma * running
        returns[:, t] = running
    return whiten(returns * mask.float(), mask)


def aggregate(
    token_losses: torch.Tensor, mask: torch.Tensor, aggregation: Aggregation = "token_mean",
    max_length: int | None = None,
) -> torch.Tensor:
    """Per-example losses ``(B,)`` whose mean is the batch loss of each method.

    * ``token_mean`` (DAPO Eq. 12, TRL ``dapo``/``bnpo``): ``Σ_i Σ_t ℓ_it / Σ_i |o_i|``;
      per example ``Σ_t ℓ_it / mean_i |o_i|``.
    * ``sequence_mean`` (GRPO, DeepSeekMath Eq. 3): ``mean_i (1/|o_i|) Σ_t ℓ_it``.
    * ``constant`` (Dr. GRPO, Liu et al. 2025 Eq. 2 / TRL ``dr_grpo``): ``mean_i Σ_t ℓ_it / L`` with the
      constant ``L = max_length`` (the generation budget; default ``T``).

    Args:
        token_losses: ``(B, T)``.
        mask: ``(B, T)``.
        aggregation: one of the three above.
        max_length: ``L`` for ``constant``.
    Returns:
        ``(B,)``.
    """
    m = mask.float()
    sums = (token_losses * m).sum(-1)
    lengths = m.sum(-1)
    if aggregation == "token_mean":
        return sums / lengths.mean().clamp(min=1)
    if aggregation == "sequence_mean":
        return sums / lengths.clamp(min=1)
    if aggregation == "constant":
        return sums / float(max_length if max_length is not None else mask.shape[1])
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def _token_advantages(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if advantages.dim() == 1 and advantages.shape[0] == mask.shape[0]:
        return advantages.float().unsqueeze(-1).expand_as(mask)
    _check_shapes(mask, advantages=advantages)
    return advantages.float()


def policy_gradient_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    level: Level = "token",
    aggregation: Aggregation = "token_mean",
    max_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss with clip-higher, token- or sequence-level ratios and a choice of aggregation.

    Per token ``ℓ_t = −min(ρ Â_t, clip(ρ, 1 − ε_low, 1 + ε_high) Â_t)`` (PPO, Schulman et al. 2017 Eq. 7;
    clip-higher ``ε_high > ε_low``: DAPO, Yu et al. 2025 Eq. 10). ``level="token"``: ``ρ_t = π_θ(o_t)/π_old(o_t)``;
    ``level="sequence"`` (GSPO, Zheng et al. 2025 Eq. 7): one length-normalised ratio per sequence
    ``s_i = exp((1/|o_i|) Σ_t log(π_θ/π_old))``, shared by its tokens. Tokens are then aggregated by
    :func:`aggregate`.

    Args:
        logprobs: ``(B, T)`` current log-probs (with gradient).
        old_logprobs: ``(B, T)`` log-probs of the sampling policy.
        advantages: ``(B,)`` per sequence or ``(B, T)`` per token.
        mask: ``(B, T)``.
        clip_low: ε_low.
        clip_high: ε_high (``None`` = ``clip_low``).
        level: ``token`` | ``sequence``.
        aggregation: ``token_mean`` | ``sequence_mean`` | ``constant``.
        max_length: the constant of ``constant`` aggregation.
    Returns:
        ``(losses (B,), stats)``; stats (detached scalars over valid tokens): ``ratio`` (mean ρ),
        ``clipfrac`` (clipped term taken), ``clip_low`` (ρ < 1 − ε_low with Â < 0), ``clip_high``
        (ρ > 1 + ε_high with Â > 0), ``clip_region`` (either; TRL's ``clip_ratio/*``), ``approxkl``
        (``½ mean (log ρ_t)²``).
    """
    _check_shapes(mask, logprobs=logprobs, old_logprobs=old_logprobs)
    adv = _token_advantages(advantages, mask)
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = (logprobs.float() - old_logprobs.float()) * mask.float()
    if level == "sequence":
        seq = log_ratio.sum(-1, keepdim=True) / mask.float().sum(-1, keepdim=True).clamp(min=1)
        ratio = torch.exp(seq).expand_as(log_ratio)
    elif level == "token":
        ratio = torch.exp(log_ratio)
    else:
        raise ValueError(f"level must be 'token' or 'sequence', got {level!r}")
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    losses = aggregate(torch.max(unclipped, clipped), mask, aggregation, max_length)
    with torch.no_grad():
        low = (ratio < 1.0 - clip_low) & (adv < 0)
        high = (ratio > 1.0 + clip_high) & (adv > 0)
        stats = {
            "ratio": masked_mean(ratio, mask),
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "clip_low": masked_mean(low.float(), mask),
            "clip_high": masked_mean(high.float(), mask),
            "clip_region": masked_mean((low | high).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
        }
    return losses, stats


def kl_loss(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kind: KLKind = "k3",
    aggregation: Aggregation = "token_mean", max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL to the reference as a loss term (GRPO, DeepSeekMath Eq. 4), aggregated like the policy loss.

    ``D_KL = π_ref/π_θ − log(π_ref/π_θ) − 1`` per token (the ``k3`` estimator of :func:`kl_penalty`); the
    objective is ``J − β D_KL``, i.e. ``β ×`` these losses are added to the policy loss.

    Args:
        logprobs: ``(B, T)`` current log-probs (with gradient).
        ref_logprobs: ``(B, T)`` reference log-probs.
        mask: ``(B, T)``.
        kind: KL estimator (``k3`` in GRPO).
        aggregation: as the policy loss's.
        max_length: the constant of ``constant`` aggregation.
    Returns:
        ``(losses (B,), mean per-token KL (detached scalar))``.
    """
    _check_shapes(mask, logprobs=logprobs, ref_logprobs=ref_logprobs)
    per_token = kl_penalty(logprobs, ref_logprobs, kind)
    return aggregate(per_token, mask, aggregation, max_length), masked_mean(per_token.detach(), mask)
