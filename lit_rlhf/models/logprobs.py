"""Log-prob helpers. Positions follow the causal-LM shift: logits at t predict token t+1."""

from __future__ import annotations

import torch


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position without materialising a ``(B, T, V)`` log-softmax.

    Args:
        logits: ``(B, T, V)``.
        targets: ``(B, T)`` token ids (any value where masked; clamped to a valid id).
    Returns:
        ``(B, T)`` float32 log-probs.
    """
    logits = logits.float()
    picked = torch.gather(logits, -1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def completion_logps(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the completion tokens and their count.

    Args:
        logits: ``(B, T, V)`` model outputs for ``input_ids``.
        input_ids: ``(B, T)``.
        completion_mask: ``(B, T)`` 1 on completion tokens (never on the first position).
    Returns:
        ``(sum_logps (B,), lengths (B,))``.
    """
    mask = completion_mask[:, 1:].to(torch.float32)
    logps = token_logps(logits[:, :-1], input_ids[:, 1:]) * mask
    return logps.sum(-1), mask.sum(-1)


def sequence_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs ``(B,)`` and completion lengths ``(B,)`` of a causal LM (one forward)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return completion_logps(logits, input_ids, completion_mask)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row, from the mask (works for left and right padding).

    Args:
        attention_mask: ``(B, T)`` of 0/1.
    Returns:
        ``(B,)`` long.
    """
    T = attention_mask.shape[-1]
    return (T - 1 - attention_mask.flip(-1).to(torch.long).argmax(-1)).long()


def gather_last(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``hidden[b, last_token_index[b]]`` for ``hidden`` of shape ``(B, T, ...)``."""
    idx = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
