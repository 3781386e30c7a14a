"""Direct Preference Optimization and its standard variants (cDPO, IPO, hinge/SLiC, robust)."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

DPOLossType = Literal["sigmoid", "hinge", "ipo", "robust"]
DPO_LOSS_TYPES: tuple[str, ...] = get_args(DPOLossType)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family loss and the detached implicit rewards.

    With sequence log-probs summed over completion tokens,
    ``h = [log π(y_c) − log π_ref(y_c)] − [log π(y_r) − log π_ref(y_r)]`` and ε = ``label_smoothing``:

    * ``sigmoid`` (DPO, Rafailov et al. 2023, Eq. 7): ``−log σ(βh)``; with ε > 0 (cDPO)
      ``−(1 − ε) log σ(βh) − ε log σ(−βh)``;
    * ``hinge`` (SLiC-HF): ``max(0, 1 − βh)``;
    * ``ipo`` (Azar et al. 2023): ``(h − 1/(2β))²``; when lengths are given each log-ratio is divided by
      its completion length first (as TRL does): ``h = Δ_c / |y_c| − Δ_r / |y_r|``;
    * ``robust`` (Chowdhury et al. 2024): ``[−(1 − ε) log σ(βh) + ε log σ(−βh)] / (1 − 2ε)``, ε ∈ [0, ½).

    Args:
        policy_chosen_logps: ``(B,)`` log π_θ(y_c | x), summed over completion tokens.
        policy_rejected_logps: ``(B,)`` log π_θ(y_r | x).
        ref_chosen_logps: ``(B,)`` log π_ref(y_c | x).
        ref_rejected_logps: ``(B,)`` log π_ref(y_r | x).
        beta: β > 0, the strength of the implicit KL constraint.
        loss_type: ``sigmoid`` | ``hinge`` | ``ipo`` | ``robust``.
        label_smoothing: ε, the assumed probability that a label is flipped (``sigmoid`` and ``robust``).
        chosen_lengths: ``(B,)`` completion token counts of y_c (length-normalised IPO).
        rejected_lengths: ``(B,)`` completion token counts of y_r.
    Returns:
        ``(losses (B,), chosen_rewards (B,), rejected_rewards (B,))``; rewards are β·log(π/π_ref), detached.
    Raises:
        ValueError: for an unknown ``loss_type``, β ≤ 0, ε out of range, mismatched shapes or one length only.
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of {list(DPO_LOSS_TYPES)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    limit = 0.5 if loss_type == "robust" else 1.0
    if not 0.0 <= label_smoothing < limit or (label_smoothing and loss_type in ("hinge", "ipo")):
        raise ValueError(f"label_smoothing={label_smoothing} is not valid for loss_type={loss_type!r} "
                         "(sigmoid: [0, 1), robust: [0, 0.5), hinge/ipo: 0)")
    shape = policy_chosen_logps.shape
    for name, t in (("policy_rejected_logps", policy_rejected_logps), ("ref_chosen_logps", ref_chosen_logps),
                    ("ref_rejected_logps", ref_rejected_logps)):
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)} like policy_chosen_logps")
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("give both chosen_lengths and rejected_lengths, or neither")

    chosen_ratio = policy_chosen_logps.float() - ref_chosen_logps.float()
    rejected_ratio = policy_rejected_logps.float() - ref_rejected_logps.float()
    if loss_type == "ipo" and chosen_lengths is not None:
        h = chosen_ratio / chosen_lengths.float().clamp(min=1) - rejected_ratio / rejected_lengths.float().clamp(min=1)
    else:
        h = chosen_ratio - rejected_ratio
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = F.softplus(-beta * h) if eps == 0 else (1 - eps) * F.softplus(-beta * h) + eps * F.softplus(beta * h)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:  # robust
        losses = ((1 - eps) * F.softplus(-beta * h) - eps * F.softplus(beta * h)) / (1 - 2 * eps)
    return losses, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()
