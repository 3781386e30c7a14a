"""Reward shaping: step-level (process) rewards as dense per-token rewards, an ensemble's uncertainty penalty and
length rewards. Tensors in, tensors out.
"""

from __future__ import annotations

import torch


def place_step_rewards(
    step_rewards: torch.Tensor, positions: torch.Tensor, step_mask: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Dense per-token rewards from step-level rewards: step ``i``'s reward on the token at ``positions[:, i]``.

    Process supervision in RL (Lightman et al. 2023 §2; Wang et al. 2024, "Math-Shepherd" §3.3, step-by-step
    PPO): each step's score is the reward of the token that closes the step (its separator), 0 elsewhere, so
    ``Σ_t r_t`` is the sum of the step rewards and returns/advantages credit every token for the steps after it.
    Steps that share a position add up.

    Args:
        step_rewards: ``(B, S)`` rewards of each step (padded).
        positions: ``(B, S)`` long, index of the token closing each step, in ``[0, T)``.
        step_mask: ``(B, S)`` bool, True on real steps.
        mask: ``(B, T)`` completion mask; a position on padding is an error.
    Returns:
        ``(B, T)`` float32, 0 on padding and on tokens that close no step.
    """
    if step_rewards.shape != positions.shape or step_rewards.shape != step_mask.shape:
        raise ValueError(f"step_rewards {tuple(step_rewards.shape)}, positions {tuple(positions.shape)} and "
                         f"step_mask {tuple(step_mask.shape)} must have the same shape")
    if step_rewards.shape[0] != mask.shape[0]:
        raise ValueError(f"{step_rewards.shape[0]} rows of step rewards but {mask.shape[0]} completions")
    step_mask = step_mask.bool()
    index = positions.long().clamp(min=0, max=max(mask.shape[1] - 1, 0))
    real = positions.long()[step_mask]
    if bool(((real < 0) | (real >= mask.shape[1])).any()):
        raise ValueError(f"step positions must lie in [0, {mask.shape[1]})")
    on_real = mask.bool().gather(1, index) | ~step_mask
    if not bool(on_real.all()):
        raise ValueError("a step position falls on padding")
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    values = torch.where(step_mask, step_rewards.float(), 0.0).to(out.device)
    return out.scatter_add_(1, index.to(out.device), values)


def ensemble_reward(scores: torch.Tensor, penalty: float = 0.0) -> torch.Tensor:
    """Uncertainty-penalised ensemble reward ``mean_k r_k − λ · std_k r_k`` (Coste et al. 2024, "Reward Model
    Ensembles Help Mitigate Overoptimization", §3, uncertainty-weighted optimisation with the std as the spread).

    Args:
        scores: ``(K, B)``: the ``K`` members' rewards of ``B`` completions.
        penalty: λ ≥ 0.
    Returns:
        ``(B,)``; the std is the population std over members (0 for one member).
    """
    if scores.dim() != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must be (K, B) with K >= 1, got shape {tuple(scores.shape)}")
    scores = scores.float()
    return scores.mean(0) - penalty * scores.std(0, correction=0)


def length_reward(lengths: torch.Tensor, target: float | None = None) -> torch.Tensor:
    """Length shaping: ``−|L − target|`` toward a target length, or ``−L`` (a plain length penalty) without one.

    Args:
        lengths: ``(B,)`` completion lengths (any unit).
        target: the target length; ``None`` = penalise every unit.
    Returns:
        ``(B,)`` float32 (≤ 0; the source's weight sets the scale).
    """
    lengths = lengths.float()
    return -lengths if target is None else -(lengths - target).abs()

