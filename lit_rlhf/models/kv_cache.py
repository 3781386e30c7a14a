"""Row operations on a decoder's key/value cache (``transformers`` ``DynamicCache``).

A cache holds, per layer, keys and values of shape ``(B, heads, T, head_dim)``. Decoding several samples of one
prompt can encode the prompt once and repeat its rows (:func:`repeat_rows`); rows whose sequence has ended can be
dropped from the batch (:func:`select_rows`), so the next forward passes compute only the live rows. Both are exact:
a row's keys and values are copied, never recomputed.

Only caches whose layers are all plain ``DynamicLayer`` (full attention, grown by concatenation) are supported:
sliding-window, static, quantized, offloaded or linear-attention layers keep extra per-row or per-position state.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


def new_cache(model: nn.Module) -> Any:
    """An empty ``DynamicCache`` laid out for ``model``'s config (sliding or hybrid layers where the config asks)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def full_cache() -> Any:
    """An empty ``DynamicCache`` whose layers are all plain ``DynamicLayer`` (every position kept), sliding-window
    layers included: a model still applies its window through the mask it builds from the cache's positions, and
    :func:`select_rows` can copy the rows."""
    from transformers import DynamicCache

    return DynamicCache()


def cache_refusal(cache: Any) -> str | None:
    """Why :func:`select_rows` / :func:`repeat_rows` cannot handle ``cache``; ``None`` when they can."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache:
        return f"cache class {type(cache).__name__} (only DynamicCache)"
    if getattr(cache, "offloading", False):
        return "offloaded cache"
    kinds = {type(layer).__name__ for layer in cache.layers if type(layer) is not DynamicLayer}
    if kinds:
        return f"cache layers {sorted(kinds)} (sliding-window or other non-full-attention layers)"
    return None


def select_rows(cache: Any, index: torch.Tensor) -> None:
    """Keep the rows ``index`` (a 1-D long tensor, any order, repeats allowed) of every layer, in place.

    Args:
        cache: a ``DynamicCache`` of plain ``DynamicLayer`` layers (see :func:`cache_refusal`).
        index: ``(B',)`` row indices into the current batch; the cache then has ``B'`` rows.
    """
    reason = cache_refusal(cache)
    if reason is not None:
        raise TypeError(f"select_rows: unsupported {reason}")
    for layer in cache.layers:
        if not layer.is_initialized or layer.keys is None or layer.keys.numel() == 0:
            continue
        rows = index.to(layer.keys.device)
        layer.keys = layer.keys.index_select(0, rows)
        layer.values = layer.values.index_select(0, rows)


def repeat_rows(cache: Any, counts: torch.Tensor | list[int]) -> None:
    """Repeat row ``i`` of every layer ``counts[i]`` times, consecutively (``repeat_interleave``), in place."""
    counts = torch.as_tensor(counts, dtype=torch.long)
    select_rows(cache, torch.arange(len(counts)).repeat_interleave(counts))


def cache_argument(model: nn.Module) -> str | None:
    """The name under which ``model.forward`` takes a cache (``cache`` in recent ``transformers``, formerly
    ``past_key_values``); ``None`` when it takes neither."""
    names = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in names), None)
