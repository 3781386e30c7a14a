"""Log-prob helpers. Positions follow the causal-LM shift: logits at t predict token t+1."""

from __future__ import annotations

import functools
from typing import Any

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


def selected_logits(model: torch.nn.Module, select: torch.Tensor, **inputs: Any) -> tuple[torch.Tensor, Any]:
    """Logits ``(N, V)`` at the ``N`` positions where ``select`` is true (row-major order), from one forward.

    The LM head (``model.get_output_embeddings()``; peft models forward it to their base model) is applied to
    the selected hidden states only: a one-shot pre-hook hands it ``hidden[select]`` ``(1, N, H)`` instead of
    the full ``(B, T, H)``, so whatever the model does after its head (scaling, soft-capping) still applies.
    Models without such a head, or whose head is given another shape, give full logits, gathered at ``select``.

    Args:
        select: ``(B, T)`` bool, the shape of ``inputs["input_ids"]``.
        inputs: forward arguments (``input_ids``, ``attention_mask``, ``position_ids``, ...).
    Returns:
        ``(logits (N, V), model output)``.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    selected: list[int] = []  # the number of selected positions, once the head has been handed them

    def only_selected(module: torch.nn.Module, args: tuple) -> tuple | None:
        if selected or not args or args[0].shape[:2] != select.shape:
            return None  # another call of the head, or an unexpected layout: leave it alone
        hidden = args[0][select]
        selected.append(len(hidden))
        return (hidden.unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(only_selected) if isinstance(head, torch.nn.Module) else None
    try:
        out = model(use_cache=False, **inputs)
    finally:
        if handle is not None:
            handle.remove()
    if not selected:
        return out.logits[select], out
    if out.logits.shape[:2] != (1, selected[0]):
        raise RuntimeError(f"{type(model).__name__} changed the layout of its LM head's output "
                           f"({tuple(out.logits.shape)}); selected_logits cannot use it")
    return out.logits[0], out


def predicted_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, **inputs: Any
) -> torch.Tensor:
    """float32 ``log p(input_ids[b, t] | input_ids[b, <t])`` for every ``(b, t)`` with ``mask[b, t]`` (never
    at ``t = 0``), flat ``(N,)`` in row-major order; the LM head runs on those ``N`` positions only
    (:func:`selected_logits`)."""
    select = torch.zeros_like(mask, dtype=torch.bool)
    select[:, :-1] = mask[:, 1:].bool()  # the logits at t - 1 predict token t
    logits, _ = selected_logits(model, select, input_ids=input_ids, **inputs)
    return token_logps(logits, input_ids[:, 1:][select[:, :-1]])


def sequence_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs ``(B,)`` and completion lengths ``(B,)`` of a causal LM (one forward; LM head
    on the completion positions only)."""
    logps = predicted_logps(model, input_ids, completion_mask, attention_mask=attention_mask)
    rows = completion_mask[:, 1:].nonzero()[:, 0]
    B = input_ids.shape[0]
    sums = torch.zeros(B, dtype=logps.dtype, device=logps.device).index_add(0, rows, logps)
    return sums, completion_mask[:, 1:].to(torch.float32).sum(-1)


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


def packing_width(lengths: list[int], width: int, max_width: int, candidates: int = 16) -> int:
    """Row width in ``[width, max_width]`` (``candidates + 1`` evenly spaced widths) whose first-fit-decreasing
    packing of ``lengths`` has the fewest token slots (rows × width); the narrowest on ties."""
    widths = sorted({width + (max_width - width) * i // candidates for i in range(candidates + 1)})
    return min(widths, key=lambda w: (len(pack_rows(lengths, w)) * w, w))


@functools.lru_cache(maxsize=16)
def packing_plan(lengths: tuple[int, ...], T: int, max_width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed layout of right-padded rows of ``lengths`` real tokens (padded width ``T``), rows of the
    :func:`packing_width` in ``[T, max_width]``: per packed slot ``(R, W)``, the flat index into the padded
    ``(B, T)`` batch, the sequence owning it (``B``: padding, its own segment) and its position in that
    sequence. Cached: a policy and a reference pass over the same batch share one plan."""
    B, W = len(lengths), packing_width(list(lengths), T, max_width)
    source, owner, positions = [], [], []
    for members in pack_rows(list(lengths), W):
        for i in members:
            source += range(i * T, i * T + lengths[i])
            owner += [i] * lengths[i]
            positions += range(lengths[i])
        tail = W - sum(lengths[i] for i in members)
        source += [T - 1] * tail
        owner += [B] * tail
        positions += range(tail)
    return tuple(torch.tensor(x).view(-1, W) for x in (source, owner, positions))


def packed_sequence_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
    max_width: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_logps` computed padding-free: the right-padded rows are packed into fewer rows, each
    sequence with its own positions; the model's packed-sequence masking (``position_ids`` restarting at 0, no
    ``attention_mask``, as in transformers ≥ 4.5x) keeps them independent.

    Costs fewer token-FLOPs than the padded batch when lengths vary. Requires right padding and a model that
    detects packed sequences from ``position_ids`` (check with :func:`sequence_logps` on a batch).

    Args:
        max_width: widest packed row as a multiple of the padded width ``T``; the width in ``[T, max_width·T]``
            that packs into the fewest token slots is used (:func:`packing_width`; ``1`` keeps ``T``). Wider rows
            fill better, but each row's attention covers all its tokens.
    """
    B, T = input_ids.shape
    lengths = tuple(int(n) for n in attention_mask.sum(-1).tolist())
    source, owner, positions = (x.to(input_ids.device) for x in packing_plan(lengths, T, max(T, int(max_width * T))))
    ids = input_ids.reshape(-1)[source]
    completion = (completion_mask.reshape(-1)[source] * (owner < B)).bool()
    logps = predicted_logps(model, ids, completion, position_ids=positions)
    # a completion token is never a sequence's first token, so its predecessor lies in the same sequence
    owners = owner[completion]
    sums = torch.zeros(B + 1, dtype=logps.dtype, device=ids.device).index_add(0, owners, logps)
    counts = torch.bincount(owners, minlength=B + 1).to(torch.float32)
    return sums[:B], counts[:B]
