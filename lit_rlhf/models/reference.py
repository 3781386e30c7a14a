"""Precomputed reference log-probs: fingerprints of weights and data, and an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


def weights_fingerprint(net: nn.Module, skip: tuple[str, ...] = ("lora_",)) -> str:
    """SHA-256 of every parameter and buffer (name, dtype, shape, bytes), leaving out names containing ``skip``
    (LoRA adapters: the reference of a LoRA policy is its base model)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        if any(s in name for s in skip):
            continue
        if hasattr(tensor, "full_tensor"):  # an FSDP2 shard: every rank gathers the whole tensor
            tensor = tensor.full_tensor()
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def items_fingerprint(items: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """SHA-256 of the ``keys`` fields of encoded items, in order (token ids and masks)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item[k] for k in keys], separators=(",", ":")).encode())
    return digest.hexdigest()


class ReferenceCache:
    """Reference log-probs ``(N, K)`` on disk, one file per (data, reference weights) fingerprint pair.

    Args:
        folder: where the ``.pt`` files live (created on first save).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def path(self, data_fp: str, model_fp: str) -> Path:
        return self.folder / f"ref-{data_fp[:20]}-{model_fp[:20]}.pt"

    def load(self, data_fp: str, model_fp: str) -> torch.Tensor | None:
        path = self.path(data_fp, model_fp)
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def save(self, data_fp: str, model_fp: str, values: torch.Tensor) -> Path:
        """Write atomically (a partial file never has the final name)."""
        path = self.path(data_fp, model_fp)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(values.detach().cpu(), tmp)
        tmp.replace(path)
        return path


@torch.no_grad()
def batched_logps(
    logps_fn: Callable[[dict[str, Any]], torch.Tensor], items: Sequence[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]], batch_size: int, device: torch.device | str,
    progress: Callable[[int, int, float], None] | None = None,
) -> torch.Tensor:
    """Apply ``logps_fn`` (a collated batch on ``device`` -> ``(rows, ...)``) over ``items`` in order.

    Args:
        progress: called after each batch with ``(items done, items in all, seconds so far)``.
    Returns:
        the concatenated float32 values on the CPU.
    """
    out = []
    start_time = time.perf_counter()
    for start in range(0, len(items), batch_size):
        batch = collate(list(items[start:start + batch_size]))
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out.append(logps_fn(batch).float().cpu())
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items), time.perf_counter() - start_time)
    return torch.cat(out) if out else torch.zeros(0)
