"""Supervised fine-tuning loss."""

from __future__ import annotations

import torch

from lit_rlhf.models.logprobs import completion_logps


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
    logps, num_tokens = completion_logps(logits, input_ids, completion_mask)
    return -logps, num_tokens
