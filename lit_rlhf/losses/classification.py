"""Classification losses on soft targets."""

from __future__ import annotations

import torch


def xent_loss(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets, per example: ``L = −Σ_k q_k log softmax(z)_k``.

    Args:
        logits: ``(B, C)``.
        soft_labels: ``(B, C)`` target probabilities (one-hot for hard labels).
    Returns:
        ``(B,)``.
    """
    return -(soft_labels.float() * torch.log_softmax(logits.float(), dim=-1)).sum(-1)


def step_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Process supervision: cross-entropy of each labelled step token, averaged per sequence.

    ``L_b = −(1/|S_b|) Σ_{t ∈ S_b} log softmax(z_{b,t})_{y_{b,t}}``, ``S_b`` = positions whose label is not
    ``ignore_index`` (the last token of each supervised step, Lightman et al. 2023 §2.5).

    Args:
        logits: ``(B, T, C)`` per-token class logits.
        labels: ``(B, T)`` class ids, ``ignore_index`` where unsupervised.
    Returns:
        ``(B,)``; 0 for a sequence with no labelled step.
    """
    mask = labels != ignore_index
    logp = torch.log_softmax(logits.float(), dim=-1)
    token = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return token.sum(-1) / mask.sum(-1).clamp(min=1)
