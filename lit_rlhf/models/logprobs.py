"""Log-prob helpers. Positions follow the causal-LM shift: logits at t predict token t+1."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import torch

from lit_rlhf.models.kv_cache import cache_argument, full_cache, select_rows
from lit_rlhf.models.sharding import sharded_across_ranks


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


def selected_logits(
    model: torch.nn.Module, select: torch.Tensor, index: torch.Tensor | None = None, **inputs: Any
) -> tuple[torch.Tensor, Any]:
    """Logits ``(N, V)`` at the ``N`` positions where ``select`` is true (row-major order), from one forward.

    The LM head (``model.get_output_embeddings()``; peft models forward it to their base model) is applied to
    the selected hidden states only: a one-shot pre-hook hands it ``hidden[select]`` ``(1, N, H)`` instead of
    the full ``(B, T, H)``, so whatever the model does after its head (scaling, soft-capping) still applies.
    Models without such a head, or whose head is given another shape, give full logits, gathered at ``select``.

    Args:
        select: ``(B, T)`` bool, the shape of ``inputs["input_ids"]``.
        index: instead of ``select``'s true positions, these flat positions into ``(B·T)`` ``(N,)`` (a position
            may repeat: a shared prompt's last token predicts the first token of every completion).
        inputs: forward arguments (``input_ids``, ``attention_mask``, ``position_ids``, ...; ``use_cache`` is off
            unless given).
    Returns:
        ``(logits (N, V), model output)``.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    selected: list[int] = []  # the number of selected positions, once the head has been handed them

    def pick(hidden: torch.Tensor) -> torch.Tensor:
        return hidden[select] if index is None else hidden.reshape(-1, *hidden.shape[2:])[index]

    def only_selected(module: torch.nn.Module, args: tuple) -> tuple | None:
        if selected or not args or args[0].shape[:2] != select.shape:
            return None  # another call of the head, or an unexpected layout: leave it alone
        hidden = pick(args[0])
        selected.append(len(hidden))
        return (hidden.unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(only_selected) if isinstance(head, torch.nn.Module) else None
    try:
        out = model(**{"use_cache": False, **inputs})
    finally:
        if handle is not None:
            handle.remove()
    if not selected:
        return pick(out.logits), out
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
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
    **inputs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs ``(B,)`` and completion lengths ``(B,)`` of a causal LM (one forward; LM head
    on the completion positions only); ``inputs``: further forward arguments (``position_ids``)."""
    logps = predicted_logps(model, input_ids, completion_mask, attention_mask=attention_mask, **inputs)
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


# -- shared-prefix (prompt-once) forwards ----------------------------------------------------------------------------
# Rows that share a prompt (chosen/rejected, a group of sampled completions) are laid out once as
# [prompt, suffix_1, suffix_2, ...]: each suffix's position ids continue from the prompt's end and a block-causal mask
# lets it see the prompt and itself only. A causal model's hidden states at a position depend only on the tokens up to
# it and their positions, so every log-prob, hidden state and gradient equals that of the separate rows; the prompt's
# gradient is the sum of the rows' (Prefix Grouper, Liu et al. 2025, "Prefix Grouper: Efficient GRPO Training through
# Shared-Prefix Forward", §3).

ALIBI_FAMILIES = frozenset({"bloom", "mpt", "jais", "baichuan"})
"""Model types whose position information is an ALiBi bias built from the 2-D mask, not from position ids."""


def hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (``model`` itself otherwise)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _config(model: torch.nn.Module) -> Any:
    return getattr(hf_model(model), "config", None)


def sliding_window(model: torch.nn.Module) -> int | None:
    """The attention window of the model's sliding-window layers (``None``: all layers attend to the full context)."""
    config = _config(model)
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if window is None or (layer_types is not None and "sliding_attention" not in layer_types):
        return None
    return int(window)


def _accepts_mask_mapping(model: torch.nn.Module) -> bool:
    """Whether the decoder takes a ``{"full_attention": mask, "sliding_attention": mask}`` mapping as its mask (then a
    sliding window is applied through its own mask; otherwise a 4-D mask replaces the window)."""
    inner = getattr(hf_model(model), "base_model", None)
    try:
        source = inspect.getsource(type(inner).forward)
    except (OSError, TypeError):
        return False
    return "isinstance(causal_mask_mapping := attention_mask, dict)" in source


def shared_prefix_refusal(model: torch.nn.Module, longest: int | None = None) -> str | None:
    """Why a shared-prefix forward of ``model`` would not be exact (``None``: it is).

    Refused: models without a Hugging Face config or a ``position_ids`` argument; attention implementations other
    than ``eager``/``sdpa`` (they ignore a custom 4-D mask); non-causal attention; ALiBi position biases (built from the
    2-D mask); rotary scalings that depend on the batch's length (``dynamic``, ``longrope``); a sliding window shorter
    than the ``longest`` sequence in a model that cannot take one mask per layer type.
    """
    base = hf_model(model)
    config = _config(model)
    name = type(base).__name__
    if config is None:
        return f"{name} has no Hugging Face config"
    family = getattr(config, "model_type", "?")
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl not in ("eager", "sdpa"):
        return f"{family}: attention implementation {impl!r} takes no custom 4-D mask (use 'sdpa' or 'eager')"
    if family in ALIBI_FAMILIES or getattr(config, "alibi", False):
        return f"{family}: ALiBi position biases are built from the 2-D mask and ignore position ids"
    if getattr(config, "position_embedding_type", "absolute") not in ("absolute", "rope"):
        return f"{family}: position_embedding_type {config.position_embedding_type!r} ignores position ids"
    flags = [m.is_causal for m in base.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    if not flags or not all(flags):
        return f"{family}: attention is not causal (a prompt would see its completions)"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type in ("dynamic", "longrope"):
        return f"{family}: {rope_type} rotary scaling depends on the batch's length"
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return f"{family}: {name}.forward takes no position_ids"
    window = sliding_window(model)
    if window is not None and longest is not None and longest > window and not _accepts_mask_mapping(model):
        return (f"{family}: sliding window of {window} tokens is shorter than a {longest}-token sequence and the model "
                f"takes one mask for all its layers")
    return None


@dataclass(frozen=True)
class SharedPrefixPlan:
    """Layout of a shared-prefix forward of a ``(B, T)`` batch in ``R`` rows of ``W`` slots.

    Attributes:
        input_ids: ``(R, W)`` tokens.
        position_ids: ``(R, W)`` each token's position in its own sequence.
        segment: ``(R, W)`` group of each slot (a negative id: the row's padding tail).
        member: ``(R, W)`` the batch row a slot belongs to, ``-1`` for a group's shared prefix and padding.
        slot: ``(B, T)`` flat slot (into ``R·W``) holding each attended token of the batch, ``-1`` at padding.
        longest: tokens of the longest sequence.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment: torch.Tensor
    member: torch.Tensor
    slot: torch.Tensor
    longest: int

    def attention_mask(self, dtype: torch.dtype | None, window: int | None = None) -> torch.Tensor:
        """``(R, 1, W, W)`` mask: a slot sees earlier slots of its group that are the shared prefix or its own sequence
        (and, with ``window``, fewer than ``window`` positions back, as Hugging Face's sliding-window layers).
        Boolean (true where attended) for ``dtype=None``, else additive (0 where attended, the dtype's minimum
        elsewhere; eager attention adds it to the scores)."""
        seg, mem, pos = self.segment, self.member, self.position_ids
        order = torch.arange(seg.shape[1], device=seg.device)
        allowed = (order[:, None] >= order[None, :]) & (seg[:, :, None] == seg[:, None, :])
        allowed &= (mem[:, None, :] == -1) | (mem[:, :, None] == mem[:, None, :])
        if window is not None:
            allowed &= (pos[:, :, None] - pos[:, None, :]) < window
        if dtype is None:
            return allowed.unsqueeze(1)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask.unsqueeze(1)


def _one_run(attention_mask: torch.Tensor) -> bool:
    """Whether every row's attended tokens are one non-empty run (left or right padding)."""
    mask = attention_mask.bool()
    lengths = mask.sum(-1)
    starts = mask.to(torch.int8).argmax(-1)
    order = torch.arange(mask.shape[1], device=mask.device)
    run = (order >= starts[:, None]) & (order < (starts + lengths)[:, None])
    return torch.equal(run, mask) and not bool((lengths == 0).any())


def _sequences(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[list[int]], list[int]]:
    """Each row's attended tokens and the index of its first one; rows must be one run of attended tokens."""
    mask = attention_mask.bool()
    lengths = mask.sum(-1)
    starts = mask.to(torch.int8).argmax(-1)
    if not _one_run(attention_mask):
        raise ValueError("shared-prefix forwards need every row's attention_mask to be one non-empty run of ones "
                         "(left or right padding)")
    ids, starts_, lengths_ = input_ids.tolist(), starts.tolist(), lengths.tolist()
    return [row[s:s + n] for row, s, n in zip(ids, starts_, lengths_)], starts_


def _group_members(groups: torch.Tensor | list[int]) -> list[list[int]]:
    members: dict[int, list[int]] = {}
    for b, g in enumerate(groups.tolist() if isinstance(groups, torch.Tensor) else groups):
        members.setdefault(int(g), []).append(b)
    return list(members.values())


def shared_prefix_segments(
    seqs: list[list[int]], groups: torch.Tensor | list[int]
) -> list[tuple[list[int], int]]:
    """``(members, shared prefix length)`` per group: the longest run of tokens its members' sequences start with
    (0 for a group of one). In a canonical order (members and groups sorted by their tokens), so that the same rows
    in another order give the same layout, hence bit-identical outputs."""
    out = []
    for members in _group_members(groups):
        members = sorted(members, key=lambda b: seqs[b])
        shared = len(os.path.commonprefix([seqs[b] for b in members])) if len(members) > 1 else 0
        out.append((members, shared))
    return sorted(out, key=lambda segment: seqs[segment[0][0]])


def shared_prefix_plan(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, groups: torch.Tensor | list[int]
) -> SharedPrefixPlan:
    """Lay out a left- or right-padded ``(B, T)`` batch, each group's common prefix once (:class:`SharedPrefixPlan`).

    Args:
        groups: ``(B,)`` group id per row; rows of a group share the tokens they all start with (a prompt: chosen and
            rejected, a group of completions). Groups are packed first-fit into rows as wide as the longest group.
    """
    B, T = input_ids.shape
    seqs, starts = _sequences(input_ids, attention_mask)
    segments = shared_prefix_segments(seqs, groups)
    sizes = [shared + sum(len(seqs[b]) - shared for b in members) for members, shared in segments]
    width = max(sizes)
    source: list[int] = []
    positions: list[int] = []
    segment: list[int] = []
    member: list[int] = []
    slot = [[-1] * T for _ in range(B)]
    for r, row in enumerate(pack_rows(sizes, width)):
        for g in row:
            members, shared = segments[g]
            first = members[0]
            base = len(source)
            source += range(first * T + starts[first], first * T + starts[first] + shared)
            positions += range(shared)
            segment += [g] * shared
            member += [-1] * shared
            for b in members:
                n, s = len(seqs[b]), starts[b]
                slot[b][s:s + shared] = range(base, base + shared)
                slot[b][s + shared:s + n] = range(len(source), len(source) + n - shared)
                source += range(b * T + s + shared, b * T + s + n)
                positions += range(shared, n)
                segment += [g] * (n - shared)
                member += [b] * (n - shared)
        tail = (r + 1) * width - len(source)
        source += [source[-1]] * tail
        positions += range(tail)
        segment += [-1 - r] * tail
        member += [-1] * tail
    device = input_ids.device

    def grid(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, device=device).view(-1, width)

    return SharedPrefixPlan(input_ids.reshape(-1)[grid(source)], grid(positions), grid(segment), grid(member),
                            torch.tensor(slot, device=device), max(len(s) for s in seqs))


def shared_prefix_inputs(model: torch.nn.Module, plan: SharedPrefixPlan) -> dict[str, Any]:
    """Forward arguments (``input_ids``, ``position_ids``, ``attention_mask``) of ``plan`` for ``model``: one 4-D mask,
    or one per layer type where a sliding window shorter than a sequence must be kept.

    Raises:
        ValueError: :func:`shared_prefix_refusal` gives a reason.
    """
    reason = shared_prefix_refusal(model, plan.longest)
    if reason is not None:
        raise ValueError(f"shared-prefix forward refused: {reason}")
    # additive in the model's dtype for every attention, SDPA included: SDPA turns a boolean mask into an additive
    # one in each layer and keeps that copy for the backward (L copies in training; one shared tensor this way)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    mask: Any = plan.attention_mask(dtype)
    window = sliding_window(model)
    if window is not None and plan.longest > window:
        mask = {"full_attention": mask, "sliding_attention": plan.attention_mask(dtype, window)}
    return {"input_ids": plan.input_ids, "position_ids": plan.position_ids, "attention_mask": mask}


def shared_sequence_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor,
    groups: torch.Tensor | list[int], plan: PrefixPlan | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sequence_logps` with each group's common prefix computed once (a :func:`shared_prefix_plan`, or a
    :func:`prefix_cache_plan` given as ``plan``); the LM head runs on the positions that predict completion tokens
    only. Left or right padding.

    Args:
        groups: ``(B,)`` group id per row (e.g. ``[0..B/2) * 2`` for a ``[chosen; rejected]`` batch).
        plan: a plan of this batch already made.
    Returns:
        ``(sum_logps (B,), lengths (B,))``.
    """
    plan = plan or shared_prefix_plan(input_ids, attention_mask, groups)
    rows, cols = completion_mask[:, 1:].nonzero(as_tuple=True)  # token (b, t + 1) is predicted at (b, t)
    index = plan.slot[rows, cols]
    if bool((index < 0).any()):
        raise ValueError("a completion token follows a padding position; completion_mask must lie inside the "
                         "attention_mask and not at a sequence's first token")
    logps = token_logps(prefix_plan_logits(model, plan, index), input_ids[rows, cols + 1])
    sums = torch.zeros(len(input_ids), dtype=logps.dtype, device=logps.device).index_add(0, rows, logps)
    return sums, completion_mask[:, 1:].to(torch.float32).sum(-1)


def shared_hidden_states(
    backbone: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    groups: torch.Tensor | list[int], plan: PrefixPlan | None = None, **kwargs: Any,
) -> torch.Tensor:
    """Last hidden states ``(B, T, H)`` of a base model (no LM head) for the padded batch, from a shared-prefix forward
    (a :func:`shared_prefix_plan`, or the :func:`prefix_cache_plan` given as ``plan``); zeros at padding. Equal to
    ``backbone(input_ids, attention_mask).last_hidden_state`` at attended positions (with each row's positions counted
    from its first attended token)."""
    plan = plan or shared_prefix_plan(input_ids, attention_mask, groups)
    if isinstance(plan, PrefixCachePlan):
        kwargs.pop("use_cache", None)
        passes = _cache_passes(backbone, plan, lambda **inputs: backbone(**inputs, **kwargs).last_hidden_state)
        hidden = torch.cat([h.reshape(-1, h.shape[-1]) for h in passes])
    else:
        hidden = backbone(**shared_prefix_inputs(backbone, plan), **kwargs).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])[plan.slot.clamp(min=0)]
    return torch.where((plan.slot >= 0).unsqueeze(-1), flat, torch.zeros((), dtype=flat.dtype, device=flat.device))


# -- prompt once through a key/value cache ---------------------------------------------------------------------------
# The same forward in two passes: each group's shared prefix once, then every row's own tokens on a copy of the prefix's
# keys and values (positions continuing from its end). Attention costs K² per prefix and S·(K + S) per row instead of a
# dense (K + ΣS)² per group row; the model builds its own causal, padding and sliding-window masks from 2-D masks.
# Gradients reach the prefix's pass through the copied keys and values (the copies' gradients add up).


def prefix_cache_refusal(model: torch.nn.Module) -> str | None:
    """Why a prompt-once forward of ``model`` through a key/value cache would not be exact (``None``: it is): the
    refusals of :func:`shared_prefix_refusal` other than the sliding window (the model masks its window itself here),
    a model sharded across ranks, a forward without a cache argument, and gradient checkpointing (which switches the
    cache off in training)."""
    reason = shared_prefix_refusal(model)
    if reason is not None:
        return reason
    family = getattr(_config(model), "model_type", "?")
    if sharded_across_ranks(model):  # two forwards where the others run one: ranks choosing apart would deadlock
        return f"{family}: the model is sharded across ranks (FSDP / ZeRO-3), whose forwards every rank must run alike"
    if cache_argument(hf_model(model)) is None:
        return f"{family}: {type(hf_model(model)).__name__}.forward takes no key/value cache"
    base = hf_model(model)
    flag = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else (
        "is_gradient_checkpointing")
    if getattr(base, flag, False):
        return f"{family}: gradient checkpointing switches the key/value cache off in training"
    return None


@dataclass(frozen=True)
class PrefixCachePlan:
    """Layout of a prompt-once forward through a key/value cache (:func:`prefix_cache_plan`) of a ``(B, T)`` batch:
    ``G`` prefixes of up to ``K`` tokens, then ``B`` rows of up to ``S`` own tokens.

    Attributes:
        prefix_ids: ``(G, K)`` each shared prefix once, left-padded (so that slot distances equal position distances,
            as sliding windows need).
        prefix_mask: ``(G, K)`` 2-D mask of the prefix pass.
        prefix_positions: ``(G, K)``.
        rows: ``(B,)`` the prefix each row of the second pass continues.
        suffix_ids: ``(B, S)`` each row's tokens after its prefix, right-padded.
        suffix_mask: ``(B, K + S)`` 2-D mask of the second pass: its prefix's tokens (none for a row whose group shares
            nothing), then its own.
        suffix_positions: ``(B, S)`` continuing from the prefix's end.
        slot: ``(B, T)`` flat slot of each attended token of the batch among the outputs of both passes (``G·K``
            prefix slots, then ``B·S`` suffix slots), ``-1`` at padding.
        longest: tokens of the longest sequence.
    """

    prefix_ids: torch.Tensor
    prefix_mask: torch.Tensor
    prefix_positions: torch.Tensor
    rows: torch.Tensor
    suffix_ids: torch.Tensor
    suffix_mask: torch.Tensor
    suffix_positions: torch.Tensor
    slot: torch.Tensor
    longest: int


def _prefix_cuts(seqs: list[list[int]], segments: list[tuple[list[int], int]]) -> list[int]:
    """Tokens of each group's prefix pass: its shared prefix, leaving every member at least one token of its own."""
    return [min(shared, min(len(seqs[b]) for b in members) - 1) if shared else 0 for members, shared in segments]


def prefix_cache_cost(seqs: list[list[int]], segments: list[tuple[list[int], int]], hidden: int) -> float:
    """:func:`layout_cost` of a :class:`PrefixCachePlan`: its prefix and suffix slots, and their attention (``K²`` per
    prefix row, ``S·(K + S)`` per suffix row)."""
    cuts = _prefix_cuts(seqs, segments)
    K = max(cuts)
    S = max(len(seqs[b]) - k for (members, _), k in zip(segments, cuts) for b in members)
    prefixes = sum(k > 0 for k in cuts)
    return layout_cost(prefixes, K, hidden) + len(seqs) * S * (1.0 + (K + S) / (6.0 * hidden))


def prefix_cache_plan(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, groups: torch.Tensor | list[int]
) -> PrefixCachePlan:
    """Lay out a left- or right-padded ``(B, T)`` batch for a prompt-once forward through a key/value cache
    (:class:`PrefixCachePlan`): each group's common prefix (:func:`shared_prefix_segments`) in the first pass, every
    row's remaining tokens in the second; groups and rows in the canonical order of :func:`shared_prefix_segments`.

    Args:
        groups: ``(B,)`` group id per row; rows of a group share the tokens they all start with.
    Raises:
        ValueError: no group shares a token, or a row is not one run of attended tokens.
    """
    B, T = input_ids.shape
    seqs, starts = _sequences(input_ids, attention_mask)
    segments = shared_prefix_segments(seqs, groups)
    cuts = _prefix_cuts(seqs, segments)
    K, G = max(cuts), sum(k > 0 for k in cuts)
    if K < 1:
        raise ValueError("no group of rows shares a prefix: nothing to encode once")
    S = max(len(seqs[b]) - k for (members, _), k in zip(segments, cuts) for b in members)
    prefix: list[list[int]] = [[], [], []]  # ids, mask, positions
    suffix: list[list[int]] = [[], [], [], []]  # ids, mask, positions, prefix row
    slot = [[-1] * T for _ in range(B)]
    for (members, _), k in zip(segments, cuts):
        g = len(prefix[0]) if k else 0
        if k:
            prefix[0].append([0] * (K - k) + seqs[members[0]][:k])
            prefix[1].append([0] * (K - k) + [1] * k)
            prefix[2].append([0] * (K - k) + list(range(k)))
        for b in members:
            r, n, s = len(suffix[0]), len(seqs[b]), starts[b]
            own = seqs[b][k:]
            suffix[0].append(own + [own[-1]] * (S - len(own)))
            suffix[1].append(prefix[1][g] if k else [0] * K)
            suffix[1][-1] = suffix[1][-1] + [1] * len(own) + [0] * (S - len(own))
            suffix[2].append(list(range(k, n)) + [n - 1] * (S - len(own)))
            suffix[3].append(g)
            slot[b][s:s + k] = range(g * K + K - k, g * K + K)
            slot[b][s + k:s + n] = range(G * K + r * S, G * K + r * S + n - k)
    device = input_ids.device

    def tensor(values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    return PrefixCachePlan(*(tensor(x) for x in prefix), tensor(suffix[3]), tensor(suffix[0]), tensor(suffix[1]),
                           tensor(suffix[2]), tensor(slot), max(len(s) for s in seqs))


PrefixPlan = SharedPrefixPlan | PrefixCachePlan
"""A prompt-once layout: one row per group with a block-causal 4-D mask, or two passes through a key/value cache."""


def plan_layout(plan: PrefixPlan) -> Layout:
    """The :class:`ForwardLayout` name of a prompt-once plan: ``cached`` or ``shared``."""
    return "cached" if isinstance(plan, PrefixCachePlan) else "shared"


def _cache_passes(model: torch.nn.Module, plan: PrefixCachePlan, run: Callable[..., Any]) -> tuple[Any, Any]:
    """``run(prefix inputs)`` then ``run(suffix inputs)``, the second on the first's keys and values (rows repeated
    per :attr:`PrefixCachePlan.rows`)."""
    reason = prefix_cache_refusal(model)
    if reason is not None:
        raise ValueError(f"prompt-once forward through a key/value cache refused: {reason}")
    name = cache_argument(hf_model(model))
    cache = full_cache()
    first = run(input_ids=plan.prefix_ids, attention_mask=plan.prefix_mask, position_ids=plan.prefix_positions,
                use_cache=True, **{name: cache})
    select_rows(cache, plan.rows)
    second = run(input_ids=plan.suffix_ids, attention_mask=plan.suffix_mask, position_ids=plan.suffix_positions,
                 use_cache=True, **{name: cache})
    return first, second


def prefix_plan_logits(
    model: torch.nn.Module, plan: PrefixPlan, index: torch.Tensor, inputs: dict[str, Any] | None = None
) -> torch.Tensor:
    """Logits ``(N, V)`` at the flat slots ``index`` ``(N,)`` of a prompt-once layout (a slot may repeat); the LM head
    runs on those slots only (:func:`selected_logits`).

    Args:
        inputs: :func:`shared_prefix_inputs` of a :class:`SharedPrefixPlan`, if already built.
    """
    if isinstance(plan, SharedPrefixPlan):
        select = torch.zeros(plan.input_ids.shape, dtype=torch.bool, device=index.device)
        return selected_logits(model, select, index=index, **(inputs or shared_prefix_inputs(model, plan)))[0]
    G, K = plan.prefix_ids.shape
    first = index < G * K
    parts = iter([index[first], index[~first] - G * K])

    def run(**kwargs: Any) -> torch.Tensor:
        select = torch.zeros(kwargs["input_ids"].shape, dtype=torch.bool, device=index.device)
        return selected_logits(model, select, index=next(parts), **kwargs)[0]

    logits = torch.cat(_cache_passes(model, plan, run))
    order = torch.cat([first.nonzero()[:, 0], (~first).nonzero()[:, 0]])
    return logits[torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))]


Layout = Literal["padded", "packed", "shared", "cached"]


def layout_cost(rows: int, width: int, hidden: int) -> float:
    """Relative cost of a forward over ``rows × width`` token slots: linear layers ∝ slots, attention ∝ slots · width
    (a decoder layer's attention costs about ``width / (6·hidden)`` of its projections and MLP)."""
    return rows * width * (1.0 + width / (6.0 * hidden))


SHARED_LAYOUTS: frozenset[str] = frozenset({"shared", "cached"})
"""The layouts that encode each group's prompt once."""


class ForwardLayout:
    """Chooses, per batch, the cheapest exact layout of a completion log-prob forward: ``padded`` rows, ``packed``
    rows (padding-free, :func:`packed_sequence_logps`; right padding), or each group's prompt once
    (:func:`shared_sequence_logps`; rows given a group): ``cached`` (the prompts, then the rows' own tokens on their
    keys and values, :func:`prefix_cache_plan`) or ``shared`` (one row per group with a block-causal 4-D mask,
    :func:`shared_prefix_plan`; for models that refuse the cache).

    The rule compares :func:`layout_cost` of the layouts: any other layout is used only when it costs less than
    ``1 − margin`` of the padded one, which pays for its overhead (so equal-length rows with nothing to share stay
    padded). The first time a model runs a layout other than padded it is checked against the padded forward on that
    batch (eval mode, no gradient); a layout that does not match, or that :func:`prefix_cache_refusal` /
    :func:`shared_prefix_refusal` refuses, is switched off with a warning.

    Args:
        padding_free: allow the packed layout.
        shared_prefix: allow the prompt-once layouts.
        margin: relative saving a masked layout must bring.
        max_width: widest packed row as a multiple of the padded width.
    """

    def __init__(self, padding_free: bool = True, shared_prefix: bool = True, margin: float = 0.1,
                 max_width: float = 2.0) -> None:
        self.enabled = {"packed": padding_free, "shared": shared_prefix, "cached": shared_prefix}
        self.margin, self.max_width = margin, max_width
        self.checked: set[str] = set()
        self.last: Layout = "padded"  # the layout chosen for the latest batch

    def choose(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        groups: torch.Tensor | list[int] | None = None,
    ) -> tuple[Layout, PrefixPlan | None]:
        """The layout for this batch, and its prompt-once plan when it is ``shared`` or ``cached``."""
        B, T = input_ids.shape
        config = _config(model)
        hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1024)
        right = bool(attention_mask[:, 0].all())
        costs: dict[Layout, float] = {"padded": layout_cost(B, T, hidden)}
        best_plain = costs["padded"]
        if self.enabled["packed"] and right:
            lengths = tuple(int(n) for n in attention_mask.sum(-1).tolist())
            rows = packing_plan(lengths, T, max(T, int(self.max_width * T)))[0]
            costs["packed"] = layout_cost(*rows.shape, hidden)
        plan = None
        if self.sharing and groups is not None and _one_run(attention_mask):
            seqs, _ = _sequences(input_ids, attention_mask)
            segments = shared_prefix_segments(seqs, groups)
            if self.enabled["shared"] and any(shared for _, shared in segments):
                sizes = [shared + sum(len(seqs[b]) - shared for b in members) for members, shared in segments]
                costs["shared"] = layout_cost(len(pack_rows(sizes, max(sizes))), max(sizes), hidden)
            if self.enabled["cached"] and max(_prefix_cuts(seqs, segments)) > 0:
                costs["cached"] = prefix_cache_cost(seqs, segments, hidden)
        masked = min((c, k) for k, c in costs.items() if k != "padded") if len(costs) > 1 else None
        layout: Layout = "padded"
        if masked is not None and masked[0] < (1.0 - self.margin) * best_plain:
            layout = masked[1]
        if layout == "cached":
            reason = prefix_cache_refusal(model)
            if reason is not None:
                self._disable("cached", f"prompt-once forwards through a key/value cache are off: {reason}")
                return self.choose(model, input_ids, attention_mask, groups)
            plan = prefix_cache_plan(input_ids, attention_mask, groups)
        if layout == "shared":
            plan = shared_prefix_plan(input_ids, attention_mask, groups)
            reason = shared_prefix_refusal(model, plan.longest)
            if reason is not None:
                self._disable("shared", f"shared-prefix forwards are off: {reason}")
                return self.choose(model, input_ids, attention_mask, groups)
        self.last = layout
        return layout, plan

    @property
    def sharing(self) -> bool:
        """Whether a prompt-once layout may be chosen."""
        return any(self.enabled[k] for k in SHARED_LAYOUTS)

    @contextlib.contextmanager
    def unshared(self) -> Iterator[None]:
        """Context in which no prompt-once layout is chosen (e.g. for the padded forward a check compares with)."""
        saved = {k: self.enabled[k] for k in SHARED_LAYOUTS}
        self.enabled.update(dict.fromkeys(SHARED_LAYOUTS, False))
        try:
            yield
        finally:
            self.enabled.update(saved)

    def _disable(self, layout: str, message: str) -> None:
        self.enabled[layout] = False
        warnings.warn(message, stacklevel=3)

    def sequence_logps(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        completion_mask: torch.Tensor, groups: torch.Tensor | list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed completion log-probs and lengths ``(B,)`` (:func:`sequence_logps`) in the layout :meth:`choose`
        picks; ``groups`` (``(B,)``) marks rows that share a prompt."""
        layout, plan = self.choose(model, input_ids, attention_mask, groups)
        args = (input_ids, attention_mask, completion_mask)
        run = {
            "padded": lambda: sequence_logps(model, *args),
            "packed": lambda: packed_sequence_logps(model, *args, max_width=self.max_width),
            "shared": lambda: shared_sequence_logps(model, *args, groups, plan),
            "cached": lambda: shared_sequence_logps(model, *args, groups, plan),
        }
        if layout != "padded" and not self.check(model, layout, lambda **kw: sequence_logps(model, *args, **kw)[0],
                                                 lambda: run[layout]()[0], attention_mask, completion_mask):
            return self.sequence_logps(model, input_ids, attention_mask, completion_mask, groups)
        return run[layout]()

    def head_plan(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        groups: torch.Tensor | list[int] | None,
    ) -> PrefixPlan | None:
        """The prompt-once plan for ``model(input_ids, attention_mask, plan)`` of a head model (a
        :class:`~lit_rlhf.models.HeadModel` with a ``backbone``) where a prompt-once layout is chosen for this batch and
        exact; ``None``: the plain forward. A per-token head (``pooling="none"``, output ``(B, T, ...)``) is checked at
        the attended positions only (its outputs at padding are not defined by either forward)."""
        if groups is None or not self.sharing:
            self.last = "padded"
            return None
        layout, plan = self.choose(model.backbone, input_ids, attention_mask, groups)
        attended = attention_mask.bool()

        def read(out: torch.Tensor) -> torch.Tensor:
            return out[attended] if getattr(model, "pooling", None) == "none" else out

        if layout not in SHARED_LAYOUTS or self.check(
                model, layout, lambda **kw: read(model(input_ids, attention_mask, **kw)),
                lambda: read(model(input_ids, attention_mask, plan)), attention_mask):
            return plan
        return self.head_plan(model, input_ids, attention_mask, groups)

    def check(
        self, model: torch.nn.Module, layout: Layout, padded: Callable[..., torch.Tensor],
        other: Callable[[], torch.Tensor], attention_mask: torch.Tensor, completion_mask: torch.Tensor | None = None,
    ) -> bool:
        """On the first use of ``layout``: whether ``other()`` equals ``padded(position_ids=...)`` (eval mode, no
        gradient; each row's positions counted from its first attended token); a mismatch switches ``layout`` off with
        a warning. Tolerance: 1e-4 per completion token in fp32 (1e-2 otherwise)."""
        if layout in self.checked:
            return True
        self.checked.add(layout)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
                expected, got = padded(position_ids=positions), other()
        except (TypeError, ValueError, RuntimeError, AttributeError) as error:  # the model rejects the layout's inputs
            self._disable(layout, f"{type(model).__name__} cannot run the {layout} layout ({error}); switched off, "
                                  "falls back to padded batches or another layout")
            return False
        finally:
            model.train(was_training)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        per_token = 1e-4 if dtype == torch.float32 else 1e-2
        tokens = 1 if completion_mask is None else int(completion_mask.sum(-1).max().clamp(min=1))
        if torch.allclose(expected, got, rtol=0, atol=per_token * tokens):
            return True
        what = {"packed": "packed sequences apart", "shared": "shared prompts exact under a 4-D mask",
                "cached": "prompts exact through a key/value cache"}.get(layout, layout)
        self._disable(layout, f"{type(model).__name__} does not keep {what} (outputs differ by "
                              f"{(expected - got).abs().max():.3g}); switched off, falls back to padded batches "
                              "or another layout")
        return False
