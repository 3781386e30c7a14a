"""Test-only callback: each rank writes what it ended with (steps, metrics, full parameters) to a file."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch


def full_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters, gathered to full tensors where sharded (FSDP2 DTensors)."""
    out = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            t = p.full_tensor() if hasattr(p, "full_tensor") else p
            out[name] = t.detach().cpu().clone()
    return out


class RankProbe(L.Callback):
    """Writes ``<folder>/rank<r>.pt``: global_step, batches seen, callback metrics, initial and final parameters."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.initial: dict[str, torch.Tensor] = {}
        self.batches = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.initial = full_parameters(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        torch.save(
            {"rank": trainer.global_rank, "world": trainer.world_size, "global_step": trainer.global_step,
             "batches": self.batches, "metrics": metrics, "initial": self.initial,
             "skipped_updates": getattr(pl_module, "skipped_updates", None),
             "final": full_parameters(pl_module), "pid": os.getpid(),
             "buffer_prompts": list(getattr(getattr(pl_module, "buffer", None), "texts", {}).get("prompts", []))},
            self.folder / f"rank{trainer.global_rank}.pt",
        )


def length_reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
    """A reward with spread for an untrained policy (the gold grader scores all its answers 0)."""
    return torch.tensor([len(c) / 8.0 for c in completions])


class NaNOnRank(L.Callback):
    """Makes the policy's logits NaN for one training batch on one rank only (the other ranks see finite losses)."""

    def __init__(self, rank: int = 1, batch: int = 1) -> None:
        self.rank, self.batch, self.handle = rank, batch, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.batch:
            target = getattr(pl_module.model, "head", pl_module.model)  # a reward model's scalar head
            self.handle = target.register_forward_hook(lambda mod, args, out: out * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
