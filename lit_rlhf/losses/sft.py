"""Supervised fine-tuning loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of the completion tokens, per example.

    ``L_b = -Σ_t m_bt log π(x_bt | x_b,<t)`` with ``m`` the completion mask.

    Args:
        logits: ``(B, T, V)``; position ``t-1`` predicts token ``t``.
        input_ids: ``(B, T)``.
        completion_mask: ``(B, T)``, 1 on tokens that carry loss.
    Returns:
        ``(nll_sum (B,), num_tokens (B,))``; the token-mean loss is ``nll_sum.sum() / num_tokens.sum()``.
    """
    mask = completion_mask[:, 1:].to(torch.float32)
    targets = input_ids[:, 1:].clamp(min=0)  # any id where masked
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")  # (B, T-1)
    return (nll * mask).sum(-1), mask.sum(-1)
