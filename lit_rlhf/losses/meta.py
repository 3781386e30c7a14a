"""MetaRM difference loss (Secrets of RLHF II, §3.2, Eq. 10)."""

from __future__ import annotations

import torch


def meta_difference_loss(rewards: torch.Tensor) -> torch.Tensor:
    """Score-spread objective ``J`` of MetaRM per prompt (maximised by gradient ascent).

    For the ``K`` responses ``s_1..s_K`` to one prompt ``x`` (sampled from the shifted distribution)::

        J_θ(x, s) = (2 / K²) Σ_{i<j} σ(|r_θ(x, s_i) − r_θ(x, s_j)|)

    (Secrets of RLHF II, Eq. 10). ``J`` grows as the reward model spreads the scores of the responses
    apart; it is invariant to a shift of all rewards. Ties (``r_i = r_j``) give ``σ(0) = 1/2`` and a
    zero gradient (the sub-gradient of ``|·|`` at 0 is taken as 0).

    Args:
        rewards: ``(G, K)`` rewards of ``K ≥ 2`` responses for each of ``G`` prompts.
    Returns:
        ``(G,)`` float32 ``J`` per prompt (in ``[(K−1)/(2K), (K−1)/K)``: all ties give the lower end).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (G, K) with K >= 2 responses per prompt, got shape {tuple(rewards.shape)}")
    r = rewards.float()
    k = r.shape[1]
    pairs = torch.triu_indices(k, k, offset=1, device=r.device)  # (2, K(K-1)/2): every i < j
    spread = torch.sigmoid((r[:, pairs[0]] - r[:, pairs[1]]).abs())
    return spread.sum(dim=1) * (2.0 / k**2)
