"""Kahneman–Tversky Optimization (KTO, Ethayarajh et al. 2024) on unpaired desirable / undesirable completions."""

from __future__ import annotations

from collections.abc import Callable

import torch


def kto_reference_point(
    kl_policy_logps: torch.Tensor,
    kl_ref_logps: torch.Tensor,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """KTO's reference point ``z₀ = max(0, mean_i [log π(y'_i|x_i) − log π_ref(y'_i|x_i)])``, detached (§4.1).

    Args:
        kl_policy_logps: ``(B,)`` policy log-probs of mismatched pairs ``(x_i, y'_i)`` (a completion of another
            prompt of the batch), summed over completion tokens.
        kl_ref_logps: ``(B,)`` the reference's log-probs of the same pairs.
        gather: under data parallelism, a function stacking a tensor from every rank (e.g. Lightning's
            ``all_gather``): the per-rank means are averaged before clamping.
    Returns:
        a scalar tensor ≥ 0 (no gradient).
    """
    mean = (kl_policy_logps.float() - kl_ref_logps.float()).mean().detach()
    if gather is not None:
        mean = gather(mean).mean()
    return mean.clamp(min=0)


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    reference_point: torch.Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example KTO loss (Ethayarajh et al. 2024, Eq. 8) and the detached implicit rewards.

    With ``r = log π(y|x) − log π_ref(y|x)`` and the reference point z₀ (:func:`kto_reference_point`):
    ``v = λ_D σ(β(r − z₀))`` for a desirable y, ``v = λ_U σ(β(z₀ − r))`` for an undesirable one, and the loss
    is ``λ_y − v``.

    Args:
        policy_logps: ``(B,)`` log π_θ(y|x), summed over completion tokens.
        ref_logps: ``(B,)`` log π_ref(y|x).
        desirable: ``(B,)`` bool, the label of each completion.
        reference_point: z₀ (scalar, detached).
        beta: β > 0.
        desirable_weight: λ_D.
        undesirable_weight: λ_U.
    Returns:
        ``(losses (B,), rewards (B,))`` with rewards ``β·r`` detached.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not policy_logps.shape == ref_logps.shape == desirable.shape:
        raise ValueError(f"shapes differ: policy {tuple(policy_logps.shape)}, reference {tuple(ref_logps.shape)}, "
                         f"labels {tuple(desirable.shape)}")
    ratio = policy_logps.float() - ref_logps.float()
    desirable = desirable.bool()
    sign = torch.where(desirable, 1.0, -1.0).to(ratio.device)
    weight = torch.where(desirable, desirable_weight, undesirable_weight).to(ratio.device)
    losses = weight * (1 - torch.sigmoid(beta * sign * (ratio - reference_point)))
    return losses, (beta * ratio).detach()


def kto_weight_bounds(n_desirable: int, n_undesirable: int, desirable_weight: float,
                      undesirable_weight: float) -> tuple[bool, tuple[float, float]]:
    """KTO's class-imbalance rule (§4.2): keep ``λ_D n_D / (λ_U n_U)`` in ``[1, 4/3]``.

    Returns:
        whether the weights satisfy it, and the range of ``desirable_weight`` that would with ``undesirable_weight``
        fixed.
    """
    if n_desirable == 0 or n_undesirable == 0:
        return False, (float("nan"), float("nan"))
    ratio = desirable_weight * n_desirable / (undesirable_weight * n_undesirable)
    unit = undesirable_weight * n_undesirable / n_desirable
    return 1.0 <= ratio <= 4 / 3 + 1e-9, (unit, unit * 4 / 3)
