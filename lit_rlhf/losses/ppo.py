"""PPO for language models: GAE, whitening, clipped policy/value losses, per-token KL estimators.

Conventions: tensors are ``(B, T)`` over response tokens, ``mask`` is 1 on real response tokens and 0
on padding. Per-example losses are returned so that ``losses.mean()`` is the token mean over the whole
batch (the aggregation of TRL / "N+ implementation details"): ``loss_b = Σ_t m_bt ℓ_bt / mean_b(n_b)``.
"""

from __future__ import annotations

from typing import Literal

import torch

KLKind = Literal["k1", "k2", "k3"]


def _check_shapes(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    for name, t in tensors.items():
        if t.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but mask has {tuple(mask.shape)}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (a scalar)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the valid positions (Bessel-corrected when ``unbiased``)."""
    mask = mask.to(x.dtype)
    n = mask.sum()
    centered = (x - masked_mean(x, mask)) * mask
    var = (centered**2).sum() / n.clamp(min=1)
    return var * n / (n - 1) if unbiased and n > 1 else var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x − μ) / σ`` over valid tokens of the whole batch; 0 on padding.

    With ``shift_mean=False`` the mean is added back (scale only; TRL's reward whitening).

    Args:
        x: ``(B, T)``.
        mask: ``(B, T)``.
    Returns:
        ``(B, T)``.
    """
    _check_shapes(mask, x=x)
    x = x.float()
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(out.dtype)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16) over response tokens.

    ``δ_t = r_t + γ V_{t+1} − V_t`` (``V`` after the last valid token is 0),
    ``A_t = δ_t + γλ A_{t+1}``, returns ``R_t = A_t + V_t``. Padding positions are skipped (they neither
    receive nor pass on value), so a response may end before ``T``.

    Args:
        rewards: ``(B, T)`` per-token rewards (KL penalty, plus the score on the last token).
        values: ``(B, T)`` critic values ``V(s_t)``.
        mask: ``(B, T)``; valid tokens must form a prefix of each row.
        gamma: discount γ.
        lam: GAE λ.
    Returns:
        ``(advantages, returns)``, both ``(B, T)`` float32, 0 on padding.
    """
    _check_shapes(mask, rewards=rewards, values=values)
    m = mask.float()
    rewards, values = rewards.float() * m, values.float() * m
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * m


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: KLKind = "k1") -> torch.Tensor:
    """Per-token estimate of ``KL(π ‖ π_ref)`` from samples of π (Schulman, "Approximating KL divergence").

    With ``k1 = log π(a) − log π_ref(a)``: ``k1`` (unbiased, can be negative), ``k2 = k1² / 2``,
    ``k3 = (e^{−k1} − 1) + k1`` (unbiased, ≥ 0).

    Args:
        logprobs: ``(B, T)`` policy log-probs of the sampled tokens.
        ref_logprobs: ``(B, T)`` reference log-probs of the same tokens.
    Returns:
        ``(B, T)``.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ")
    k1 = logprobs.float() - ref_logprobs.float()
    if kind == "k1":
        return k1
    if kind == "k2":
        return 0.5 * k1**2
    if kind == "k3":
        return torch.expm1(-k1) + k1
    raise ValueError(f"kind must be 'k1', 'k2' or 'k3', got {kind!r}")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards of RLHF with a KL penalty (Ziegler et al. 2019, Eq. 2; InstructGPT Eq. 2).

    ``r_t = −β KL_t`` on every real token, plus the sequence score on the last real token (never on padding).

    Args:
        scores: ``(B,)`` sequence scores.
        kl: ``(B, T)`` per-token KL estimates.
        mask: ``(B, T)``; valid tokens a prefix of each row, at least one per row.
        beta: KL coefficient β.
    Returns:
        ``(B, T)`` float32, 0 on padding.
    """
    _check_shapes(mask, kl=kl)
    if scores.shape != (mask.shape[0],):
        raise ValueError(f"scores has shape {tuple(scores.shape)}, expected ({mask.shape[0]},)")
    rewards = -beta * kl.float() * mask.float()
    last = (mask.long().sum(-1) - 1).clamp(min=0)
    rewards[torch.arange(len(rewards), device=rewards.device), last] += scores.float().to(rewards.device)
    return rewards


def shape_scores(
    scores: torch.Tensor,
    ended: torch.Tensor | None = None,
    missing_eos_penalty: float | None = None,
    mean: float | None = None,
    std: float | None = None,
    clip: float | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Sequence scores as PPO uses them: EOS penalty, normalisation, clipping.

    ``s − p·[no EOS]`` ("N+ implementation details", ``missing_eos_penalty``), then ``(s − μ) / (σ + eps)`` with
    running statistics (Secrets of RLHF I, Eq. 18; only when ``mean`` and ``std`` are given), then
    ``clip(s, ±δ)``.

    Args:
        scores: ``(B,)``.
        ended: ``(B,)`` bool, the response ended (EOS or stop string).
        missing_eos_penalty: ``p`` (``None`` = off).
        mean: running mean μ.
        std: running std σ.
        clip: δ (``None`` = off).
    Returns:
        ``(B,)``.
    """
    out = scores.float()
    if missing_eos_penalty is not None:
        if ended is None:
            raise ValueError("missing_eos_penalty needs ended")
        out = out - missing_eos_penalty * (~ended.bool()).float()
    if mean is not None and std is not None:
        out = (out - mean) / (std + eps)
    return out.clamp(-clip, clip) if clip is not None else out


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``H = logsumexp(z) − Σ_v softmax(z)_v z_v`` of each position's distribution.

    Args:
        logits: ``(B, T, V)``.
    Returns:
        ``(B, T)``.
    """
    return torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)


def _per_example(token_losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` losses whose mean is the masked token mean of ``token_losses``."""
    m = mask.float()
    return (token_losses * m).sum(-1) / m.sum(-1).mean().clamp(min=1)


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate objective (Schulman et al. 2017, Eq. 7), as a loss.

    ``ρ_t = exp(log π_θ − log π_old)``, ``ℓ_t = max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε))``.

    Args:
        logprobs: ``(B, T)`` current policy log-probs (with gradient).
        old_logprobs: ``(B, T)`` log-probs at rollout time.
        advantages: ``(B, T)``.
        mask: ``(B, T)``.
        clip_range: ε.
    Returns:
        ``(losses (B,), stats)``; stats (detached scalars): ``clipfrac`` (fraction of tokens where the
        clipped term is taken), ``approxkl`` (``½ mean (Δ log π)²``), ``ratio`` (mean ρ).
    """
    _check_shapes(mask, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    log_ratio = logprobs.float() - old_logprobs.float()
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    losses = _per_example(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approxkl": 0.5 * masked_mean(log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return losses, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float | None = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: ``½ max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)`` per token.

    Args:
        values: ``(B, T)`` current critic values (with gradient).
        old_values: ``(B, T)`` values at rollout time.
        returns: ``(B, T)`` GAE returns.
        mask: ``(B, T)``.
        clip_range: ε; ``None`` = unclipped ``½ (V − R)²``.
    Returns:
        ``(losses (B,), stats)``; stats: ``clipfrac`` (tokens where the clipped term is larger).
    """
    _check_shapes(mask, values=values, old_values=old_values, returns=returns)
    values, returns = values.float(), returns.float()
    unclipped = (values - returns) ** 2
    if clip_range is None:
        clipped = unclipped
    else:
        v_clipped = old_values.float() + torch.clamp(values - old_values.float(), -clip_range, clip_range)
        clipped = (v_clipped - returns) ** 2
    losses = 0.5 * _per_example(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask)}
    return losses, stats
