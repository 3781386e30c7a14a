"""Reward-model losses: Bradley–Terry with margins and soft labels, reward centering."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Llama 2 (Touvron et al. 2023, Table 27): margin m(r) per preference rating.
LLAMA2_MARGINS: dict[str, dict[str, float]] = {
    "small": {
        "significantly better": 1.0, "better": 2 / 3, "slightly better": 1 / 3, "negligibly better / unsure": 0.0,
    },
    "large": {"significantly better": 3.0, "better": 2.0, "slightly better": 1.0, "negligibly better / unsure": 0.0},
}


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    soft_label: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Bradley–Terry ranking loss per pair.

    ``Δ = r(x, y_c) − r(x, y_r) − m`` and, with ``p`` the target probability that ``y_c`` is preferred,
    ``L = −p log σ(Δ) − (1 − p) log σ(−Δ)``. ``m`` is the Llama 2 margin (Eq. 2); ``p = 1`` is the hard
    label, ``p = 1 − α`` label smoothing α (Secrets of RLHF II, Eq. 5).

    Args:
        chosen_rewards: ``(B,)``.
        rejected_rewards: ``(B,)``.
        margin: ``(B,)`` or ``None`` (0); NaN entries count as 0.
        soft_label: ``(B,)``, a float, or ``None`` (1.0); NaN entries count as 1.
    Returns:
        ``(B,)`` losses.
    """
    delta = chosen_rewards.float() - rejected_rewards.float()
    if margin is not None:
        delta = delta - torch.nan_to_num(margin.float(), nan=0.0)
    if soft_label is None:
        return F.softplus(-delta)
    p = torch.as_tensor(soft_label, dtype=delta.dtype, device=delta.device)
    p = torch.nan_to_num(p, nan=1.0)
    return p * F.softplus(-delta) + (1 - p) * F.softplus(delta)


def reward_centering_penalty(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """``(r(x, y_c) + r(x, y_r))²`` per pair: pulls rewards towards zero mean (Eisenstein et al. 2023).

    Args:
        chosen_rewards: ``(B,)``.
        rejected_rewards: ``(B,)``.
    Returns:
        ``(B,)``.
    """
    return (chosen_rewards.float() + rejected_rewards.float()) ** 2
