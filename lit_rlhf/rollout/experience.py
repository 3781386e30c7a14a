"""Sampled completions as plain rows (token ids, texts, scores) and their packing into padded tensors.

A *samples* dict holds one row per completion: ``prompt_ids`` and ``responses`` (token ids; a response runs up
to and including its EOS), ``prompts`` and ``completions`` (texts), ``ended (B,)`` bool and, once scored,
``scores (B,)``. Rows of a group (the ``G`` completions of one prompt) are consecutive. Rows can be selected,
concatenated across batches and checkpointed (lists and CPU tensors only), then packed once for the forward pass.
"""

from __future__ import annotations

from typing import Any

import torch

from lit_rlhf.data.collate import pad
from lit_rlhf.rollout.generation import SamplingConfig, generate, response_mask

Samples = dict[str, Any]


def sample_groups(
    model: torch.nn.Module, tokenizer: Any, prompt_ids: list[list[int]], prompts: list[str], group_size: int,
    sampling: SamplingConfig,
) -> Samples:
    """``group_size`` completions of every prompt, in one ``generate`` call; each prompt's rows stay together.

    Args:
        model: the policy.
        tokenizer: its tokenizer.
        prompt_ids: token ids per prompt.
        prompts: their texts.
        group_size: completions per prompt (``G``).
        sampling: decoding settings.
    Returns:
        samples (``B = len(prompts) × G`` rows, prompt ``p``'s at ``p·G … p·G + G − 1``).
    """
    if len(prompt_ids) != len(prompts):
        raise ValueError(f"{len(prompt_ids)} prompt id lists but {len(prompts)} prompts")
    ids = [list(p) for p in prompt_ids for _ in range(group_size)]
    texts, sequences, width = generate(model, tokenizer, ids, sampling)
    mask, ended = response_mask(sequences[:, width:], tokenizer.eos_token_id, tokenizer.pad_token_id)
    lengths = mask.sum(-1).clamp(min=1).tolist()
    rows = sequences[:, width:].tolist()
    return {"prompt_ids": ids, "responses": [r[:n] for r, n in zip(rows, lengths)], "ended": ended.cpu(),
            "prompts": [p for p in prompts for _ in range(group_size)], "completions": list(texts)}


def take(samples: Samples, rows: list[int]) -> Samples:
    """The given rows of ``samples``, in that order."""
    index = torch.tensor(rows, dtype=torch.long)
    return {k: (v[index] if torch.is_tensor(v) else [v[i] for i in rows]) for k, v in samples.items()}


def concat(parts: list[Samples]) -> Samples:
    """Rows of several samples dicts, one after the other (same keys)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    keys = parts[0].keys()
    return {k: (torch.cat([p[k] for p in parts]) if torch.is_tensor(parts[0][k]) else [x for p in parts for x in p[k]])
            for k in keys}


def pack(samples: Samples, pad_token_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Padded tensors of the rows: prompts left-padded to ``P``, responses right-padded to ``R`` (as ``generate``).

    Returns:
        ``input_ids (B, P+R)``, ``attention_mask (B, P+R)``, ``response_mask (B, R)`` (long), on ``device``.
    """
    query = pad(samples["prompt_ids"], pad_token_id, "left")
    qmask = pad([[1] * len(p) for p in samples["prompt_ids"]], 0, "left")
    response = pad(samples["responses"], pad_token_id, "right")
    rmask = pad([[1] * len(r) for r in samples["responses"]], 0, "right")
    return {"input_ids": torch.cat([query, response], 1).to(device),
            "attention_mask": torch.cat([qmask, rmask], 1).long().to(device), "response_mask": rmask.long().to(device)}
