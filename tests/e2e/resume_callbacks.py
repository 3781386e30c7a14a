"""Callbacks that the resume tests hand to `lit-rlhf fit` by class path (``tests.e2e.resume_callbacks.X``)."""

from __future__ import annotations

import copy
import hashlib
import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    """SIGKILL the whole process when a training batch is about to run at ``global_step >= step``:
    a hard crash (no exception, no ``finally``, no checkpoint on exit)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def batch_fingerprint(batch: dict) -> str:
    """A short hash of a batch's token ids (preference/SFT batches: ``input_ids``; prompt batches: ``prompt_ids``)."""
    ids = batch["input_ids"].tolist() if "input_ids" in batch else [list(p) for p in batch["prompt_ids"]]
    return hashlib.sha1(repr(ids).encode()).hexdigest()[:12]


class Recorder(L.Callback):
    """Records ``(epoch, global_step, fingerprint)`` of every training batch, and deep copies of the module
    attributes ``attrs`` as they are when training starts (after a checkpoint was restored)."""

    def __init__(self, attrs: list[str] | None = None) -> None:
        self.attrs = list(attrs or [])
        self.batches: list[tuple[int, int, str]] = []
        self.at_start: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.at_start = {name: copy.deepcopy(getattr(pl_module, name)) for name in self.attrs}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, trainer.global_step, batch_fingerprint(batch)))
