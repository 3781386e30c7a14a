"""Supervised fine-tuning loss: negative log-likelihood of the completion tokens."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

NLLReduction = Literal["none", "sum", "token_mean", "sequence_mean"]
NLL_REDUCTIONS: tuple[str, ...] = get_args(NLLReduction)


def completion_nll(
    logps: torch.Tensor, num_tokens: torch.Tensor, reduction: NLLReduction = "token_mean"
) -> torch.Tensor:
    """Negative log-likelihood of completions from their summed token log-probs.

    With ``s_b = Σ_t m_bt log π(x_bt | x_b,<t)`` (``logps``) and ``n_b = Σ_t m_bt`` (``num_tokens``), ``m`` the
    completion mask (the SFT objective of Ouyang et al. 2022, "Training language models to follow instructions
    with human feedback", §3.5; the NLL term of RPO, Pang et al. 2024, "Iterative Reasoning Preference
    Optimization"):

    * ``none``: ``−s_b`` per example, ``(B,)``;
    * ``sum``: ``−Σ_b s_b``;
    * ``token_mean``: ``−Σ_b s_b / max(1, Σ_b n_b)`` (every completion token weighs the same; TRL's SFT and RPO);
    * ``sequence_mean``: ``mean_b(−s_b / max(1, n_b))`` (every example weighs the same).

    Args:
        logps: ``(B,)`` summed completion log-probs.
        num_tokens: ``(B,)`` completion tokens per example.
        reduction: one of :data:`NLL_REDUCTIONS`.
    Returns:
        ``(B,)`` for ``none``, else a scalar.
    """
    if reduction == "none":
        return -logps
    if reduction == "sum":
        return -logps.sum()
    if reduction == "token_mean":
        return -logps.sum() / num_tokens.sum().clamp(min=1)
    if reduction == "sequence_mean":
        return (-logps / num_tokens.clamp(min=1)).mean()
    raise ValueError(f"unknown NLL reduction {reduction!r}; expected one of {list(NLL_REDUCTIONS)}")


def sft_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of the completion tokens, per example, from a causal LM's logits.

    ``L_b = −Σ_t m_bt log π(x_bt | x_b,<t)`` with ``m`` the completion mask; reduce it with
    :func:`completion_nll` (``completion_nll(-L, n, reduction)``) or as below.

    Args:
        logits: ``(B, T, V)``; position ``t-1`` predicts token ``t``.
        input_ids: ``(B, T)``.
        completion_mask: ``(B, T)``, 1 on tokens that carry loss.
    Returns:
        ``(nll_sum (B,), num_tokens (B,))``; the token-mean loss is ``nll_sum.sum() / num_tokens.sum()``.
    """
    mask = completion_mask[:, 1:].float()
    targets = input_ids[:, 1:].clamp(min=0)  # any id where masked (e.g. a −100 padding label)
    token_nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    return (token_nll * mask).sum(-1), mask.sum(-1)
