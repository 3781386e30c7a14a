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


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit-decreasing bin packing: indices of sequences per row, each row holding ≤ ``capacity`` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > capacity:
            raise ValueError(f"sequence {i} has {lengths[i]} tokens, more than the row capacity {capacity}")
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(capacity)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


def packed_sequence_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
    width: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_logps` computed padding-free: the right-padded rows are packed into fewer rows of the
    same width, each sequence with its own positions; the model's packed-sequence masking (``position_ids``
    restarting at 0, no ``attention_mask``, as in transformers ≥ 4.5x) keeps them independent.

    Costs fewer token-FLOPs than the padded batch when lengths vary. Requires right padding and a model that
    detects packed sequences from ``position_ids`` (check with :func:`sequence_logps` on a batch).

    Args:
        width: packed row width as a multiple of the padded width (wider rows hold more sequences but each
            row's attention covers all its tokens).
    """
    B, T = input_ids.shape
    lengths = [int(n) for n in attention_mask.sum(-1).tolist()]
    W = max(T, int(width * T))  # packed row width
    source, positions, owner = [], [], []  # per packed slot: flat index into input_ids, position, sequence
    for members in pack_rows(lengths, W):
        for i in members:
            source += range(i * T, i * T + lengths[i])
            positions += range(lengths[i])
            owner += [i] * lengths[i]
        tail = W - sum(lengths[i] for i in members)  # padding: its own segment, owned by no sequence
        source += [T - 1] * tail
        positions += range(tail)
        owner += [B] * tail
    device = input_ids.device
    source_t = torch.tensor(source, device=device)
    R = len(source) // W
    ids = input_ids.reshape(-1)[source_t].view(R, W)
    owner_t = torch.tensor(owner, device=device).view(R, W)
    completion = completion_mask.reshape(-1)[source_t].view(R, W) * (owner_t < B)
    positions = torch.tensor(positions, device=device).view(R, W)
    logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
    # a completion token is never a sequence's first token, so its predecessor lies in the same sequence
    mask = completion[:, 1:].to(torch.float32)
    logps = token_logps(logits[:, :-1], ids[:, 1:]) * mask
    index = owner_t[:, 1:].reshape(-1)
    sums = torch.zeros(B + 1, dtype=logps.dtype, device=device).index_add(0, index, logps.reshape(-1))
    counts = torch.zeros(B + 1, dtype=mask.dtype, device=device).index_add(0, index, mask.reshape(-1))
    return sums[:B], counts[:B]
