"""The reference policy of every method that trains a causal LM against one (DPO and its relatives, KTO, PPO,
GRPO): :class:`ReferencePolicy` (a frozen copy, the LoRA-disabled base, or none); and for precomputed reference
log-probs, fingerprints of weights and data and an on-disk cache."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

ReferenceKind = Literal["copy", "lora_disabled", "none"]
REFERENCE_PREFIX = "ref_model."
"""Where a module keeps the frozen copy (its ``ref_model`` attribute), in its state dict and checkpoints."""


class ReferencePolicy:
    """The reference policy π_ref of a trained causal LM.

    * ``copy`` — a frozen copy of the policy as it starts (no gradients, eval mode): :attr:`copy`, which the method
      module registers as its ``ref_model`` (so it moves, shards and is checkpointed with the module: a resumed run
      keeps the starting policy, never a copy of the trained one).
    * ``lora_disabled`` — the policy itself with its LoRA adapter disabled (no second copy in memory; nothing extra
      in checkpoints).
    * ``none`` — no reference.

    Checkpoints and exports treat it alike in every method: the copy is in the checkpoint under
    :data:`REFERENCE_PREFIX` (:meth:`fill_state` adds it to a checkpoint written without it), and exports hold the
    policy alone.

    Args:
        policy: the policy network (a PEFT model for ``lora_disabled``).
        kind: ``copy`` | ``lora_disabled`` | ``none``.
    """

    def __init__(self, policy: nn.Module, kind: ReferenceKind) -> None:
        if kind not in get_args(ReferenceKind):
            raise ValueError(f"reference must be one of {list(get_args(ReferenceKind))}, got {kind!r}")
        if kind == "lora_disabled" and not hasattr(policy, "disable_adapter"):
            raise ValueError("reference='lora_disabled' needs a LoRA policy: set model.lora")
        self.kind = kind
        self.copy = copy.deepcopy(policy).requires_grad_(False).eval() if kind == "copy" else None

    @staticmethod
    def cheapest(policy: nn.Module) -> ReferenceKind:
        """``lora_disabled`` for a LoRA policy (free), else ``copy``."""
        return "lora_disabled" if hasattr(policy, "disable_adapter") else "copy"

    def __bool__(self) -> bool:
        return self.kind != "none"

    def network(self, policy: nn.Module) -> nn.Module | None:
        """The network that computes the reference (use it inside :meth:`active`); ``None`` without one."""
        return self.copy if self.kind == "copy" else policy if self.kind == "lora_disabled" else None

    def active(self, policy: nn.Module) -> AbstractContextManager:
        """The context in which :meth:`network` is the reference (the adapter disabled, for ``lora_disabled``)."""
        return policy.disable_adapter() if self.kind == "lora_disabled" else nullcontext()

    @torch.no_grad()
    def logps(self, policy: nn.Module, logps_fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor | None:
        """``logps_fn(reference network, *args)`` without gradients; ``None`` without a reference."""
        if self.kind == "none":
            return None
        with self.active(policy):
            return logps_fn(self.network(policy), *args)

    def fill_state(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Add the copy's weights to a module state dict that lacks them (a checkpoint written before checkpoints
        kept the copy): the copy built now from the same start is the reference."""
        if self.copy is not None and not any(k.startswith(REFERENCE_PREFIX) for k in state_dict):
            state_dict.update({f"{REFERENCE_PREFIX}{k}": v for k, v in self.copy.state_dict().items()})


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
