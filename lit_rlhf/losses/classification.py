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
